#!/usr/bin/env bash
# The GPU checks as one prepared run on a lent GPU machine (which has torch, triton and transformers,
# but neither the packaged 98 MB model nor gguf): the CUDA end-to-end test, then bench/gpu.py.
#
#   bash bench/gpu_device.sh prepare              # here: .device/ gets the tokenizer (1.8 MB) and the gguf wheel
#   bash bench/gpu_device.sh run [gpu.py flags]   # there, carrying .device; logs and JSON go to $OUT
#
# A whole bench/gpu.py run may not fit one 10-minute command: split it by shape, e.g.
#   run --models smollm2-135m,llama-3.2-1b    then    SKIP_CUDA_TEST=1 ... run --models llama-3-8b
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
prepare)
    py="${PYTHON:-.venv/bin/python}"
    mkdir -p .device
    "$py" -m vivace.engine.loaders.tokenizer_file .device/tokenizer.gguf
    version="$("$py" -c 'import importlib.metadata as m; print(m.version("gguf"))')"
    rm -f .device/*.whl
    "$py" -m pip download --quiet --no-deps --only-binary=:all: -d .device "gguf==$version"
    du -sh .device
    ;;
run)
    shift
    out="${OUT:-bench/results}"
    mkdir -p "$out"
    python3 -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device/*.whl
    export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 VIVACE_TOKENIZER="$PWD/.device/tokenizer.gguf"
    nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.sm,clocks.mem --format=csv | tee "$out/device.txt"
    python3 -c 'import torch, triton, transformers; print("torch", torch.__version__, "triton", triton.__version__,
"transformers", transformers.__version__)' | tee -a "$out/device.txt"
    if [ -z "${SKIP_CUDA_TEST:-}" ]; then
        timeout 300 python3 -m pytest -q -p no:cacheprovider tests/engine/triton/test_cuda_engine.py 2>&1 \
            | tee "$out/cuda_test.log" || echo "the CUDA engine test failed: see cuda_test.log"
    fi
    python3 bench/gpu.py --tokenizer "$VIVACE_TOKENIZER" --out "$out/gpu.json" "$@" 2>&1 | tee "$out/gpu.log"
    ;;
*)
    echo "usage: bash bench/gpu_device.sh prepare | run [bench/gpu.py flags]" >&2
    exit 2
    ;;
esac
