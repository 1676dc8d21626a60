# Sourced by the small single-target bench scripts: paths, the mock upstream on 127.0.0.1:9000
# (as bench/run.sh starts it), and cleanup of what they start. Expects ROOT set.
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
WORK=$ROOT/bench/.work
mkdir -p "$WORK/nginx"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
"$BIN/bench-upstream" --listen 127.0.0.1:9000 --ttft-ms 100 --itl-ms 50 --stream-tokens 40 \
    --plain-tokens 150 --max-seconds 3600 >/dev/null 2>&1 &
pids+=($!)
