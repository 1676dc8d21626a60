#!/usr/bin/env bash
# CPU time per request of a target by thread, measured exactly: perf's task-clock (the
# scheduler's own run-time accounting, not tick samples as bench/cpu-per-request.sh reads from
# /proc), with its context switches and CPU migrations, over one `loadgen rate` run at a fixed
# open-loop rate. Threads of one name are summed (Switchyard: switchyard-w* workers, the ledger
# writer; nginx: its worker processes). Needs perf and root.
#
#   bench/task-clock-per-request.sh switchyard|nginx|bare-hyper|... [RATE=12000] [SECONDS=4]
#
# Uses the dist-profile binaries bench/run.sh builds; SWITCHYARD_BIN / SWITCHYARD_CONFIG as in
# bench/cpu-per-request.sh.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
target=${1:?usage: bench/task-clock-per-request.sh TARGET [RATE] [SECONDS]}
rate=${2:-12000}
secs=${3:-4}
# shellcheck source=bench/standalone.sh
source "$ROOT/bench/standalone.sh"
start_target "$target"
"$BIN/loadgen" rate --url "$url" --label warmup --rate 500 --duration 2 >/dev/null 2>&1
# The load runs a second longer on each side than the count, so the count sees only steady load.
"$BIN/loadgen" rate --url "$url" --label "$target" --rate "$rate" --duration $((secs + 2)) 2>&1 \
    | grep -o 'achieved.*' | head -1 &
load=$!
sleep 1
procs=$main
for p in $(pgrep -P "$main" || true); do procs+=",$p"; done
echo "$target at $rate req/s, per request (task-clock in µs; switches and migrations as counts):"
perf stat -x, --per-thread -e task-clock,context-switches,cpu-migrations -p "$procs" -- sleep "$secs" 2>&1 \
    | awk -F, -v n=$((rate * secs)) '
        $4 == "task-clock" || $4 == "context-switches" || $4 == "cpu-migrations" {
            name = $1; sub(/-[0-9]+$/, "", name)
            v = ($4 == "task-clock") ? $2 * 1000 : $2   # task-clock comes in ms
            t[name, $4] += v; all[$4] += v; names[name] = 1 }
        END { for (k in names) if (t[k, "task-clock"] > 0 || t[k, "context-switches"] > 0)
                  printf "  %-18s %7.1f µs  %6.3f switches  %6.3f migrations\n", k,
                         t[k, "task-clock"] / n, t[k, "context-switches"] / n, t[k, "cpu-migrations"] / n
              printf "  %-18s %7.1f µs  %6.3f switches  %6.3f migrations\n", "all", all["task-clock"] / n,
                     all["context-switches"] / n, all["cpu-migrations"] / n }'
wait "$load"
