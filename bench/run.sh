#!/usr/bin/env bash
# Switchyard side-by-side benchmark: the same open-loop load, in one run on this machine, sent
#   directly to the mock upstream (the floor), through nginx proxy_pass (the do-nothing proxy),
#   through a bare tokio + hyper proxy (bench/upstream/src/bin/bare-hyper-proxy.rs: Switchyard's
#   stack doing nothing else), through Switchyard (SQLite ledger and metrics on), through
#   Portkey's gateway and LiteLLM's proxy.
# Each target runs alone (others stopped) so its peak RSS (VmHWM) is its own.
# Results: bench/out/{results.jsonl,results.json,results.csv,table.md}. Method: docs/benchmarks.md.
#
# Usage:
#   bench/run.sh                       full comparison (about 35-40 minutes)
#   bench/run.sh --quick               short steps and rates: a smoke run (about 4 minutes)
#   bench/run.sh --targets direct,nginx,switchyard
#   bench/run.sh --long 600 [--long-rate 2000]
#                                      long run: Switchyard alone at a fixed rate, RSS after
#                                      minute 1 (or half-way if shorter) and at the end
#   bench/run.sh --profile 10 [--long-rate 2000]
#                                      perf (cpu-clock sampling) of Switchyard under a fixed rate;
#                                      top functions to bench/out/profile.txt
# Environment: CARGO_TARGET_DIR (default ./target); SWITCHYARD_BIN to use a prebuilt gateway;
#   SKIP_BUILD=1 to use binaries already built; LADDERS=N step ladders per target (default 3,
#   1 with --quick; the table reports the median ceiling and each ladder's); PAIRED_ROUNDS=N rounds
#   of alternating 2,000 req/s windows (direct, nginx, Switchyard) after the targets (default 8,
#   2 with --quick, 0 to skip); PAIRED_STREAM_ROUNDS=N rounds of alternating stream windows
#   (1,000 streams each; default 5, 1 with --quick, 0 to skip; they run only with PAIRED_ROUNDS > 0).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
WORK=$ROOT/bench/.work
OUT=$ROOT/bench/out
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/dist # the dist profile: fat LTO, one codegen unit (Cargo.toml)
SWITCHYARD_BIN=${SWITCHYARD_BIN:-$BIN/switchyard}

# Ladder order within a round (reversed every other round): nginx and Switchyard side by side.
TARGETS="direct,nginx,switchyard,bare-hyper,portkey,litellm"
QUICK=0
LONG=0
LONG_RATE=2000
PROFILE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --targets) TARGETS=$2; shift ;;
        --long) LONG=$2; shift ;;
        --long-rate) LONG_RATE=$2; shift ;;
        --profile) PROFILE=$2; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

# Fixed loopback ports (checked free below).
UPSTREAM_PORT=9000
NGINX_PORT=8080
BARE_PORT=4100
SWITCHYARD_PORT=4000
LITELLM_PORT=4001
PORTKEY_PORT=8787

# Streaming scenario: the upstream waits TTFT_MS before the first token, then ITL_MS per token.
TTFT_MS=100
ITL_MS=50
STREAM_TOKENS=40
STREAMS=1000
FIXED_RATES="500 2000 10000"
PAIRED_RATE=2000
if [ "$QUICK" = 1 ]; then
    PAIRED_ROUNDS=${PAIRED_ROUNDS:-2}
    PAIRED_SECS=2
    PAIRED_STREAM_ROUNDS=${PAIRED_STREAM_ROUNDS:-1}
    PAIRED_STREAM_SECS=2
    LADDERS=${LADDERS:-1}
    STEP_ARGS=(--step-seconds 2 --refine 1)
    RATE_SECS=3
    STREAM_SECS=4
