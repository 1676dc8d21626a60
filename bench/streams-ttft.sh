#!/usr/bin/env bash
# Time to first token under 1,000 concurrent streams, direct and through one Switchyard build,
# as bench/run.sh's stream phase measures it (same loadgen arguments), without the rest of the
# run: to compare two builds in the same minutes.
#
#   bench/streams-ttft.sh [ROUNDS=2]
#
# Each round measures direct, then Switchyard. SWITCHYARD_BIN=path runs another gateway build.
# Uses the dist-profile binaries bench/run.sh builds (run it once first).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
rounds=${1:-2}
# shellcheck source=bench/standalone.sh
source "$ROOT/bench/standalone.sh"
rm -f "$WORK"/ledger.sqlite*
"${SWITCHYARD_BIN:-$BIN/switchyard}" serve --config bench/switchyard.toml >/dev/null 2>&1 &
pids+=($!)
gateway=http://127.0.0.1:4000/v1/chat/completions
direct=http://127.0.0.1:9000/v1/chat/completions
for _ in $(seq 50); do curl -s -o /dev/null "$gateway" -d '{}' && break; sleep 0.1; done

ttft() { # ttft LABEL URL: TTFT p50 / p99 / max (ms), p99 of streams started after the ramp, stalls, failed
    "$BIN/loadgen" streams --url "$2" --label "$1" --concurrency 1000 --duration 10 --ramp 2 \
        --itl-ms 50 --stall-ms 500 --timeout-ms 30000 2>&1 \
        | python3 -c '
import json, sys
for line in sys.stdin:
    line = line[line.find("{"):]
    try:
        r = json.loads(line)
    except ValueError:
        continue
    if r.get("kind") == "streams":
        t = r["ttft"]
        print("%-10s TTFT p50 %.2f  p99 %.2f  max %.1f ms  (p99 after the ramp %.2f)  stalls %s  failed %s" % (
            sys.argv[1], t["p50_ms"], t["p99_ms"], t["max_ms"], r["ttft_steady"]["p99_ms"],
            r["stalls"], r["streams_err"]))
' "$1"
}
for _ in $(seq "$rounds"); do
    ttft direct "$direct"
    ttft switchyard "$gateway"
done
