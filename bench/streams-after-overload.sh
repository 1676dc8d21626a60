#!/usr/bin/env bash
# Time to first token of 1,000 concurrent streams through a fresh Switchyard, then again right
# after an overload (a few seconds at 10,000 req/s: requests in flight reach the cap), and the
# gateway's RSS after each phase. Before jemalloc, glibc's malloc_trim after the overload held
# the arenas for 75-89 ms early in the second stream phase (docs/benchmarks.md).
#
#   bench/streams-after-overload.sh [OVERLOAD_SECONDS=5]
#
# SWITCHYARD_BIN=path runs another gateway build. Uses the dist-profile binaries bench/run.sh builds.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
overload=${1:-5}
# shellcheck source=bench/standalone.sh
source "$ROOT/bench/standalone.sh"
rm -f "$WORK"/ledger.sqlite*
log=$WORK/streams-after-overload.log
"${SWITCHYARD_BIN:-$BIN/switchyard}" serve --config bench/switchyard.toml >"$log" 2>&1 &
sy=$!
pids+=("$sy")
gateway=http://127.0.0.1:4000/v1/chat/completions
for _ in $(seq 50); do curl -s -o /dev/null "$gateway" -d '{}' && break; sleep 0.1; done

streams() { # streams LABEL: the stream phase of bench/run.sh; TTFT line and its time span
    local from
    from=$(date -u +%T.%3N)
    "$BIN/loadgen" streams --url "$gateway" --label "$1" --concurrency 1000 --duration 10 --ramp 2 \
        --itl-ms 50 --stall-ms 500 --timeout-ms 30000 2>&1 | grep -o "\[$1\] streams.*" | head -1
    echo "  ($from to $(date -u +%T.%3N) UTC; Switchyard RSS $(awk '/VmRSS/{printf "%.1f MB", $2/1024}' "/proc/$sy/status") at the end)"
}
streams fresh
"$BIN/loadgen" rate --url "$gateway" --label overload --rate 10000 --duration "$overload" 2>&1 \
    | grep -o '\[overload\] 10000 req/s.*' | head -1
streams after-overload
