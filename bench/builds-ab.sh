#!/usr/bin/env bash
# Two or more Switchyard builds (or configs) at one fixed open-loop rate, alternating in rounds
# so they share the VM's good and bad minutes: latency p50 / p90 / p99 / p99.9 / max, CPU per
# request of the whole gateway and of its ledger thread. For changes whose effect is smaller
# than the noise between separate runs.
#
#   bench/builds-ab.sh ROUNDS RATE SECONDS NAME=BINARY[:CONFIG[:MODEL]] ...
#   e.g. bench/builds-ab.sh 6 2000 10 before=/tmp/sy-before after=target/dist/switchyard
#
# CONFIG defaults to bench/switchyard.toml, MODEL (the route the load asks for) to mock-model.
# NAME=direct measures the mock upstream itself.
# Uses the dist-profile binaries bench/run.sh builds (run it once first).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
rounds=${1:?usage: bench/builds-ab.sh ROUNDS RATE SECONDS NAME=BINARY[:CONFIG[:MODEL]] ...}
rate=${2:?rate}
secs=${3:?seconds}
shift 3
[ $# -ge 1 ] || { echo "name at least one NAME=BINARY[:CONFIG[:MODEL]]" >&2; exit 2; }
# shellcheck source=bench/standalone.sh
source "$ROOT/bench/standalone.sh"
for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:9000/v1/models && break; sleep 0.1; done

ticks() { awk '{print $14 + $15}' "$1"; } # utime + stime, clock ticks
ledger_stat() { # the ledger thread's stat file
    local t
    for t in /proc/"$1"/task/*; do
        if grep -q '^switchyard-ledg' "$t/comm" 2>/dev/null; then echo "$t/stat"; return; fi
    done
}
hz=$(getconf CLK_TCK)
printf '%-5s %-12s %8s %8s %8s %8s %8s %8s %6s %12s %12s\n' round name ok p50_ms p90_ms p99_ms p999_ms max_ms errors cpu_us/req ledger_us/req
for round in $(seq "$rounds"); do
    for spec in "$@"; do
        name=${spec%%=*}
        bin_cfg=${spec#*=}
        bin=${bin_cfg%%:*}
        cfg=bench/switchyard.toml
        model=mock-model
        [[ $bin_cfg == *:* ]] && cfg=${bin_cfg#*:}
        [[ $cfg == *:* ]] && model=${cfg#*:} && cfg=${cfg%%:*}
        gw=
        if [ "$name" = direct ]; then
            url=http://127.0.0.1:9000/v1/chat/completions
        else
            start_build "$bin" "$cfg"
        fi
        "$BIN/loadgen" rate --url "$url" --label warmup --rate 500 --duration 2 >/dev/null 2>&1
        cpu0=0 cpu1=0 l0=0 l1=0 lstat=
        if [ -n "$gw" ]; then
            lstat=$(ledger_stat "$gw")
            cpu0=$(ticks "/proc/$gw/stat")
            [ -n "$lstat" ] && l0=$(ticks "$lstat")
        fi
        result=$("$BIN/loadgen" rate --url "$url" --model "$model" --label "$name" --rate "$rate" --duration "$secs" 2>/dev/null)
        if [ -n "$gw" ]; then
            cpu1=$(ticks "/proc/$gw/stat")
            [ -n "$lstat" ] && l1=$(ticks "$lstat")
            kill "$gw"
            wait "$gw" 2>/dev/null || true
        fi
        python3 - "$round" "$name" "$result" $((cpu1 - cpu0)) $((l1 - l0)) "$hz" "$rate" "$secs" <<'EOF'
import json, sys
rnd, name, result, cpu, led, hz, rate, secs = sys.argv[1:]
d = json.loads(result)
l = d["latency"]
per = 1e6 / int(hz) / (float(rate) * float(secs))
print("%-5s %-12s %8d %8.3f %8.3f %8.3f %8.3f %8.1f %6d %12.0f %12.0f" % (
    rnd, name, d["ok"], l["p50_ms"], l["p90_ms"], l["p99_ms"], l["p999_ms"], l["max_ms"],
    d["errors"], int(cpu) * per, int(led) * per))
EOF
    done
done
