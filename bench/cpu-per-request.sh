#!/usr/bin/env bash
# CPU time per request of Switchyard, nginx or a bare tokio + hyper proxy at a fixed open-loop rate:
# utime + stime of the target's processes (/proc/PID/stat) over one `loadgen rate` run, divided
# by its requests, how busy the whole machine was meanwhile, and the split by thread. `bare-hyper` is
# bench/upstream/src/bin/bare-hyper-proxy.rs: tokio + hyper forwarding bytes and nothing else,
# the least a gateway on Switchyard's stack can cost; `bare-legacy` and `bare-reqwest` are the same
# proxy calling upstream through hyper_util's pooled client (as Switchyard did) or reqwest;
# `bare-raw` calls it with raw HTTP/1.1 on the request's task (as Switchyard does), and
# `bare-rawserver` also answers clients with a minimal loop of its own instead of hyper's server.
#
#   bench/cpu-per-request.sh switchyard|nginx|bare-hyper|bare-legacy|bare-reqwest|bare-raw|bare-rawserver [RATE=2000] [SECONDS=20]
#
# Uses the dist-profile binaries bench/run.sh builds (run it once first) and its nginx config;
# SWITCHYARD_BIN=path runs another gateway build (to compare two builds on the same machine),
# SWITCHYARD_CONFIG=path another config (e.g. bench/switchyard.toml with `workers = 2` on top).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
target=${1:?usage: bench/cpu-per-request.sh switchyard|nginx|bare-hyper|bare-legacy|bare-reqwest|bare-raw|bare-rawserver [RATE] [SECONDS]}
rate=${2:-2000}
secs=${3:-20}
# shellcheck source=bench/standalone.sh
source "$ROOT/bench/standalone.sh"
start_target "$target"
"$BIN/loadgen" rate --url "$url" --label warmup --rate 500 --duration 2 >/dev/null
machine() { # busy and total jiffies of the whole machine (load generator and upstream included)
    awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat
}
threads() { # per thread of $main: "name ticks" (threads of one name summed), sorted by name
    for d in /proc/"$main"/task/*; do
        printf '%s %s\n' "$(tr -d ' ' < "$d/comm")" "$(awk '{print $14 + $15}' "$d/stat")"
    done | awk '{t[$1] += $2} END {for (n in t) print n, t[n]}' | sort
}
# CPU of the load generator (this shell's children reaped meanwhile: it, and a few greps) and
# of the mock upstream, to see what the target's ceiling shares the cores with.
# (`times` must run in this shell, not a command substitution's subshell, to see them.)
children_s() { awk 'END {gsub(/[ms]/, " "); print $1 * 60 + $2 + $3 * 60 + $4}' "$WORK/times"; }
upstream_ticks() { awk '{print $14 + $15}' "/proc/${pids[0]}/stat"; }
read -r busy0 total0 < <(machine)
threads > "$WORK/threads.before"
times > "$WORK/times"
lg0=$(children_s)
up0=$(upstream_ticks)
before=$(target_ticks)
"$BIN/loadgen" rate --url "$url" --label "$target" --rate "$rate" --duration "$secs" 2>&1 | grep -o 'achieved.*' | head -1
after=$(target_ticks)
up1=$(upstream_ticks)
times > "$WORK/times"
lg1=$(children_s)
threads > "$WORK/threads.after"
read -r busy1 total1 < <(machine)
hz=$(getconf CLK_TCK)
awk -v d=$((after - before)) -v hz="$hz" -v r="$rate" -v s="$secs" -v t="$target" \
    'BEGIN{printf "%s: %.0f us CPU per request at %d req/s (%.1f%% of one core)\n", t, d/hz/(r*s)*1e6, r, d/hz/s*100}'
awk -v l="$(awk -v a="$lg0" -v b="$lg1" 'BEGIN{print b - a}')" -v u=$((up1 - up0)) -v hz="$hz" -v n=$((rate * secs)) \
    'BEGIN{printf "beside it: load generator %.0f us, mock upstream %.0f us CPU per request\n", l/n*1e6, u/hz/n*1e6}'
echo "whole machine busy over the run: $(( (busy1 - busy0) * 100 / (total1 - total0) ))% of its $(nproc) cores (load generator and upstream included)"
# Where the CPU of the target's main process went, thread by thread (Switchyard: request workers,
# ledger writer; nginx: its master only, the workers are processes).
join "$WORK/threads.before" "$WORK/threads.after" | awk -v hz="$hz" -v n=$((rate * secs)) \
    '$3 > $2 {printf "  %s %.1f us", $1, ($3 - $2) / hz / n * 1e6} END {print ""}'
