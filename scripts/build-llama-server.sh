#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` (CPU only, Release, -march=native) once, from the llama.cpp
# sources vendored in the sdist of the PyPI package `llama-cpp-python` (scripts/llamacpp-src.sh),
# and prints its path. cmake comes from its PyPI wheel. Cached under $WEIR_LLAMACPP_DIR (default ~/.cache/weir/llamacpp).
#
#   scripts/build-llama-server.sh            # → .../llama-server
#   LLAMA_CPP_PYTHON_VERSION=0.3.36 scripts/build-llama-server.sh
set -euo pipefail
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
DIR=${WEIR_LLAMACPP_DIR:-$HOME/.cache/weir/llamacpp}/$VERSION
BIN=$DIR/build/bin/llama-server
if [[ -x $BIN ]]; then
  echo "$BIN"
  exit 0
fi
mkdir -p "$DIR"
log=$DIR/build.log
{
  SRC=$("$(dirname "$0")/llamacpp-src.sh")
  CMAKE=$(command -v cmake || true)
  if [[ -z $CMAKE ]]; then
    python3 -m venv "$DIR/venv"
    "$DIR/venv/bin/pip" install --quiet --disable-pip-version-check cmake ninja
    CMAKE=$DIR/venv/bin/cmake
    export PATH=$DIR/venv/bin:$PATH
  fi
  "$CMAKE" -S "$SRC" -B "$DIR/build" -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_OPENMP=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
    $(command -v ninja >/dev/null && echo -G Ninja)
  "$CMAKE" --build "$DIR/build" --target llama-server -j "$(nproc)"
} >"$log" 2>&1 || {
  tail -40 "$log" >&2
  exit 1
}
echo "$BIN"
