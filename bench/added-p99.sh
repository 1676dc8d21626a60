#!/usr/bin/env bash
# Added latency over direct at one fixed rate, in alternating windows: direct, then each target,
# round after round, so each target's window sits next to one of the floor's and both see the same
# minute of the VM. A round counts when direct's own p99 in it was within the budget; the figure is
# the median over those rounds (`loadgen paired`, bench/loadgen/src/paired.rs). bench/run.sh runs
# the same windows after its targets; this runs them alone.
#
#   bench/added-p99.sh [ROUNDS=8] [RATE=2000] [SECONDS=5] [TARGETS=switchyard,nginx]
#
# Targets: switchyard (SWITCHYARD_BIN=path runs another build; its SQLite ledger writes as in
# production), nginx, bare-hyper, bare-raw, bare-rawserver. Writes the windows to
# bench/out/added-p99.jsonl and the summary to bench/out/added-p99.json. Uses the dist-profile
# binaries bench/run.sh builds.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
rounds=${1:-8}
rate=${2:-2000}
secs=${3:-5}
targets=${4:-switchyard,nginx}
# shellcheck source=bench/standalone.sh
source "$ROOT/bench/standalone.sh"
mkdir -p bench/out
windows=bench/out/added-p99.jsonl
: > "$windows"

declare -A urls
for t in ${targets//,/ }; do
    start_target "$t"
    urls[$t]=$url
    "$BIN/loadgen" rate --url "$url" --label warmup --rate 500 --duration 2 >/dev/null 2>&1
done
urls[direct]=http://127.0.0.1:9000/v1/chat/completions

echo "started $(date -u +%FT%TZ): $rounds rounds of $secs s windows at $rate req/s"
for round in $(seq "$rounds"); do
    for t in direct ${targets//,/ }; do
        "$BIN/loadgen" rate --url "${urls[$t]}" --label "paired:$t" --rate "$rate" --duration "$secs" \
            --out "$windows" 2>&1 | grep -o 'achieved.*' | sed "s/^/  round $round $t: /"
        sleep 1
    done
done
if [[ ,$targets, == *,switchyard,* ]]; then
    echo "switchyard's ledger: $(sqlite3 "$WORK/ledger.sqlite" 'select count(*) from requests') rows"
fi
"$BIN/loadgen" paired --input "$windows" --out bench/out/added-p99.json
