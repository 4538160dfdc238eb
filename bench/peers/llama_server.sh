#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` and `llama-bench` (the CPU peer of the benchmarks) from the llama.cpp
# sources vendored in the llama-cpp-python sdist, once, into a cache outside the repository.
#
#   bash bench/peers/llama_server.sh          # prints the directory holding llama-server and llama-bench
#
# VIVACE_PEER_CACHE overrides the cache (default ~/.cache/vivace/llama.cpp); JOBS the make parallelism (2).
# A second call finds the binaries and returns at once.
set -euo pipefail
VERSION=0.3.36
cache="${VIVACE_PEER_CACHE:-$HOME/.cache/vivace/llama.cpp}/$VERSION"
bin="$cache/build/bin"
if [ -x "$bin/llama-server" ] && [ -x "$bin/llama-bench" ]; then
    echo "$bin"
    exit 0
fi
here="$(cd "$(dirname "$0")/../.." && pwd)"
python="${PYTHON:-$here/.venv/bin/python}"
mkdir -p "$cache"
if [ ! -f "$cache/src/CMakeLists.txt" ]; then
    echo "llama_server.sh: fetching the llama-cpp-python $VERSION sdist" >&2
    "$python" -m pip download --quiet --disable-pip-version-check --no-binary llama-cpp-python --no-deps \
        --dest "$cache/sdist" "llama-cpp-python==$VERSION"
    rm -rf "$cache/unpacked" && mkdir -p "$cache/unpacked"
    tar -xzf "$cache"/sdist/llama_cpp_python-*.tar.gz -C "$cache/unpacked"
    rm -rf "$cache/src"
    mv "$cache"/unpacked/llama_cpp_python-*/vendor/llama.cpp "$cache/src"
    rm -rf "$cache/unpacked"
fi
echo "llama_server.sh: building llama-server and llama-bench in $cache/build (several minutes)" >&2
# GGML_NATIVE: the peer gets every instruction set this CPU has, as a user's own build would.
nice -n 19 cmake -S "$cache/src" -B "$cache/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DBUILD_SHARED_LIBS=OFF >&2
nice -n 19 cmake --build "$cache/build" -j "${JOBS:-2}" --target llama-server llama-bench >&2
echo "$bin"
