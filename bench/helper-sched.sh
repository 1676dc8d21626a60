#!/usr/bin/env bash
# How the MiniLM helper thread (`classes.semantic.split_forward`) is scheduled in the gateway:
# one build and config at one open-loop rate; `perf sched` over the run gives the helper's
# scheduling delay (wake-up to running) and the CPU it ran on against the forward's thread's,
# and /proc gives each thread group's CPU time.
#
#   bench/helper-sched.sh BINARY CONFIG RATE SECONDS
#   e.g. bench/helper-sched.sh target/dist/switchyard bench/switchyard-classes.toml 50 8
#
# Needs `perf` and root (sched tracepoints). Uses the dist-profile binaries bench/run.sh builds.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
bin=${1:?usage: bench/helper-sched.sh BINARY CONFIG RATE SECONDS}
cfg=${2:?config}
rate=${3:?rate}
secs=${4:?seconds}
# shellcheck source=bench/standalone.sh
source "$ROOT/bench/standalone.sh"
for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:9000/v1/models && break; sleep 0.1; done
start_build "$bin" "$cfg"
pids+=("$gw")
"$BIN/loadgen" rate --url "$url" --label warmup --rate "$rate" --duration 2 >/dev/null 2>&1
data=$WORK/helper-sched.data
perf sched record -o "$data" -- sleep "$secs" >/dev/null 2>&1 &
rec=$!
"$BIN/loadgen" rate --url "$url" --label run --rate "$rate" --duration "$secs" 2>/dev/null |
    python3 -c 'import json,sys; l=json.load(sys.stdin)["latency"]; print("latency p50 %.3f ms, p99 %.3f ms" % (l["p50_ms"], l["p99_ms"]))'
wait "$rec" || true
# timehist columns: time, [cpu], task[tid/pid], wait time, scheduling delay, run time (ms).
perf sched timehist -i "$data" 2>/dev/null | awk '$3 ~ /^minilm-helper/ {print $5}' | sort -n |
    awk '{a[NR]=$1} END {if (NR == 0) {print "the helper never ran (split_forward off, or no second CPU)"; exit}
        printf "helper scheduling delay over %d wake-ups: p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, max %.3f ms\n",
            NR, a[int(NR*0.5)+0], a[int(NR*0.9)+0], a[int(NR*0.99)+0], a[NR]}'
hz=$(getconf CLK_TCK)
echo "CPU seconds by thread name over the whole process life:"
for t in /proc/"$gw"/task/*; do echo "$(cat "$t/comm") $(awk '{print $14 + $15}' "$t/stat")"; done |
    awk -v hz="$hz" '{a[$1] += $2} END {for (k in a) printf "  %-18s %.2f\n", k, a[k] / hz}' | sort
curl -s http://127.0.0.1:4000/metrics | grep -E '^switchyard_minilm_(helped|taken)'
kill "$gw" 2>/dev/null || true
