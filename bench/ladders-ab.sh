#!/usr/bin/env bash
# Alternating step ladders (`loadgen step` as bench/run.sh runs it) of Switchyard builds or
# configs, or of nginx with a given worker count, so they share the VM's good and bad minutes:
# the highest sustained rate of each, round by round. For changes to throughput that one full
# run cannot tell from the noise.
#
#   bench/ladders-ab.sh ROUNDS NAME=BINARY[:CONFIG] | NAME=nginx[:WORKERS] | NAME=bare-TARGET ...
#   e.g. bench/ladders-ab.sh 3 two=target/dist/switchyard:/tmp/two-workers.toml \
#            four=target/dist/switchyard:/tmp/four-workers.toml
#        bench/ladders-ab.sh 3 auto=nginx four=nginx:4
#
#        bench/ladders-ab.sh 3 raw=bare-raw rawserver=bare-rawserver nginx=nginx
#
# CONFIG defaults to bench/switchyard.toml; WORKERS (nginx's worker_processes) to auto;
# bare-TARGET is one of bench/standalone.sh's bare proxies (bare-hyper, bare-raw, ...).
# Uses the dist-profile binaries bench/run.sh builds (run it once first). STEP_ARGS overrides the
# ladder's options (default: --step-seconds 4 --refine 3, as a full bench/run.sh).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
rounds=${1:?usage: bench/ladders-ab.sh ROUNDS NAME=BINARY[:CONFIG]|NAME=nginx[:WORKERS] ...}
shift
[ $# -ge 1 ] || { echo "name at least one NAME=BINARY[:CONFIG] or NAME=nginx[:WORKERS]" >&2; exit 2; }
read -r -a step_args <<< "${STEP_ARGS:---step-seconds 4 --refine 3}"
# shellcheck source=bench/standalone.sh
source "$ROOT/bench/standalone.sh"
out=$WORK/ladders-ab.jsonl
: > "$out"
printf '%-5s %-12s %10s\n' round name max_rps
for round in $(seq "$rounds"); do
    for spec in "$@"; do
        name=${spec%%=*}
        what=${spec#*=}
        target=${what%%:*}
        arg=
        [[ $what == *:* ]] && arg=${what#*:}
        if [ "$target" = nginx ]; then
            sed -e "s#@PREFIX@#$WORK/nginx#g" -e "s#worker_processes auto;#worker_processes ${arg:-auto};#" \
                bench/conf/nginx.conf.in > "$WORK/nginx/nginx.conf"
            nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" -g 'daemon off;' &
            pid=$!
            url=http://127.0.0.1:8080/v1/chat/completions
        elif [[ $target == bare-* ]]; then
            start_target "$target"
            pid=$main
        else
            start_build "$target" "${arg:-bench/switchyard.toml}"
            pid=$gw
        fi
        for _ in $(seq 50); do curl -s -o /dev/null "$url" -d '{}' && break; sleep 0.1; done
        "$BIN/loadgen" rate --url "$url" --label warmup --rate 200 --duration 2 >/dev/null 2>&1
        "$BIN/loadgen" step --url "$url" --label "$name" "${step_args[@]}" --out "$out" >/dev/null 2>&1
        tail -n 1 "$out" | python3 -c 'import json, sys; d = json.load(sys.stdin); print("%-5s %-12s %10.0f" % (sys.argv[1], sys.argv[2], d["max_sustained_rps"]))' "$round" "$name"
        kill "$pid"
        wait "$pid" 2>/dev/null || true
        sleep 2
    done
done
