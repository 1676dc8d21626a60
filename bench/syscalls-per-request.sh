#!/usr/bin/env bash
# System calls per request of a target at a fixed open-loop rate, by call: perf's syscall
# tracepoints counted over the target's processes during one `loadgen rate` run, divided by its
# requests. Counts, unlike CPU time, do not move with the VM's noise. Needs root (perf tracepoints).
#
#   bench/syscalls-per-request.sh [TARGET=switchyard] [RATE=1000] [SECONDS=4]
#
# TARGET as bench/cpu-per-request.sh takes it (switchyard, nginx, bare-hyper, ...);
# SWITCHYARD_BIN=path measures another Switchyard build.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
target=${1:-switchyard}
rate=${2:-1000}
secs=${3:-4}
# shellcheck source=bench/standalone.sh
source "$ROOT/bench/standalone.sh"
start_target "$target"
"$BIN/loadgen" rate --url "$url" --label warmup --rate 500 --duration 2 >/dev/null 2>&1
# The load runs a second longer on each side than the count, so the count sees only steady load.
"$BIN/loadgen" rate --url "$url" --label "$target" --rate "$rate" --duration $((secs + 2)) 2>&1 \
    | grep -o 'achieved.*' | head -1 &
load=$!
sleep 1
count_syscalls "$secs" $((rate * secs)) request 0 \
    epoll_wait recvfrom read writev write sendto futex accept4 pwrite64
wait "$load"
