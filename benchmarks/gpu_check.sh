#!/usr/bin/env bash
# The prepared GPU run (device machine, one H100/H200, within 10 minutes): the 7B-shaped study rehearsal and the
# sampling paths side by side. Writes its logs and JSON lines under $OUT.
#
# The device's python3 (3.12, torch 2.11 + CUDA, transformers 5.17) lacks optuna, datasets and ray. Ray's wheel
# is too large to carry (GPU runs use --workers 0); datasets is not needed (the stand-in data are local JSONL
# files); optuna (the search stage's fourth strategy; left out with a note when missing) travels as wheels.
# Once, here, in the repository root:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl optuna==5.0.0 alembic==1.20.1 sqlalchemy==2.1.9 colorlog==6.12.0 mako==1.4.3
# then run it with the device tool: command `bash benchmarks/gpu_check.sh`, carry [".whl"], timeout_s 600.
# rsearch itself is installed from the working tree (no network: --no-build-isolation, setuptools is there), so
# rsearch.probes and rsearch.strategies resolve as they do in an installed copy.
# (The capture figures in benchmarks/results/capture_mistral7b_h200.log came from an earlier version of this
# script: `python3 benchmarks/bench_capture.py --shape mistral-7b --device cuda --dtype bfloat16 --layer 24
# --batch 8 --seq 512 --batches 4 --repeats 5`.)
set -uo pipefail
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
rm -rf /tmp/site /tmp/rsearch_pkg
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target /tmp/rsearch_pkg . \
  || { echo "cannot install rsearch from the working tree"; exit 1; }
export PYTHONPATH=/tmp/rsearch_pkg${PYTHONPATH:+:$PYTHONPATH}:/tmp/site
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"

# 1. sampling paths at the 7B shape: plain (the old loop) vs static vs compiled, 256 rows, ~140-token prompts
timeout 200 python3 benchmarks/bench_sampling.py --shape mistral-7b --device cuda --dtype bfloat16 --rows 256 \
  --prompt 140 --new 128 --threads 8 2>&1 | grep -v -i warn | tee "$OUT/sampling_7b.log"

# 2. the study rehearsal: every stage of the scaled zephyr demo on 7B-shaped stand-ins, bounds beside each stage
timeout 360 python3 benchmarks/bench_study.py --shape 7b --device cuda --work /tmp/study 2>&1 \
  | grep -v -i -E "warn|it/s\]|batch/s\]" | tee "$OUT/study_7b.log"
grep '^{' "$OUT/sampling_7b.log" "$OUT/study_7b.log" > "$OUT/json_lines.txt" || true
