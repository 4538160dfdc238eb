#!/usr/bin/env bash
# The GPU checks as one prepared run on a lent GPU machine (which has torch, triton and transformers,
# but neither the packaged 98 MB model nor gguf nor llguidance): the CUDA end-to-end test, then bench/gpu.py.
#
#   bash bench/gpu_device.sh prepare              # here: .device/ gets the tokenizer (1.8 MB) and the gguf
#                                                 # and llguidance wheels (for the device's Python 3.12)
#   bash bench/gpu_device.sh run [gpu.py flags]   # there, carrying .device; logs and JSON go to $OUT
#   bash bench/gpu_device.sh profile [gpu_profile.py flags]   # there: where a decode step's time goes
#   bash bench/gpu_device.sh all                  # there: the CUDA test, the profile of the 1B and 8B
#                                                 # shapes at 1 and 128 sequences, 8B single stream, 1B in
#                                                 # full; each part has its own time limit, 590 s in all
#
# A whole bench/gpu.py run does not fit one 10-minute command (transformers alone took 189 s offline on
# the 135M shape in static batches of 64): split it by shape, e.g.
#   run --models llama-3-8b --part single    then    SKIP_CUDA_TEST=1 ... run --models llama-3.2-1b --hf-batch 256
set -euo pipefail
cd "$(dirname "$0")/.."

# There: the carried wheels on the path, the tokenizer named, the device described in $out/device.txt.
device_env() {
    out="${OUT:-bench/results}"
    mkdir -p "$out"
    python3 -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device/*.whl
    export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 VIVACE_TOKENIZER="$PWD/.device/tokenizer.gguf"
    nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.sm,clocks.mem --format=csv | tee "$out/device.txt"
    python3 -c 'import torch, triton, transformers; print("torch", torch.__version__, "triton", triton.__version__,
"transformers", transformers.__version__)' | tee -a "$out/device.txt"
}

# The CUDA end-to-end test under a time limit (seconds); a failure is reported, not fatal.
cuda_test() {
    timeout "$1" python3 -m pytest -q -p no:cacheprovider tests/engine/triton/test_cuda_engine.py 2>&1 \
        | tee "$out/cuda_test.log" || echo "the CUDA engine test failed: see cuda_test.log"
}

# bench_run NAME SECONDS SCRIPT [flags]: bench/SCRIPT with the tokenizer, under a time limit, its JSON
# and log written as $out/NAME.json and $out/NAME.log; a run cut short is reported, not fatal.
bench_run() {
    local name=$1 limit=$2 script=$3
    shift 3
    timeout "$limit" python3 "bench/$script" --tokenizer "$VIVACE_TOKENIZER" --out "$out/$name.json" "$@" 2>&1 \
        | tee "$out/$name.log" || echo "bench/$script $* did not finish: see $name.log"
}

case "${1:-}" in
prepare)
    py="${PYTHON:-.venv/bin/python}"
    mkdir -p .device
    "$py" -m vivace.engine.loaders.tokenizer_file .device/tokenizer.gguf
    rm -f .device/*.whl
    for package in gguf llguidance; do
        version="$("$py" -c "import importlib.metadata as m; print(m.version('$package'))")"
        "$py" -m pip download --quiet --no-deps --only-binary=:all: -d .device --python-version 3.12 \
            --implementation cp --platform manylinux_2_31_x86_64 --platform manylinux2014_x86_64 \
            "$package==$version"
    done
    du -sh .device
    ;;
run)
    shift
    device_env
    if [ -z "${SKIP_CUDA_TEST:-}" ]; then cuda_test 300; fi
    python3 bench/gpu.py --tokenizer "$VIVACE_TOKENIZER" --out "$out/gpu.json" "$@" 2>&1 | tee "$out/gpu.log"
    ;;
profile)
    shift
    device_env
    python3 bench/gpu_profile.py --tokenizer "$VIVACE_TOKENIZER" --out "$out/profile.json" "$@" 2>&1 \
        | tee "$out/profile.log"
    ;;
all)
    device_env
    cuda_test 80
    bench_run profile 150 gpu_profile.py --models llama-3.2-1b,llama-3-8b --batch 1 --batch 128
    bench_run gpu_8b 100 gpu.py --models llama-3-8b --part single
    bench_run gpu_1b 260 gpu.py --models llama-3.2-1b --hf-batch 256
    ;;
*)
    echo "usage: bash bench/gpu_device.sh prepare | run [bench/gpu.py flags] | profile [bench/gpu_profile.py flags] | all" >&2
    exit 2
    ;;
esac
