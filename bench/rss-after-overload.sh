#!/usr/bin/env bash
# Switchyard's RSS before, right after and 5 s after an overload burst: open-loop load far above
# what it sustains, so requests in flight reach loadgen's 4,096 cap (4,096 client connections and
# as many upstream ones), then idle, then a normal rate again.
#
#   bench/rss-after-overload.sh [OVERLOAD_RATE=18000]
#
# Uses the dist-profile binaries bench/run.sh builds (run it once first).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
rate=${1:-18000}
# shellcheck source=bench/standalone.sh
source "$ROOT/bench/standalone.sh"
rm -f "$WORK"/ledger.sqlite*
"${SWITCHYARD_BIN:-$BIN/switchyard}" serve --config bench/switchyard.toml >/dev/null 2>&1 &
sy=$!
pids+=("$sy")
url=http://127.0.0.1:4000/v1/chat/completions
for _ in $(seq 50); do curl -s -o /dev/null "$url" -d '{}' && break; sleep 0.1; done

rss() { awk -v what="$1" '/VmRSS/{printf "%-28s RSS %6.1f MB\n", what, $2/1024}' "/proc/$sy/status"; }
load() { "$BIN/loadgen" rate --url "$url" --label switchyard --rate "$1" --duration 4 2>&1 | grep -o 'achieved.*' | head -1; }
rss "started"
load 2000; rss "after 4 s at 2,000 req/s"
load "$rate"; rss "after 4 s at $rate req/s"
sleep 5; rss "5 s idle"
load 2000; rss "after 4 s at 2,000 req/s"
