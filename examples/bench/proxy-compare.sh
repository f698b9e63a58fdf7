#!/usr/bin/env bash
# Reverse-proxy throughput: edgeserve --proxy beside nginx's proxy_pass with an upstream keepalive
# pool, both in front of the same fast upstream (edgeserve serving a small file), in one run.
# The proxy under test is pinned to CPU 0; wrk and the upstream share CPU 1. Compare ratios.
# Usage: examples/bench/proxy-compare.sh [BINARY=target/release/edgeserve] [SECONDS=5]
# It installs nginx-light and wrk with apt-get when they are missing.
set -u
BIN=$(realpath "${1:-target/release/edgeserve}"); SECS=${2:-5}
need=(); for t in nginx wrk; do command -v $t >/dev/null || need+=($t); done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq >/dev/null 2>&1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk >/dev/null 2>&1
fi
W=$(mktemp -d /tmp/edgeserve-proxy.XXXX); mkdir -p $W/www/api $W/logs
printf 'Hello, World!' > $W/www/api/hello.txt
UP=18290
taskset -c 1 "$BIN" --listen 127.0.0.1:$UP --root $W/www --access-log off >$W/logs/upstream.log 2>&1 & UPID=$!
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
        --proxy /api/=127.0.0.1:$UP --proxy-idle 64 >$W/logs/edgeserve.log 2>&1 & PID=$!;;
  esac
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
}
rps() { taskset -c 1 wrk "$@" 2>/dev/null | awk '/Requests\/sec/{r=$2} /Socket errors|Non-2xx/{e=" (errors)"} END{printf "%s%s", r, e}'; }
# CPU time (user+system, clock ticks) the proxy process has used so far.
ticks() { awk '{print $14+$15}' /proc/$1/stat; }
declare -A R C
for s in edgeserve nginx; do
  start $s
  t0=$(ticks $PID)
  R[$s]=$(rps -t1 -c50 -d${SECS}s http://127.0.0.1:$PORT/api/hello.txt)
  t1=$(ticks $PID)
  # CPU microseconds per request on the proxy's core: what "per core" means when CPU 1 saturates.
  C[$s]=$(awk -v t=$((t1-t0)) -v r="${R[$s]%% *}" -v s=$SECS -v hz=$(getconf CLK_TCK) 'BEGIN{if(r>0)printf "%.2f", t/hz*1e6/(r*s); else print "-"}')
  kill $PID; wait $PID 2>/dev/null
done
kill $UPID; wait $UPID 2>/dev/null
printf "%-28s %12s %12s %10s\n" workload edgeserve nginx "vs nginx"
printf "%-28s %12s %12s %10s\n" "proxy small c50 (req/s)" "${R[edgeserve]}" "${R[nginx]}" \
  "$(awk -v a="${R[edgeserve]%% *}" -v b="${R[nginx]%% *}" 'BEGIN{if(b>0&&a>0)printf "%.2fx",a/b; else print "-"}')"
printf "%-28s %12s %12s %10s\n" "proxy CPU us/request" "${C[edgeserve]}" "${C[nginx]}" \
  "$(awk -v a="${C[edgeserve]}" -v b="${C[nginx]}" 'BEGIN{if(b>0&&a>0)printf "%.2fx",b/a; else print "-"}')"
rm -rf $W
