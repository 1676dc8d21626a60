#!/usr/bin/env bash
# Added time to first token under concurrent streams for two or more Switchyard builds (or
# configs) and nginx, alternating in rounds with a direct window first in each round, so every
# build shares the VM's good and bad minutes with the floor it is compared to. Each window is a
# fresh process: `loadgen streams` as bench/run.sh's alternating stream windows run it; the
# summary is `loadgen paired --streams` (each round's TTFT p99 minus that round's direct one).
#
#   bench/streams-ab.sh ROUNDS NAME=BINARY[:CONFIG] ... [nginx=nginx]
#   e.g. bench/streams-ab.sh 5 four=target/dist/switchyard two=target/dist/switchyard:/tmp/two.toml nginx=nginx
#
# STREAMS (default 1000) and SECS (default 6) set each window. CONFIG defaults to
# bench/switchyard.toml. Uses the dist-profile binaries bench/run.sh builds (run it once first).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
rounds=${1:?usage: bench/streams-ab.sh ROUNDS NAME=BINARY[:CONFIG] ... [nginx=nginx]}
shift
[ $# -ge 1 ] || { echo "name at least one NAME=BINARY[:CONFIG]" >&2; exit 2; }
streams=${STREAMS:-1000}
secs=${SECS:-6}
# shellcheck source=bench/standalone.sh
source "$ROOT/bench/standalone.sh"
for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:9000/v1/models && break; sleep 0.1; done
out=$WORK/streams-ab.jsonl
: > "$out"

window() { # window NAME URL: one stream window, labelled for `loadgen paired --streams`
    "$BIN/loadgen" streams --url "$2" --label "paired-streams:$1" --concurrency "$streams" \
        --duration "$secs" --ramp 2 --itl-ms 50 --stall-ms 500 --timeout-ms 30000 --out "$out" >/dev/null 2>&1
    sleep 2
}
for round in $(seq "$rounds"); do
    echo "round $round"
    window direct http://127.0.0.1:9000/v1/chat/completions
    for spec in "$@"; do
        name=${spec%%=*}
        bin_cfg=${spec#*=}
        if [ "$bin_cfg" = nginx ]; then
            start_target nginx
            pid=$main
        else
            bin=${bin_cfg%%:*}
            cfg=bench/switchyard.toml
            [[ $bin_cfg == *:* ]] && cfg=${bin_cfg#*:}
            start_build "$bin" "$cfg"
            pid=$gw
        fi
        "$BIN/loadgen" rate --url "$url" --label warmup --rate 200 --duration 1 >/dev/null 2>&1
        window "$name" "$url"
        kill "$pid"
        wait "$pid" 2>/dev/null || true
    done
done
"$BIN/loadgen" paired --streams --input "$out"
