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
bin=$(realpath "${SWITCHYARD_BIN:-$BIN/switchyard}")
event=symalloc$$
perf probe -q -x "$bin" -a "$event=_rjem_malloc"
group=$(perf probe -l 2>/dev/null | awk -v e=":$event" 'index($1, e) {split($1, a, ":"); print a[1]; exit}')
trap 'perf probe -q -d "$group:$event" 2>/dev/null || true; cleanup' EXIT
start_target switchyard
"$BIN/loadgen" rate --url "$url" --label warmup --rate 500 --duration 2 >/dev/null 2>&1
# The load runs a second longer on each side than the count, so the count sees only steady load.
"$BIN/loadgen" rate --url "$url" --label switchyard --rate "$rate" --duration $((secs + 2)) 2>&1 \
    | grep -o 'achieved.*' | head -1 &
load=$!
sleep 1
perf stat -x, -e "$group:$event" --per-thread -p "$main" -- sleep "$secs" 2>&1 \
    | awk -F, -v n=$((rate * secs)) '$1 ~ /^switchyard-/ {sub(/-[0-9]+$/, "", $1); t[$1] += $2; all += $2}
        END {printf "allocations per request: %.1f (", all / n;
             for (k in t) printf " %s %.1f", k, t[k] / n; print " )"}'
wait "$load"
