#!/usr/bin/env bash
# System calls per relayed stream frame of a target under N concurrent streams (each 40 tokens,
# 50 ms apart, as bench/cpu-per-frame.sh runs them): perf's syscall tracepoints counted over the
# target's processes while the streams are steady, divided by the content frames the clients
# received in that time (each stream is 40 frames in 2.1 s: streams × seconds × 40 / 2.1); and the
# context switches and CPU migrations of its threads per frame. Needs root (perf tracepoints).
#
#   bench/syscalls-per-frame.sh [TARGET=switchyard] [STREAMS=300] [SECONDS=6]
#
# TARGET as bench/cpu-per-frame.sh takes it; SWITCHYARD_BIN=path measures another build,
# SWITCHYARD_CONFIG=path another config.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
target=${1:-switchyard}
streams=${2:-300}
secs=${3:-6}
# shellcheck source=bench/standalone.sh
source "$ROOT/bench/standalone.sh"
start_target "$target"
# The count starts two seconds in (after the one-second ramp) and ends a second before the streams
# do, so it sees only steady streams.
"$BIN/loadgen" streams --url "$url" --label "$target" --concurrency "$streams" --duration $((secs + 3)) \
    --ramp 1 --itl-ms 50 --stall-ms 500 --timeout-ms 30000 >/dev/null 2>&1 &
load=$!
sleep 2
count_syscalls "$secs" "$(awk -v s="$streams" -v t="$secs" 'BEGIN{print s * t * 40 / 2.1}')" frame 1 \
    epoll_wait epoll_ctl recvfrom read writev write sendto futex accept4 connect close clock_nanosleep
wait "$load"
