#!/usr/bin/env bash
# Validates edgeserve-bench against wrk: the same server, URL, connections and duration, run
# alternately (wrk, edgeserve-bench, wrk, edgeserve-bench) so that drift on a noisy machine hits
# both, and prints each run's requests/s and the ratio of the means. Target: within 10% of wrk.
# The URL (4th argument) defaults to /_bench/cpu?us=20, where the server's CPU is the limit, so
# both tools measure the server; on /hello.txt a single wrk thread runs out of CPU before the
# server does, and the ratio then compares the clients instead.
# The server is pinned to CPU 0 and the client (either one, one thread) to CPU 1 when taskset
# exists; each run also shows how busy both CPUs were, which tells whose CPU was the limit.
# A ratio above 1.10 with the client CPU saturated under wrk means edgeserve-bench is the cheaper
# client, not that it over-counts (its count matches the server's access log to within the
# requests in flight at the deadline). Exits 1 when wrk is missing, when edgeserve-bench reports
# errors, or when it is more than 10% below wrk.
# Usage: examples/bench/validate-wrk.sh [SECONDS=5] [CONNECTIONS=50] [ROUNDS=2] [PATH]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-5}
conns=${2:-50}
rounds=${3:-2}
path=${4:-/_bench/cpu?us=20}

if ! command -v wrk >/dev/null; then
  echo "wrk is not installed; install it with: sudo apt-get install -y wrk" >&2
  exit 1
fi

cargo build --release
server=target/release/edgeserve
bench=target/release/edgeserve-bench

# `${on[N]} CMD...` runs CMD on CPU N when taskset exists and the CPU is there, else unpinned.
# A prefix rather than a function, so that `$!` below is the server itself (taskset execs it),
# not a subshell that a kill would leave the server running behind.
on=()
for cpu in 0 1; do
  if command -v taskset >/dev/null && [ "$cpu" -lt "$(nproc)" ]; then
    on[cpu]="taskset -c $cpu"
  else
    on[cpu]="env"
  fi
done

log=$(mktemp)
${on[0]} "$server" --listen 127.0.0.1:0 --access-log off --bench-routes examples/www >/dev/null 2>"$log" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$log" "$log.out"' EXIT

port=""
for _ in $(seq 100); do
  port=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log")
  [ -n "$port" ] && break
  sleep 0.1
done
if [ -z "$port" ]; then
  echo "the server did not start: $(tail -n 1 "$log")" >&2
  exit 1
fi
url=http://127.0.0.1:$port$path
echo "server pid $pid on CPU 0, $url; client on CPU 1, $conns connections, ${secs}s, $rounds rounds"

# `busy CMD...`: runs CMD, then sets $cpu_busy to "cpu0 N% cpu1 N%" over its run (/proc/stat).
snap() { awk '/^cpu[01] /{idle=$5+$6; t=0; for(i=2;i<=NF;i++) t+=$i; print t, idle}' /proc/stat; }
busy() {
  local before after
  before=$(snap)
  "$@"
  after=$(snap)
  cpu_busy=$(paste -d' ' <(echo "$before") <(echo "$after") |
    awk '{printf "cpu%d %.0f%% ", NR-1, 100*(1-($4-$2)/($3-$1))}')
}

wrk_all=()
bench_all=()
bench_errors=0
for round in $(seq "$rounds"); do
  busy ${on[1]} wrk -t1 -c"$conns" -d"${secs}s" "$url" >"$log.out"
  out=$(cat "$log.out")
  rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
  if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then
    echo "  wrk reported errors:"; grep -E 'Non-2xx|Socket errors' <<<"$out" | sed 's/^/    /'
  fi
  printf "  round %d  wrk             %12.1f req/s  (busy: %s)\n" "$round" "$rps" "$cpu_busy"
  wrk_all+=("$rps")

  busy ${on[1]} "$bench" run --url "$url" --connections "$conns" --duration "${secs}s" --threads 1 \
    --json >"$log.out"
  json=$(cat "$log.out")
  rps=$(sed 's/.*"requests_per_s":\([0-9.]*\).*/\1/' <<<"$json")
  errors=$(sed 's/.*"errors":{"total":\([0-9]*\).*/\1/' <<<"$json")
  p99=$(sed 's/.*"p99":\([0-9]*\).*/\1/' <<<"$json")
  printf "  round %d  edgeserve-bench %12.1f req/s  (busy: %s; errors %s, p99 %s us)\n" \
    "$round" "$rps" "$cpu_busy" "$errors" "$p99"
  bench_all+=("$rps")
  bench_errors=$((bench_errors + errors))
done

mean() { printf '%s\n' "$@" | awk '{s+=$1} END{printf "%.1f", s/NR}'; }
wrk_mean=$(mean "${wrk_all[@]}")
bench_mean=$(mean "${bench_all[@]}")
ratio=$(awk -v b="$bench_mean" -v w="$wrk_mean" 'BEGIN{printf "%.3f", (w > 0 ? b / w : 0)}')
echo "wrk mean             $wrk_mean req/s"
echo "edgeserve-bench mean $bench_mean req/s"
echo "ratio (edgeserve-bench / wrk) $ratio   target: within 10%"

status=0
if [ "$bench_errors" -ne 0 ]; then
  echo "edgeserve-bench counted $bench_errors errors against a file that exists" >&2
  status=1
fi
if awk -v r="$ratio" 'BEGIN{exit !(r < 0.9)}'; then
  echo "outside the target: more than 10% below wrk" >&2
  status=1
elif awk -v r="$ratio" 'BEGIN{exit !(r > 1.1)}'; then
  echo "more than 10% above wrk: see the busy CPUs (a saturated client CPU under wrk means wrk was the limit)"
else
  echo "within 10% of wrk"
fi
exit $status
