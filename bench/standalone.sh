# Sourced by the small single-target bench scripts: paths, the mock upstream on 127.0.0.1:9000
# (as bench/run.sh starts it), cleanup of what they start, and start_target / target_ticks for
# one target under test. Expects ROOT set.
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/dist
WORK=$ROOT/bench/.work
mkdir -p "$WORK/nginx"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
"$BIN/bench-upstream" --listen 127.0.0.1:9000 --ttft-ms 100 --itl-ms 50 --stream-tokens 40 \
    --plain-tokens 150 --max-seconds 3600 >/dev/null 2>&1 &
pids+=($!)

# start_build BINARY CONFIG: starts one Switchyard build on a fresh ledger (not added to the
# cleanup list: the A/B scripts stop each build themselves), sets $url to its chat endpoint and
# $gw to its pid, and waits until it answers.
start_build() {
    rm -f "$WORK"/ledger.sqlite*
    "$1" serve --config "$2" >/dev/null 2>&1 &
    gw=$!
    url=http://127.0.0.1:4000/v1/chat/completions
    for _ in $(seq 50); do curl -s -o /dev/null "$url" -d '{}' && break; sleep 0.1; done
}

# start_target switchyard|nginx|bare-hyper|bare-legacy|bare-reqwest|bare-raw|bare-rawserver: starts one target (SWITCHYARD_BIN=path
# runs another gateway build, SWITCHYARD_CONFIG=path another config), sets $url to its chat endpoint and $main to its pid, and waits
# until it answers.
start_target() {
    case $1 in
        nginx)
            sed "s#@PREFIX@#$WORK/nginx#g" bench/conf/nginx.conf.in > "$WORK/nginx/nginx.conf"
            nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" -g 'daemon off;' &
            url=http://127.0.0.1:8080/v1/chat/completions ;;
        switchyard)
            start_build "${SWITCHYARD_BIN:-$BIN/switchyard}" "${SWITCHYARD_CONFIG:-bench/switchyard.toml}"
            main=$gw
            pids+=("$main")
            return ;;
        bare-hyper)
            "$BIN/bare-hyper-proxy" --listen 127.0.0.1:4100 --upstream 127.0.0.1:9000 &
            url=http://127.0.0.1:4100/v1/chat/completions ;;
        bare-legacy|bare-reqwest|bare-raw)
            "$BIN/bare-hyper-proxy" --listen 127.0.0.1:4100 --upstream 127.0.0.1:9000 --client "${1#bare-}" &
            url=http://127.0.0.1:4100/v1/chat/completions ;;
        bare-rawserver)
            "$BIN/bare-hyper-proxy" --listen 127.0.0.1:4100 --upstream 127.0.0.1:9000 --client raw --server raw &
            url=http://127.0.0.1:4100/v1/chat/completions ;;
        *) echo "target must be switchyard, nginx, bare-hyper, bare-legacy, bare-reqwest, bare-raw or bare-rawserver" >&2; exit 2 ;;
    esac
    main=$!
    pids+=("$main")
    for _ in $(seq 50); do curl -s -o /dev/null "$url" -d '{}' && break; sleep 0.1; done
}

# target_ticks: CPU clock ticks (utime + stime) so far of $main and its children (nginx workers).
target_ticks() {
    local t=0 p
    for p in $main $(pgrep -P "$main" || true); do
        t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    done
    echo "$t"
}

# count_syscalls SECONDS PER UNIT SWITCHES CALL...: counts the system calls of $main and its
# children over SECONDS with perf's syscall tracepoints, and prints them divided by PER as
# "$target: system calls per UNIT: TOTAL ( CALL N ... other N )", naming each CALL at 0.01 or
# more; with SWITCHES=1 also the threads' context switches and CPU migrations per UNIT. Needs root.
count_syscalls() {
    local secs=$1 per=$2 unit=$3 switches=$4 procs=$main p c
    shift 4
    local events=raw_syscalls:sys_enter
    for c in "$@"; do events+=",syscalls:sys_enter_$c"; done
    [ "$switches" = 1 ] && events+=,context-switches,cpu-migrations
    for p in $(pgrep -P "$main" || true); do procs+=",$p"; done
    perf stat -x, -e "$events" -p "$procs" -- sleep "$secs" 2>&1 \
        | awk -F, -v n="$per" -v t="$target" -v u="$unit" -v sw="$switches" '
            $3 ~ /sys_enter/ { name = $3; sub(/.*sys_enter_?/, "", name); if (name == "") name = "all";
                               c[name] = $1 / n; order[++k] = name }
            $3 ~ /context-switches|cpu-migrations/ { s[$3] = $1 / n }
            END { printf "%s: system calls per %s: %.2f (", t, u, c["all"]
                  rest = c["all"]
                  for (i = 1; i <= k; i++) if (order[i] != "all") { rest -= c[order[i]]
                      if (c[order[i]] >= 0.01) printf " %s %.2f", order[i], c[order[i]] }
                  printf " other %.2f )", rest
                  if (sw == 1) printf "; context switches %.3f, migrations %.3f",
                                      s["context-switches"], s["cpu-migrations"]
                  printf "\n" }'
}

# probe_malloc: puts a uprobe on jemalloc's `malloc` in the Switchyard build under test
# (SWITCHYARD_BIN, else the dist binary) and removes it on exit; count_allocs uses it. Needs root.
probe_malloc() {
    local bin
    bin=$(realpath "${SWITCHYARD_BIN:-$BIN/switchyard}")
    malloc_event=symalloc$$
    perf probe -q -x "$bin" -a "$malloc_event=_rjem_malloc"
    malloc_group=$(perf probe -l 2>/dev/null \
        | awk -v e=":$malloc_event" 'index($1, e) {split($1, a, ":"); print a[1]; exit}')
    trap 'perf probe -q -d "$malloc_group:$malloc_event" 2>/dev/null || true; cleanup' EXIT
}

# count_allocs SECONDS PER UNIT: counts the mallocs of $main's threads over SECONDS (after
# probe_malloc) and prints them divided by PER as "allocations per UNIT: TOTAL ( THREAD N ... )",
# threads named without their number.
count_allocs() {
    perf stat -x, -e "$malloc_group:$malloc_event" --per-thread -p "$main" -- sleep "$1" 2>&1 \
        | awk -F, -v n="$2" -v u="$3" '$1 ~ /^switchyard-/ {sub(/-[0-9]+$/, "", $1); t[$1] += $2; all += $2}
            END {printf "allocations per %s: %.2f (", u, all / n;
                 for (k in t) printf " %s %.2f", k, t[k] / n; print " )"}'
}
