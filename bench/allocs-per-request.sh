#!/usr/bin/env bash
# Heap allocations per request of a Switchyard build, by thread, at a fixed open-loop rate: a
# uprobe on jemalloc's `malloc` counted with `perf stat --per-thread` over one `loadgen rate`
# run, divided by its requests. Counts, unlike CPU time, do not move with the VM's noise, so this
# tells two builds apart where bench/builds-ab.sh cannot. Needs root (perf probe).
#
#   bench/allocs-per-request.sh [RATE=1000] [SECONDS=4]
#
# SWITCHYARD_BIN=path measures another build (default: the dist-profile binary bench/run.sh builds).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
rate=${1:-1000}
secs=${2:-4}
# shellcheck source=bench/standalone.sh
source "$ROOT/bench/standalone.sh"
probe_malloc
start_target switchyard
"$BIN/loadgen" rate --url "$url" --label warmup --rate 500 --duration 2 >/dev/null 2>&1
# The load runs a second longer on each side than the count, so the count sees only steady load.
"$BIN/loadgen" rate --url "$url" --label switchyard --rate "$rate" --duration $((secs + 2)) 2>&1 \
    | grep -o 'achieved.*' | head -1 &
load=$!
sleep 1
count_allocs "$secs" $((rate * secs)) request
wait "$load"
