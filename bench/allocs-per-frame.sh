#!/usr/bin/env bash
# Heap allocations per relayed stream frame of a Switchyard build under N concurrent streams (each
# 40 tokens, 50 ms apart, as bench/cpu-per-frame.sh runs them): a uprobe on jemalloc's `malloc`
# counted with `perf stat --per-thread` while the streams are steady, divided by the content
# frames the clients received in that time (streams × seconds × 40 / 2.1). Each stream's own
# set-up (its request: about 44 allocations, bench/allocs-per-request.sh) is spread over its 40
# frames, so about 1.1 per frame is the request, not the relay. Needs root (perf probe).
#
#   bench/allocs-per-frame.sh [STREAMS=300] [SECONDS=4]
#
# SWITCHYARD_BIN=path measures another build, SWITCHYARD_CONFIG=path another config.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
streams=${1:-300}
secs=${2:-4}
# shellcheck source=bench/standalone.sh
source "$ROOT/bench/standalone.sh"
probe_malloc
start_target switchyard
# The count starts two seconds in (after the one-second ramp) and ends a second before the streams do.
"$BIN/loadgen" streams --url "$url" --label switchyard --concurrency "$streams" --duration $((secs + 3)) \
    --ramp 1 --itl-ms 50 --stall-ms 500 --timeout-ms 30000 >/dev/null 2>&1 &
load=$!
sleep 2
count_allocs "$secs" "$(awk -v s="$streams" -v t="$secs" 'BEGIN{print s * t * 40 / 2.1}')" frame
wait "$load"
