#!/usr/bin/env bash
# How long the gateway's request threads sit runnable but not running while MiniLM runs beside
# requests on the idle-priority lane: `perf sched latency` of every thread during one open-loop
# run on a route whose class only labels (docs/routing-classes.md, "Classes that only label").
#
#   bench/lane-sched.sh BINARY [RATE=50] [SECONDS=10] [MODEL=mock-labelled]
#
# Prints the run's latency line, then the threads by their longest wait for a CPU (switchyard-wN
# serve requests, minilm-beside-N is the lane). Needs perf and root. Uses the dist-profile
# binaries bench/run.sh builds (run it once first).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
bin=${1:?usage: bench/lane-sched.sh BINARY [RATE] [SECONDS] [MODEL]}
rate=${2:-50}
secs=${3:-10}
model=${4:-mock-labelled}
# shellcheck source=bench/standalone.sh
source "$ROOT/bench/standalone.sh"
for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:9000/v1/models && break; sleep 0.1; done
start_build "$bin" bench/switchyard-classes.toml
pids+=("$gw")
"$BIN/loadgen" rate --url "$url" --model "$model" --label warmup --rate 200 --duration 2 >/dev/null 2>&1
data=$WORK/perf-lane-sched.data
perf sched record -q -o "$data" -- sleep "$secs" >/dev/null 2>&1 &
recorder=$!
# The load runs one second longer than the recording, so every recorded second is under load.
"$BIN/loadgen" rate --url "$url" --model "$model" --label lane --rate "$rate" --duration "$((secs + 1))" 2>&1 \
    | grep -o 'achieved.*' | head -1
wait "$recorder"
perf sched latency -i "$data" --sort max 2>/dev/null \
    | grep -E 'Task|switchyard-w|minilm-beside|switchyard-ledg' | cut -c1-100
