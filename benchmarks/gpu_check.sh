#!/usr/bin/env bash
# One prepared GPU run (device machine): capture throughput and memory on a random-init Mistral-7B-shaped model.
# Carry .whl (transformer_lens and its small deps, downloaded for Python 3.12) when calling it.
set -uo pipefail
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
python3 benchmarks/bench_capture.py --shape mistral-7b --device cuda --dtype bfloat16 --layer 24 \
  --batch 8 --seq 512 --batches 4 --repeats 5 2>&1 | grep -v -i warn | tee "$OUT/capture_7b.log"
