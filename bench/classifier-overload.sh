#!/usr/bin/env bash
# The semantic classifier pushed past its capacity: the gateway with MiniLM on every request
# (bench/switchyard-classes.toml: cache off, every request embeds its prompt) at one open-loop
# rate, configured as shipped (`waits`: past `max_concurrent` forwards requests queue) and with
# `classes.semantic.max_wait_ms` set (`bounded`: a request that waited that long skips MiniLM
# and takes the busy class), alternating in rounds: latency, and the share of requests that
# took the busy class (`switchyard_minilm_busy_total` from /metrics).
#
#   bench/classifier-overload.sh ROUNDS RATE SECONDS [MAX_WAIT_MS=5]
#   e.g. bench/classifier-overload.sh 3 600 10
#
# CLASSES_CONFIG=path starts from another config than bench/switchyard-classes.toml (it must
# have the line `cache_entries = 0` under [classes.semantic]).
#
# Uses the dist-profile binaries bench/run.sh builds (run it once first).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
rounds=${1:?usage: bench/classifier-overload.sh ROUNDS RATE SECONDS [MAX_WAIT_MS]}
rate=${2:?rate}
secs=${3:?seconds}
max_wait=${4:-5}
# shellcheck source=bench/standalone.sh
source "$ROOT/bench/standalone.sh"
bounded_cfg=$WORK/switchyard-classes-bounded.toml
base_cfg=${CLASSES_CONFIG:-bench/switchyard-classes.toml}
sed "s/^cache_entries = 0\$/cache_entries = 0\nmax_wait_ms = $max_wait/" "$base_cfg" > "$bounded_cfg"
grep -q "^max_wait_ms = $max_wait\$" "$bounded_cfg" || { echo "could not set max_wait_ms in $bounded_cfg" >&2; exit 1; }
for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:9000/v1/models && break; sleep 0.1; done

printf '%-5s %-8s %8s %8s %8s %8s %8s %8s %7s %10s\n' round config ok p50_ms p90_ms p99_ms p999_ms max_ms errors busy_share
for round in $(seq "$rounds"); do
    for name in waits bounded; do
        cfg=$base_cfg
        [ "$name" = bounded ] && cfg=$bounded_cfg
        start_build "$BIN/switchyard" "$cfg"
        # A warm-up below capacity (MiniLM's weights and the connection pool), not counted.
        "$BIN/loadgen" rate --url "$url" --label warmup --rate 50 --duration 2 >/dev/null 2>&1
        busy0=$(curl -s http://127.0.0.1:4000/metrics | awk '/^switchyard_minilm_busy_total /{print $2}')
        result=$("$BIN/loadgen" rate --url "$url" --label "$name" --rate "$rate" --duration "$secs" 2>/dev/null)
        busy1=$(curl -s http://127.0.0.1:4000/metrics | awk '/^switchyard_minilm_busy_total /{print $2}')
        kill "$gw"
        wait "$gw" 2>/dev/null || true
        python3 - "$round" "$name" "$result" "${busy0:-nan}" "${busy1:-nan}" <<'PY'
import json, sys
rnd, name, result, b0, b1 = sys.argv[1:]
d = json.loads(result)
l = d["latency"]
busy = (float(b1) - float(b0)) / d["scheduled"] if d["scheduled"] else float("nan")
print("%-5s %-8s %8d %8.2f %8.2f %8.2f %8.2f %8.1f %7d %9.1f%%" % (
    rnd, name, d["ok"], l["p50_ms"], l["p90_ms"], l["p99_ms"], l["p999_ms"], l["max_ms"],
    d["errors"], busy * 100))
PY
    done
done
