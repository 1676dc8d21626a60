#!/usr/bin/env bash
# The label-only route under load: bench/switchyard-classes.toml's `mock-labelled` route, whose
# class only labels the record, so MiniLM runs beside the upstream call on the idle-priority
# lane. One open-loop run at RATE; prints the latency, how many requests went without their
# forward (the busy class, when the lane's queue was full) and the classes the ledger recorded.
#
#   bench/labelled-load.sh BINARY RATE [SECONDS=10]
#   e.g. bench/labelled-load.sh target/dist/switchyard 200
#
# Uses the dist-profile binaries bench/run.sh builds (run it once first).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
bin=${1:?usage: bench/labelled-load.sh BINARY RATE [SECONDS]}
rate=${2:?rate}
secs=${3:-10}
# shellcheck source=bench/standalone.sh
source "$ROOT/bench/standalone.sh"
for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:9000/v1/models && break; sleep 0.1; done
start_build "$bin" bench/switchyard-classes.toml
pids+=("$gw")
"$BIN/loadgen" rate --url "$url" --model mock-labelled --label warmup --rate 50 --duration 2 >/dev/null 2>&1
"$BIN/loadgen" rate --url "$url" --model mock-labelled --label labelled --rate "$rate" --duration "$secs" 2>/dev/null |
    python3 -c 'import json,sys; d=json.load(sys.stdin); l=d["latency"]; print("%d ok, %d errors, p50 %.3f ms, p99 %.3f ms" % (d["ok"], d["errors"], l["p50_ms"], l["p99_ms"]))'
curl -s http://127.0.0.1:4000/metrics | grep -E '^switchyard_minilm_busy_total'
# A drained ledger: every record written, each with the class it waited for.
kill "$gw"
wait "$gw" 2>/dev/null || true
python3 - "$WORK/ledger.sqlite" <<'PY'
import sqlite3, sys
rows = sqlite3.connect(sys.argv[1]).execute(
    "SELECT coalesce(class, '(none)'), count(*) FROM requests WHERE route = 'mock-labelled' GROUP BY 1").fetchall()
print("ledger, mock-labelled records by class:", ", ".join("%s %d" % r for r in rows))
PY
