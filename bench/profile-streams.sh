#!/usr/bin/env bash
# Where a target's CPU goes while it relays concurrent streams: a perf profile (`perf record
# -F 4999`, no call graphs) of the target's processes for SECONDS in the middle of one `loadgen
# streams` run (40 tokens, 50 ms apart, as bench/run.sh's stream phase), printed as the share of
# samples by binary (kernel, the target, libc) and by function.
#
#   bench/profile-streams.sh switchyard|nginx|bare-hyper [STREAMS=300] [SECONDS=7]
#
# Needs perf and root. Uses the dist-profile binaries bench/run.sh builds (run it once first);
# SWITCHYARD_BIN=path runs another gateway build.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
target=${1:?usage: bench/profile-streams.sh TARGET [STREAMS] [SECONDS]}
streams=${2:-300}
secs=${3:-7}
# shellcheck source=bench/standalone.sh
source "$ROOT/bench/standalone.sh"
start_target "$target"
procs=$(echo "$main" $(pgrep -P "$main" || true) | tr ' ' ,)
"$BIN/loadgen" streams --url "$url" --label profile --concurrency "$streams" --duration $((secs + 5)) \
    --ramp 1 --itl-ms 50 --stall-ms 500 --timeout-ms 30000 >/dev/null 2>&1 &
load=$!
sleep 3 # past the ramp
data=$WORK/perf-streams.data
perf record -q -F 4999 -p "$procs" -o "$data" -- sleep "$secs" >/dev/null 2>&1
wait "$load"
report() { perf report -i "$data" --no-children --stdio "$@" 2>/dev/null | grep -v '^#' | grep -v '^$'; }
echo "== by binary"
report --sort dso | head -n 8
echo "== by function"
report --sort dso,sym | head -n 40
