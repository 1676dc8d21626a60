#!/usr/bin/env bash
# CPU time per relayed stream frame of Switchyard, nginx or the bare tokio + hyper proxy, under
# N concurrent streams (each 40 tokens, 50 ms apart, as bench/run.sh's stream phase): utime +
# stime of the target's processes over one `loadgen streams` run, divided by the content frames
# the clients received. Below saturation (default 300 streams, ~6k frames/s) this is the
# target's own cost per frame, not queueing.
#
#   bench/cpu-per-frame.sh switchyard|nginx|bare-hyper [STREAMS=300] [SECONDS=10]
#
# Uses the dist-profile binaries bench/run.sh builds (run it once first) and its nginx config;
# SWITCHYARD_BIN=path runs another gateway build (to compare two builds on the same machine),
# SWITCHYARD_CONFIG=path another config (e.g. bench/switchyard.toml with `workers = 2` on top).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
target=${1:?usage: bench/cpu-per-frame.sh switchyard|nginx|bare-hyper [STREAMS] [SECONDS]}
streams=${2:-300}
secs=${3:-10}
# shellcheck source=bench/standalone.sh
source "$ROOT/bench/standalone.sh"
start_target "$target"
before=$(target_ticks)
out=$("$BIN/loadgen" streams --url "$url" --label "$target" --concurrency "$streams" --duration "$secs" \
    --ramp 1 --itl-ms 50 --stall-ms 500 --timeout-ms 30000 2>&1)
after=$(target_ticks)
frames=$(grep -o '"content_frames":[0-9]*' <<<"$out" | head -1 | cut -d: -f2)
ttft=$(grep -o '"ttft":{[^}]*}' <<<"$out" | grep -o '"p99_ms":[0-9.]*' | cut -d: -f2)
hz=$(getconf CLK_TCK)
awk -v d=$((after - before)) -v hz="$hz" -v f="${frames:-0}" -v s="$secs" -v t="$target" -v p="$ttft" \
    'BEGIN{if (f == 0) {print t ": no frames counted"; exit 1}
           printf "%s: %.1f us CPU per frame, %d frames in %d s (%.1f%% of one core), TTFT p99 %s ms\n",
                  t, d/hz/f*1e6, f, s, d/hz/s*100, p}'
