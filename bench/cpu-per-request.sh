#!/usr/bin/env bash
# CPU time per request of Switchyard, nginx or a bare tokio + hyper proxy at a fixed open-loop rate:
# utime + stime of the target's processes (/proc/PID/stat) over one `loadgen rate` run, divided
# by its requests, and how busy the whole machine was meanwhile. `bare-hyper` is
# bench/upstream/src/bin/bare-hyper-proxy.rs: tokio + hyper forwarding bytes and nothing else,
# the least a gateway on Switchyard's stack can cost.
#
#   bench/cpu-per-request.sh switchyard|nginx|bare-hyper [RATE=2000] [SECONDS=20]
#
# Uses the release binaries bench/run.sh builds (run it once first) and its nginx config;
# SWITCHYARD_BIN=path runs another gateway build (to compare two builds on the same machine).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
target=${1:?usage: bench/cpu-per-request.sh switchyard|nginx|bare-hyper|bare-reqwest [RATE] [SECONDS]}
rate=${2:-2000}
secs=${3:-20}
# shellcheck source=bench/standalone.sh
source "$ROOT/bench/standalone.sh"
case $target in
    nginx)
        sed "s#@PREFIX@#$WORK/nginx#g" bench/conf/nginx.conf.in > "$WORK/nginx/nginx.conf"
        nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" -g 'daemon off;' &
        url=http://127.0.0.1:8080/v1/chat/completions ;;
    switchyard)
        rm -f "$WORK"/ledger.sqlite*
        "${SWITCHYARD_BIN:-$BIN/switchyard}" serve --config bench/switchyard.toml >/dev/null 2>&1 &
        url=http://127.0.0.1:4000/v1/chat/completions ;;
    bare-hyper)
        "$BIN/bare-hyper-proxy" --listen 127.0.0.1:4100 --upstream 127.0.0.1:9000 &
        url=http://127.0.0.1:4100/v1/chat/completions ;;
    bare-reqwest)
        "$BIN/bare-hyper-proxy" --listen 127.0.0.1:4100 --upstream 127.0.0.1:9000 --client reqwest &
        url=http://127.0.0.1:4100/v1/chat/completions ;;
    *) echo "target must be switchyard, nginx, bare-hyper or bare-reqwest" >&2; exit 2 ;;
esac
main=$!
pids+=("$main")
for _ in $(seq 50); do curl -s -o /dev/null "$url" -d '{}' && break; sleep 0.1; done

ticks() { # clock ticks of the target and its children (nginx workers)
    local t=0 p
    for p in $main $(pgrep -P "$main" || true); do
        t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    done
    echo "$t"
}
"$BIN/loadgen" rate --url "$url" --label warmup --rate 500 --duration 2 >/dev/null
machine() { # busy and total jiffies of the whole machine (load generator and upstream included)
    awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat
}
read -r busy0 total0 < <(machine)
before=$(ticks)
"$BIN/loadgen" rate --url "$url" --label "$target" --rate "$rate" --duration "$secs" 2>&1 | grep -o 'achieved.*' | head -1
after=$(ticks)
read -r busy1 total1 < <(machine)
hz=$(getconf CLK_TCK)
awk -v d=$((after - before)) -v hz="$hz" -v r="$rate" -v s="$secs" -v t="$target" \
    'BEGIN{printf "%s: %.0f us CPU per request at %d req/s (%.1f%% of one core)\n", t, d/hz/(r*s)*1e6, r, d/hz/s*100}'
echo "whole machine busy over the run: $(( (busy1 - busy0) * 100 / (total1 - total0) ))% of its $(nproc) cores (load generator and upstream included)"
