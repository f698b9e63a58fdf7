#!/usr/bin/env bash
# Large files, and who pays for them: edgeserve beside nginx (sendfile on, as in
# ../shared/bench/compare.sh) serving 100 KiB to 50 clients and 10 MiB to 8, the server pinned to
# CPU 0 and wrk to CPU 1, interleaved ROUNDS times (each cell keeps its lowest server CPU per
# request). Beside the server's CPU per request it prints the client's: on loopback the kernel
# work of moving the bytes (the receiving side's TCP processing included) lands on whichever
# process's call transmits them, the server's sendfile or, when data waits in the send queue,
# the client's acknowledgements. So the server's CPU alone does not say which server costs the
# machine less; the sum, and the requests served while wrk saturates its core, do.
# Usage: examples/bench/large-files.sh [BINARY=target/release/edgeserve] [SECONDS=5] [ROUNDS=2]
set -u
BIN=$(realpath "${1:-target/release/edgeserve}"); SECS=${2:-5}; ROUNDS=${3:-2}
need=(); for t in nginx wrk; do command -v $t >/dev/null || need+=($t); done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq >/dev/null 2>&1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk >/dev/null 2>&1
fi
W=$(mktemp -d /tmp/edgeserve-large.XXXX); mkdir -p $W/www $W/logs
head -c 102400 /dev/urandom > $W/www/100k.bin
head -c 10485760 /dev/urandom > $W/www/10m.bin
cat > $W/nginx.conf <<NGX
worker_processes 1; daemon off; master_process off;
error_log $W/logs/nginx-error.log warn; pid $W/logs/nginx.pid;
events { worker_connections 10000; use epoll; }
http { access_log off; sendfile on; tcp_nopush off; tcp_nodelay on;
  open_file_cache max=1000 inactive=60s; open_file_cache_valid 60s;
  keepalive_requests 10000000; keepalive_timeout 65;
  client_body_temp_path $W/logs/cbt; proxy_temp_path $W/logs/pt; fastcgi_temp_path $W/logs/ft; uwsgi_temp_path $W/logs/ut; scgi_temp_path $W/logs/st;
  types { application/octet-stream bin; }
  server { listen 127.0.0.1:18480 backlog=4096; root $W/www; } }
NGX
start() {
  case $1 in
    nginx) PORT=18480; taskset -c 0 nginx -c $W/nginx.conf & PID=$!;;
    edgeserve) PORT=18482; taskset -c 0 "$BIN" --listen 127.0.0.1:18482 --root $W/www >$W/logs/edgeserve.log 2>&1 & PID=$!;;
  esac
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
}
HZ=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
measure() { # wrk args -> "req/s server_us client_us"
  local c0=$(cpu $PID) out t
  TIMEFORMAT='%U %S'
  t=$( { time taskset -c 1 wrk "$@" >$W/wrk.out 2>/dev/null; } 2>&1 )
  local c1=$(cpu $PID)
  awk -v c=$((c1-c0)) -v hz=$HZ -v t="$t" '
    /requests in/{n=$1} /Requests\/sec/{r=$2}
    END{ split(t, u, " "); if (n>0) printf "%.0f %.1f %.1f", r, (c/hz)*1e6/n, (u[1]+u[2])*1e6/n; else print "0 - -" }' $W/wrk.out
}
loads=("100KiB c50|-t1 -c50 -d${SECS}s URL/100k.bin" "10MiB c8|-t1 -c8 -d${SECS}s URL/10m.bin")
declare -A RPS SRV CLI
for r in $(seq $ROUNDS); do
  for s in edgeserve nginx; do
    start $s
    for l in "${loads[@]}"; do name=${l%%|*}; args=${l#*|}
      read -r rps srv cli <<<"$(measure ${args//URL/http://127.0.0.1:$PORT})"
      if [ -z "${SRV[$s,$name]:-}" ] || awk -v a=$srv -v b=${SRV[$s,$name]} 'BEGIN{exit !(a<b)}'; then
        RPS[$s,$name]=$rps; SRV[$s,$name]=$srv; CLI[$s,$name]=$cli; fi
    done
    kill $PID; wait $PID 2>/dev/null
  done
done
printf "%-12s %-10s %10s %14s %14s %14s\n" workload server "req/s" "server us/req" "client us/req" "sum us/req"
for l in "${loads[@]}"; do name=${l%%|*}
  for s in edgeserve nginx; do
    printf "%-12s %-10s %10s %14s %14s %14s\n" "$name" $s "${RPS[$s,$name]}" "${SRV[$s,$name]}" "${CLI[$s,$name]}" \
      "$(awk -v a=${SRV[$s,$name]} -v b=${CLI[$s,$name]} 'BEGIN{printf "%.1f", a+b}')"
  done
done
rm -rf $W
