#!/usr/bin/env bash
# Builds every fuzz target and runs each for SECONDS (default 30), one after another.
# Exits non-zero if any target crashes, fails a property, hangs or runs out of memory.
# Usage: fuzz/run-all.sh [SECONDS]     (from anywhere; needs rustup, installs what is missing)
set -uo pipefail

secs="${1:-30}"
case "$secs" in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")" || exit 2

if ! cargo +nightly --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal || exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked || exit 2
fi

cargo +nightly fuzz build || exit 2

failed=()
for t in $(cargo +nightly fuzz list); do
    echo "=== $t: ${secs}s"
    mkdir -p "corpus/$t"
    # corpus/$t comes first: libFuzzer writes new inputs into the first directory only, so the
    # checked-in seeds/$t stay as they are.
    if ! cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -dict=http.dict -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1; then
        failed+=("$t")
    fi
done

if ((${#failed[@]})); then
    echo "FAILED: ${failed[*]} (inputs under fuzz/artifacts/<target>/)" >&2
    exit 1
fi
echo "all targets passed"
