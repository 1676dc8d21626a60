#!/usr/bin/env bash
# Where a target's CPU goes, per request, by rough category (kernel networking, other kernel,
# hyper/http, tokio, serde, SQLite, allocator, memmove, Switchyard's own code, ...): a perf profile
# (`perf record -F 4999`, no call graphs) of the target's processes during one `loadgen rate` run,
# each sample counted as 1/4999 s and divided by the requests. perf's own overhead inflates the
# totals (by ~1.3× here): compare targets profiled the same way, not against cpu-per-request.sh.
#
#   bench/cpu-by-category.sh switchyard|nginx|bare-hyper|bare-legacy|bare-reqwest|bare-raw [RATE=3000] [SECONDS=8]
#
# Needs perf and root. Uses the dist-profile binaries bench/run.sh builds (run it once first);
# SWITCHYARD_BIN=path runs another gateway build.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
target=${1:?usage: bench/cpu-by-category.sh TARGET [RATE] [SECONDS]}
rate=${2:-3000}
secs=${3:-8}
freq=4999
# shellcheck source=bench/standalone.sh
source "$ROOT/bench/standalone.sh"
start_target "$target"
"$BIN/loadgen" rate --url "$url" --label warmup --rate 500 --duration 2 >/dev/null
data=$WORK/perf-category.data
procs=$(echo "$main" $(pgrep -P "$main" || true) | tr ' ' ,)
perf record -q -F "$freq" -p "$procs" -o "$data" -- sleep "$secs" >/dev/null 2>&1 &
recorder=$!
# The load runs one second longer than the recording, so every recorded second is under load.
"$BIN/loadgen" rate --url "$url" --label "$target" --rate "$rate" --duration "$((secs + 1))" 2>&1 \
    | grep -o 'achieved.*' | head -1
wait "$recorder"
echo "$target: µs of CPU per request by category, under perf ($rate req/s, $secs s)"
perf report -i "$data" --no-children --sort sym --stdio -g none -F sample,sym 2>/dev/null \
    | grep -v '^#' | grep -E '\[(k|\.)\]' \
    | awk -v hz="$freq" -v n="$((rate * secs))" '
    { samples = $1; $1 = ""; s = $0; c = "user: other"
      if (s ~ /\[k\]/) {
          c = "kernel: other"
          if (s ~ /tcp|skb|ip_|inet|sock|net_|__dev|loopback|napi|sk_|dst_|nf_|__netif/) c = "kernel: networking"
          else if (s ~ /epoll|ep_/) c = "kernel: epoll"
          else if (s ~ /sched|switch|futex|wake|hrtimer|enqueue|dequeue|pick_|update_|idle|tick/) c = "kernel: scheduling"
          else if (s ~ /syscall|entry|exit_to|copy|iter/) c = "kernel: syscall entry, copies"
          else if (s ~ /_raw_spin_unlock_irq/) c = "kernel: irq-off sections (mostly waking the peer on loopback)"
      }
      else if (s ~ /serde_json|serde_core|switchyard_api::de|itoa|zmij|ryu/) c = "serde (JSON)"
      else if (s ~ /hyper::|http::|httparse|want::|http_body/) c = "hyper / http"
      else if (s ~ /sqlite|Vdbe|vdbe|Btree|btree|pcache|balance_|pager|wal/) c = "SQLite"
      else if (s ~ /rjem|je_|malloc|free|sdallocx|rallocx|tcache|arena|extent/) c = "allocator"
      else if (s ~ /tokio::|mio::/) c = "tokio"
      else if (s ~ /memmove|memcpy|memset|memcmp|strlen/) c = "memmove / memcpy"
      else if (s ~ /switchyard/) c = "switchyard crates"
      else if (s ~ /axum|tower/) c = "axum / tower"
      else if (s ~ /bytes::/) c = "bytes"
      else if (s ~ /epoll_wait|writev|recv|send|read|write|clock_gettime|vdso|Timespec/) c = "libc / vdso"
      t[c] += samples; total += samples }
    END { for (c in t) printf "%8.1f  %s\n", t[c] / hz / n * 1e6, c
          printf "%8.1f  total\n", total / hz / n * 1e6 }' | sort -rn