else
    LADDERS=${LADDERS:-3}
    PAIRED_ROUNDS=${PAIRED_ROUNDS:-8}
    PAIRED_SECS=5
    PAIRED_STREAM_ROUNDS=${PAIRED_STREAM_ROUNDS:-5}
    PAIRED_STREAM_SECS=6
    STEP_ARGS=(--step-seconds 4 --refine 3)
    RATE_SECS=10
    STREAM_SECS=10
fi

LITELLM_KEY=sk-bench-master
mkdir -p "$WORK" "$OUT"
RESULTS=$OUT/results.jsonl
LOG=$WORK/logs
mkdir -p "$LOG"

# ---- processes we start, stopped by their own ids on exit --------------------------------------
STARTED=()
stop_pid() {
    local pid=$1
    if kill -0 "$pid" 2>/dev/null; then
        # Started with setsid: the id is also the process group of its workers.
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
}
cleanup() {
    local pid
    for pid in "${STARTED[@]:-}"; do [ -n "$pid" ] && stop_pid "$pid"; done
}
trap cleanup EXIT INT TERM

start() { # start NAME CMD... : runs CMD in its own session, logs to $LOG/NAME.log, sets PID
    local name=$1; shift
    setsid "$@" >"$LOG/$name.log" 2>&1 < /dev/null &
    PID=$!
    STARTED+=("$PID")
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

chat_body='{"model":"mock-model","messages":[{"role":"user","content":"ping"}]}'
wait_ready() { # wait_ready NAME PID URL [curl header args...]: POST a chat request until 200, 240 s at most
    local name=$1 pid=$2 url=$3; shift 3
    for _ in $(seq 1 480); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$name exited during start-up; log:" >&2; tail -n 30 "$LOG/$name.log" >&2; return 1
        fi
        code=$(curl -s -o /dev/null -w '%{http_code}' -m 2 -X POST "$url" \
            -H 'content-type: application/json' "$@" -d "$chat_body" || true)
        [ "$code" = 200 ] && return 0
        sleep 0.5
    done
    echo "$name did not answer 200 at $url within 240 s; log:" >&2; tail -n 30 "$LOG/$name.log" >&2
    return 1
}

tree_pids() { # a process and its descendants
    local p=$1 c
    echo "$p"
    for c in $(pgrep -P "$p" 2>/dev/null || true); do tree_pids "$c"; done
}
sum_status_kb() { # sum_status_kb PID FIELD: FIELD (VmHWM, VmRSS) summed over the process tree
    local total=0 p v
    for p in $(tree_pids "$1"); do
        v=$(awk -v f="$2:" '$1==f{print $2}' "/proc/$p/status" 2>/dev/null || true)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

# ---- build and install ------------------------------------------------------------------------
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    echo "== building (profile dist, fat LTO: several minutes): bench-upstream, loadgen$( [[ ,$TARGETS, == *,switchyard,* || $LONG != 0 ]] && echo ', switchyard')"
    cargo build --profile dist -q -p switchyard-bench-upstream -p switchyard-bench-loadgen
    if [[ ,$TARGETS, == *,switchyard,* || $LONG != 0 || $PROFILE != 0 ]] && [ "$SWITCHYARD_BIN" = "$BIN/switchyard" ]; then
        cargo build --profile dist -q -p switchyard
    fi
fi
LOADGEN=$BIN/loadgen
UPSTREAM=$BIN/bench-upstream

if [[ ,$TARGETS, == *,nginx,* ]] && ! command -v nginx >/dev/null; then
    echo "== installing nginx-light (Debian)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null; } ||
        { echo "nginx missing and could not be installed: apt-get install -y nginx-light" >&2; exit 1; }
fi
if [[ ,$TARGETS, == *,litellm,* ]] && [ ! -x "$WORK/litellm-venv/bin/litellm" ]; then
    echo "== installing LiteLLM 1.106.2 into bench/.work/litellm-venv"
    python3 -m venv "$WORK/litellm-venv"
    "$WORK/litellm-venv/bin/pip" install -q 'litellm[proxy]==1.106.2'
fi
if [[ ,$TARGETS, == *,portkey,* ]] && [ ! -f "$WORK/portkey/node_modules/@portkey-ai/gateway/build/start-server.js" ]; then
    echo "== installing Portkey gateway 1.15.2 (@hono/node-server held at 1.14.0) into bench/.work/portkey"
    mkdir -p "$WORK/portkey"
    cp bench/conf/portkey-package.json "$WORK/portkey/package.json"
    (cd "$WORK/portkey" && npm install --no-audit --no-fund --loglevel=error)
fi

for p in $UPSTREAM_PORT $NGINX_PORT $BARE_PORT $SWITCHYARD_PORT $LITELLM_PORT $PORTKEY_PORT; do
    port_free "$p" || { echo "port $p on 127.0.0.1 is in use: stop what holds it" >&2; exit 1; }
done

# ---- the shared upstream ----------------------------------------------------------------------
start upstream "$UPSTREAM" --listen "127.0.0.1:$UPSTREAM_PORT" --ttft-ms $TTFT_MS --itl-ms $ITL_MS \
    --stream-tokens $STREAM_TOKENS --plain-tokens 150 --max-seconds 3600
UPSTREAM_PID=$PID
wait_ready upstream "$UPSTREAM_PID" "http://127.0.0.1:$UPSTREAM_PORT/v1/chat/completions"

meta() { # one line describing the machine and its load at this moment
    printf '{"kind":"meta","label":"%s","when":"%s","cpu":"%s","cores":%s,"mem_gib":%s,"kernel":"%s","loadavg":"%s","git":"%s","quick":%s,"streams":%s,"ttft_ms":%s,"itl_ms":%s,"stream_tokens":%s}\n' \
        "$1" "$(date -u +%FT%TZ)" "$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)" "$(nproc)" \
        "$(awk '/MemTotal/{printf "%.1f", $2/1048576}' /proc/meminfo)" "$(uname -r)" \
        "$(cut -d' ' -f1-3 /proc/loadavg)" "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
        "$QUICK" "$STREAMS" "$TTFT_MS" "$ITL_MS" "$STREAM_TOKENS"
}

# ---- long run: Switchyard alone at a fixed rate, RSS over time ------------------------------------
start_switchyard() {
    rm -f "$WORK"/ledger.sqlite*
    start switchyard "$SWITCHYARD_BIN" serve --config bench/switchyard.toml
    SW_PID=$PID
    wait_ready switchyard "$SW_PID" "http://127.0.0.1:$SWITCHYARD_PORT/v1/chat/completions"
}
if [ "$LONG" != 0 ]; then
    LONG_OUT=$OUT/long.jsonl
    : > "$LONG_OUT"
    meta start >> "$LONG_OUT"
    start_switchyard
    first=$(( LONG >= 120 ? 60 : LONG / 2 ))
    echo "== long run: $LONG s at $LONG_RATE req/s through Switchyard; RSS at ${first}s and at the end"
    "$LOADGEN" rate --url "http://127.0.0.1:$SWITCHYARD_PORT/v1/chat/completions" --label switchyard-long \
        --rate "$LONG_RATE" --duration "$LONG" --out "$LONG_OUT" &
    LG=$!
    # RSS every 30 s (and at $first), so a step that levels off is told from a steady climb.
    samples=() t=0 rss1="" kb=0
    while [ $t -lt $(( LONG - 1 )) ]; do
        step=$(( LONG - 1 - t < 30 ? LONG - 1 - t : 30 ))
        if [ -z "$rss1" ] && [ $(( t + step )) -gt "$first" ]; then step=$(( first - t )); fi
        sleep "$step"; t=$(( t + step ))
        kb=$(sum_status_kb "$SW_PID" VmRSS)
        # Open connections, client side and upstream side: the load generator keeps a
        # connection per request it ever had in flight at once (until 30 s idle), and each one
        # holds buffers in the gateway, so a latency hiccup that opens more shows up as RSS.
        conns=$(ss -Htn state established "( sport = :$SWITCHYARD_PORT )" | wc -l)
        up=$(ss -Htn state established "( dport = :$UPSTREAM_PORT )" | wc -l)
        # The allocator's split (live vs resident beyond them), to tell a leak from retention.
        heap=$(curl -s "http://127.0.0.1:$SWITCHYARD_PORT/metrics" | awk '/^switchyard_heap_bytes\{state="in_use"\}/{u=$2} /^switchyard_heap_bytes\{state="free"\}/{f=$2} END{printf "%d,%d", u/1024, f/1024}')
        samples+=("[$t,$kb,$conns,$up,$heap]")
        [ $t -eq "$first" ] && rss1=$kb
        IFS=, read -r h_use h_free <<< "$heap"
        echo "  t=${t}s RSS $(( kb / 1024 )).$(( kb % 1024 * 10 / 1024 )) MiB, heap in use/free $h_use/$h_free kB, connections: $conns from clients, $up to the upstream"
    done
    rss2=$kb
    wait "$LG"
    hwm=$(sum_status_kb "$SW_PID" VmHWM)
    growth=$(awk -v a="$rss1" -v b="$rss2" 'BEGIN{printf "%.1f", (b-a)*100/a}')
    printf '{"kind":"long_rss","label":"switchyard","rate":%s,"duration_s":%s,"rss_first_at_s":%s,"rss_first_kb":%s,"rss_end_kb":%s,"growth_pct":%s,"vmhwm_kb":%s,"t_rss_kb_conns_upstream_heap_in_use_kb_heap_free_kb":[%s]}\n' \
        "$LONG_RATE" "$LONG" "$first" "$rss1" "$rss2" "$growth" "$hwm" "$(IFS=,; echo "${samples[*]}")" >> "$LONG_OUT"
    meta end >> "$LONG_OUT"
    echo "Switchyard RSS: $((rss1/1024)) MiB at ${first}s, $((rss2/1024)) MiB at the end (${growth}%; target within 10%), peak $((hwm/1024)) MiB"
    tail -n 3 "$LONG_OUT" | head -n 2
    exit 0
fi

if [ "$PROFILE" != 0 ]; then
    start_switchyard
    echo "== profiling Switchyard: $PROFILE s at $LONG_RATE req/s (perf record -e cpu-clock)"
    "$LOADGEN" rate --url "http://127.0.0.1:$SWITCHYARD_PORT/v1/chat/completions" --label switchyard-profile \
        --rate "$LONG_RATE" --duration "$((PROFILE + 2))" &
    LG=$!
    sleep 1
    cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
    t0=$(cpu_ticks "$SW_PID")
    # Hardware counters are not exposed here (perf stat -e instructions: not supported); cpu-clock is.
    perf record -q -e cpu-clock -F 1999 -g -p "$SW_PID" -o "$WORK/perf.data" -- sleep "$PROFILE" 2>/dev/null || true
    t1=$(cpu_ticks "$SW_PID")
    wait "$LG"
    echo "Switchyard CPU: $(awk -v d=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v r="$LONG_RATE" -v s="$PROFILE" \
        'BEGIN{printf "%.1f%% of one core, %.0f us per request", d/hz/s*100, d/hz/(r*s)*1e6}')" | tee "$OUT/profile-cpu.txt"
    perf report -i "$WORK/perf.data" --no-children --stdio --percent-limit 1 -g none 2>/dev/null \
        | grep -v '^#' | grep -v '^$' | head -n 60 > "$OUT/profile.txt"
    perf report -i "$WORK/perf.data" --no-children --stdio --sort dso -g none 2>/dev/null \
        | grep -v '^#' | grep -v '^$' | head -n 15 > "$OUT/profile-dso.txt"
    cat "$OUT/profile-dso.txt" "$OUT/profile.txt"
    exit 0
fi

# ---- the comparison ---------------------------------------------------------------------------
: > "$RESULTS"
meta start >> "$RESULTS"

target_up() { # target_up NAME: starts NAME alone and waits until it answers; sets T_URL, T_PID
    # (none for direct) and T_ARGS (the loadgen header arguments it needs)
    T_ARGS=()
    case "$1" in
    direct)
        T_URL="http://127.0.0.1:$UPSTREAM_PORT/v1/chat/completions" T_PID=none
        ;;
    nginx)
        mkdir -p "$WORK/nginx"
        sed "s#@PREFIX@#$WORK/nginx#g" bench/conf/nginx.conf.in > "$WORK/nginx/nginx.conf"
        start nginx nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" -g 'daemon off;'
        T_URL="http://127.0.0.1:$NGINX_PORT/v1/chat/completions" T_PID=$PID
        ;;
    bare-hyper)
        # tokio + hyper forwarding bytes, nothing else: what Switchyard's stack costs by itself.
        start bare-hyper "$BIN/bare-hyper-proxy" --listen "127.0.0.1:$BARE_PORT" --upstream "127.0.0.1:$UPSTREAM_PORT"
        T_URL="http://127.0.0.1:$BARE_PORT/v1/chat/completions" T_PID=$PID
        ;;
    switchyard)
        rm -f "$WORK"/ledger.sqlite*
        start switchyard "$SWITCHYARD_BIN" serve --config bench/switchyard.toml
        T_URL="http://127.0.0.1:$SWITCHYARD_PORT/v1/chat/completions" T_PID=$PID
        ;;
    portkey)
        start portkey node "$WORK/portkey/node_modules/@portkey-ai/gateway/build/start-server.js" \
            --port=$PORTKEY_PORT --headless
        T_URL="http://127.0.0.1:$PORTKEY_PORT/v1/chat/completions" T_PID=$PID
        T_ARGS=(-H "x-portkey-provider: openai" -H "x-portkey-custom-host: http://127.0.0.1:$UPSTREAM_PORT/v1" -H "authorization: Bearer sk-bench-upstream")
        ;;
    litellm)
        # Two workers, one per core, as the other targets use both cores. Uvicorn kills a worker
        # that misses its 5 s health check, and importing LiteLLM takes longer than that here.
        start litellm env LITELLM_MASTER_KEY=$LITELLM_KEY LITELLM_LOCAL_MODEL_COST_MAP=True \
            LITELLM_LOG=ERROR "$WORK/litellm-venv/bin/litellm" --config bench/conf/litellm.yaml \
            --host 127.0.0.1 --port $LITELLM_PORT --num_workers 2 --timeout_worker_healthcheck 600
        T_URL="http://127.0.0.1:$LITELLM_PORT/v1/chat/completions" T_PID=$PID
        T_ARGS=(-H "authorization: Bearer $LITELLM_KEY")
        ;;
    *) echo "unknown target $1" >&2; exit 2 ;;
    esac
    if [ "$T_PID" != none ]; then wait_ready "$1" "$T_PID" "$T_URL" "${T_ARGS[@]}"; fi
    "$LOADGEN" rate --url "$T_URL" --label "$1" --rate 200 --duration 2 "${T_ARGS[@]}" >/dev/null  # warm-up
}
target_down() { if [ "$T_PID" != none ]; then stop_pid "$T_PID"; fi; }
record_peak_rss() { # record_peak_rss LABEL: the target's VmHWM so far as an "rss" line (the report keeps the highest)
    [ "$T_PID" = none ] && return 0
    local kb
    kb=$(sum_status_kb "$T_PID" VmHWM)
    printf '{"kind":"rss","label":"%s","vmhwm_kb":%s,"processes":%s}\n' "$1" "$kb" \
        "$(tree_pids "$T_PID" | wc -l)" >> "$RESULTS"
    echo "  [$1] peak RSS so far $((kb / 1024)) MiB (VmHWM summed over its processes)"
}

