#!/usr/bin/env bash
# Reverse-proxy throughput: edgeserve --proxy (default flags) beside nginx's proxy_pass with an
# upstream keepalive pool, both in front of the same fast upstream (edgeserve serving a small
# file), at 1, 50 and 500 keep-alive clients, each cell on a freshly started proxy.
# The proxy under test is pinned to CPU 0; wrk and the upstream share CPU 1. Compare ratios.
# Columns: requests/s, the proxy's CPU per request, and the connections the upstream accepted
# during the cell (counted by tracing its accept4 calls; "-" without strace): with a pool that
# does not churn, about as many as there are clients.
# The proxies are interleaved ROUNDS times and each cell keeps its least disturbed round (the
# lowest CPU per request), as ../shared/bench/compare.sh does: this machine is noisy.
# Usage: examples/bench/proxy-compare.sh [BINARY=target/release/edgeserve] [SECONDS=5] [ROUNDS=2]
# It installs nginx-light, wrk and strace with apt-get when they are missing.
set -u
BIN=$(realpath "${1:-target/release/edgeserve}"); SECS=${2:-5}; ROUNDS=${3:-2}
need=(); for t in nginx wrk strace; do command -v $t >/dev/null || need+=($t); done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq >/dev/null 2>&1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk strace >/dev/null 2>&1
fi
W=$(mktemp -d /tmp/edgeserve-proxy.XXXX); mkdir -p $W/www/api $W/logs
printf 'Hello, World!' > $W/www/api/hello.txt
UP=18290
ulimit -n 20000 2>/dev/null
if command -v strace >/dev/null; then
  # Only accept4 stops the upstream (seccomp filter); its other calls run untraced.
  taskset -c 1 strace -f -qq --seccomp-bpf -e trace=accept4 -o $W/accepts \
    "$BIN" --listen 127.0.0.1:$UP --root $W/www --access-log off >$W/logs/upstream.log 2>&1 & UPID=$!
else
  taskset -c 1 "$BIN" --listen 127.0.0.1:$UP --root $W/www --access-log off >$W/logs/upstream.log 2>&1 & UPID=$!
fi
cat > $W/nginx.conf <<NGX
worker_processes 1; daemon off; master_process off;
error_log $W/logs/nginx-error.log warn; pid $W/logs/nginx.pid;
events { worker_connections 10000; use epoll; }
http { access_log off; keepalive_requests 10000000; keepalive_timeout 65;
  client_body_temp_path $W/logs/cbt; proxy_temp_path $W/logs/pt; fastcgi_temp_path $W/logs/ft; uwsgi_temp_path $W/logs/ut; scgi_temp_path $W/logs/st;
  upstream up { server 127.0.0.1:$UP; keepalive 64; keepalive_requests 10000000; }
  server { listen 127.0.0.1:18291 backlog=4096;
    location /api/ { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NGX
start() {
  case $1 in
    nginx) PORT=18291; taskset -c 0 nginx -c $W/nginx.conf & PID=$!;;
    edgeserve) PORT=18292; taskset -c 0 "$BIN" --listen 127.0.0.1:18292 --root $W/www --access-log off \
        --proxy /api/=127.0.0.1:$UP >$W/logs/edgeserve.log 2>&1 & PID=$!;;
  esac
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
}
rps() { taskset -c 1 wrk "$@" 2>/dev/null | awk '/Requests\/sec/{r=$2} /Socket errors|Non-2xx/{e=" (errors)"} END{printf "%s%s", r, e}'; }
# CPU time (user+system, clock ticks) the proxy process has used so far.
ticks() { awk '{print $14+$15}' /proc/$1/stat; }
# Connections the upstream has accepted so far.
accepts() { if [ -f $W/accepts ]; then grep -c '^[0-9]* *accept4(.*= [0-9]' $W/accepts; else echo -; fi; }
declare -A R C N
loads=(1 50 500)
for round in $(seq $ROUNDS); do
for s in edgeserve nginx; do
  for c in ${loads[@]}; do
    start $s
    t0=$(ticks $PID); a0=$(accepts)
    r=$(rps -t1 -c$c -d${SECS}s http://127.0.0.1:$PORT/api/hello.txt)
    t1=$(ticks $PID); a1=$(accepts)
    # CPU microseconds per request on the proxy's core: what "per core" means when CPU 1 saturates.
    us=$(awk -v t=$((t1-t0)) -v r="${r%% *}" -v s=$SECS -v hz=$(getconf CLK_TCK) 'BEGIN{if(r>0)printf "%.2f", t/hz*1e6/(r*s); else print "-"}')
    if [ -z "${C[$s,$c]:-}" ] || [ "${C[$s,$c]}" = - ] || awk -v a="$us" -v b="${C[$s,$c]}" 'BEGIN{exit !(a != "-" && a+0 < b+0)}'; then
      R[$s,$c]=$r; C[$s,$c]=$us; N[$s,$c]=$([ "$a0" = - ] && echo - || echo $((a1-a0)))
    fi
    kill $PID; wait $PID 2>/dev/null
  done
done
done
# strace's child is the upstream itself: stop it by its id, then strace ends.
for p in $(cat /proc/$UPID/task/*/children 2>/dev/null) $UPID; do kill $p 2>/dev/null; done
wait $UPID 2>/dev/null
ratio() { awk -v a="${1%% *}" -v b="${2%% *}" 'BEGIN{if(b>0&&a>0)printf "%.2fx",a/b; else print "-"}'; }
printf "%-30s %12s %12s %10s\n" workload edgeserve nginx "vs nginx"
for c in ${loads[@]}; do
  printf "%-30s %12s %12s %10s\n" "proxy small c$c (req/s)" "${R[edgeserve,$c]}" "${R[nginx,$c]}" \
    "$(ratio "${R[edgeserve,$c]}" "${R[nginx,$c]}")"
  printf "%-30s %12s %12s %10s\n" "  proxy CPU us/request" "${C[edgeserve,$c]}" "${C[nginx,$c]}" \
    "$(ratio "${C[nginx,$c]}" "${C[edgeserve,$c]}")"
  printf "%-30s %12s %12s\n" "  upstream connections opened" "${N[edgeserve,$c]}" "${N[nginx,$c]}"
done
rm -rf $W