read -r -a targets <<< "${TARGETS//,/ }"

# ---- highest sustained rate: step ladders, the targets interleaved round by round --------------
# One ladder's ceiling is a noisy sample on this VM (a hiccup near the edge tips a target into a
# queue), and the VM's speed drifts over a run: targets measured one after the other, minutes
# apart, see different machines. So every round runs one ladder of every target, the order
# reversed every other round (a steady drift then touches the first and last alike), and the
# report gives each round's ratios as well as the ratio of the median ceilings.
for round in $(seq 1 "$LADDERS"); do
    order=("${targets[@]}")
    if [ $((round % 2)) = 0 ]; then
        order=()
        for ((i = ${#targets[@]} - 1; i >= 0; i--)); do order+=("${targets[$i]}"); done
    fi
    echo "== ladders, round $round of $LADDERS: ${order[*]}"
    printf '{"kind":"ladder_round","round":%s,"when":"%s","order":"%s","loadavg":"%s"}\n' "$round" \
        "$(date -u +%FT%TZ)" "${order[*]}" "$(cut -d' ' -f1-3 /proc/loadavg)" >> "$RESULTS"
    for t in "${order[@]}"; do
        target_up "$t"
        "$LOADGEN" step --url "$T_URL" --label "$t" "${STEP_ARGS[@]}" --out "$RESULTS" "${T_ARGS[@]}"
        record_peak_rss "$t"
        target_down
        sleep 2
    done
done

median_ceiling() { # median_ceiling LABEL: the median (lower middle) of LABEL's ladder ceilings so far
    grep '"kind":"step"' "$RESULTS" | grep -F "\"label\":\"$1\"" | grep -o '"max_sustained_rps":[0-9.]*' \
        | cut -d: -f2 | sort -g | awk '{v[NR]=$1} END{if (NR) print v[int((NR+1)/2)]; else print 0}'
}

# ---- fixed rates, streams and peak RSS: one target at a time ------------------------------------
for t in "${targets[@]}"; do
    echo "== $t: fixed rates and streams"
    target_up "$t"
    max=$(median_ceiling "$t")
    echo "  [$t] median ceiling over $LADDERS ladder(s): $max req/s"
    for r in $FIXED_RATES; do
        # Only rates the target sustained: past that the queue grows and percentiles mean nothing.
        if awk -v r="$r" -v m="$max" 'BEGIN{exit !(r <= m)}'; then
            sleep 1
            "$LOADGEN" rate --url "$T_URL" --label "$t" --rate "$r" --duration "$RATE_SECS" --out "$RESULTS" "${T_ARGS[@]}"
        else
            echo "  [$t] skip $r req/s (above its sustained $max)"
        fi
    done
    sleep 1
    record_peak_rss "$t"
    # Reset the peak so the streams phase gets its own figure (writing 5 to clear_refs resets VmHWM).
    if [ "$T_PID" != none ]; then
        for p in $(tree_pids "$T_PID"); do echo 5 > "/proc/$p/clear_refs" 2>/dev/null || true; done
    fi
    "$LOADGEN" streams --url "$T_URL" --label "$t" --concurrency "$STREAMS" --duration "$STREAM_SECS" \
        --ramp 2 --itl-ms "$ITL_MS" --stall-ms 500 --timeout-ms 30000 --out "$RESULTS" "${T_ARGS[@]}"
    if [ "$T_PID" != none ]; then
        kb=$(sum_status_kb "$T_PID" VmHWM)
        printf '{"kind":"rss_streams","label":"%s","vmhwm_kb":%s}\n' "$t" "$kb" >> "$RESULTS"
        echo "  [$t] peak RSS during $STREAMS streams $((kb / 1024)) MiB"
    fi
    if [ "$t" = switchyard ]; then
        # The ledger must have been written during the run: show its row counts.
        for tbl in $(sqlite3 "$WORK/ledger.sqlite" "select name from sqlite_master where type='table'" 2>/dev/null || true); do
            echo "  [switchyard] ledger table $tbl: $(sqlite3 "$WORK/ledger.sqlite" "select count(*) from \"$tbl\"") rows"
        done
    fi
    target_down
done

# ---- added latency in alternating windows -----------------------------------------------------
# The fixed-rate runs above measure each target once, minutes apart: on this VM the floor's own
# p99 at 2,000 req/s has moved between 0.24 and 7.1 ms from one run to the next, which hides a
# 0.5 ms budget. Here direct, nginx and Switchyard take turns in short windows, round after round,
# and the report takes each round's difference (bench/loadgen/src/paired.rs).
if [ "$PAIRED_ROUNDS" -gt 0 ] && [[ ,$TARGETS, == *,direct,* && ,$TARGETS, == *,switchyard,* ]]; then
    echo "== alternating windows: $PAIRED_ROUNDS rounds of ${PAIRED_SECS} s at $PAIRED_RATE req/s (direct, then each proxy)"
    paired=(direct)
    declare -A paired_url=([direct]="http://127.0.0.1:$UPSTREAM_PORT/v1/chat/completions")
    if [[ ,$TARGETS, == *,nginx,* ]]; then
        start nginx-paired nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" -g 'daemon off;'
        NG_PID=$PID
        wait_ready nginx "$NG_PID" "http://127.0.0.1:$NGINX_PORT/v1/chat/completions"
        paired+=(nginx)
        paired_url[nginx]="http://127.0.0.1:$NGINX_PORT/v1/chat/completions"
    fi
    start_switchyard
    paired+=(switchyard)
    paired_url[switchyard]="http://127.0.0.1:$SWITCHYARD_PORT/v1/chat/completions"
    for t in "${paired[@]}"; do
        "$LOADGEN" rate --url "${paired_url[$t]}" --label warmup --rate 500 --duration 2 >/dev/null 2>&1
    done
    for round in $(seq 1 "$PAIRED_ROUNDS"); do
        for t in "${paired[@]}"; do
            "$LOADGEN" rate --url "${paired_url[$t]}" --label "paired:$t" --rate "$PAIRED_RATE" \
                --duration "$PAIRED_SECS" --out "$RESULTS"
            sleep 1
        done
    done
    # The same for concurrent streams' time to first token: the stream phase above runs each
    # target once, minutes apart, and needs 1.6-2.2 of the 2 cores, so a slow minute there moves
    # TTFT p99 by milliseconds for any proxy (docs/benchmarks.md, "Streams").
    if [ "$PAIRED_STREAM_ROUNDS" -gt 0 ]; then
        echo "== alternating stream windows: $PAIRED_STREAM_ROUNDS rounds of $STREAMS streams for ${PAIRED_STREAM_SECS} s (direct, then each proxy)"
        for round in $(seq 1 "$PAIRED_STREAM_ROUNDS"); do
            for t in "${paired[@]}"; do
                "$LOADGEN" streams --url "${paired_url[$t]}" --label "paired-streams:$t" --concurrency "$STREAMS" \
                    --duration "$PAIRED_STREAM_SECS" --ramp 2 --itl-ms "$ITL_MS" --stall-ms 500 --timeout-ms 30000 \
                    --out "$RESULTS" >/dev/null
                sleep 2
            done
        done
    fi
    stop_pid "$SW_PID"
    if [ -n "${NG_PID:-}" ]; then stop_pid "$NG_PID"; fi
fi

meta end >> "$RESULTS"
echo
"$LOADGEN" report --input "$RESULTS" --out-dir "$OUT"
echo "(written: bench/out/table.md, results.csv, results.json, results.jsonl)"
