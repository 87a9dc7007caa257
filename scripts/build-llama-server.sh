#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` (CPU only, Release, -march=native) once, from the llama.cpp
# sources vendored in the sdist of the PyPI package `llama-cpp-python`, and prints its path.
# The sdist file is fetched directly (its URL and sha256 from the index's PEP 691 JSON); cmake
# comes from its PyPI wheel. Cached under $WEIR_LLAMACPP_DIR (default ~/.cache/weir/llamacpp).
#
#   scripts/build-llama-server.sh            # → .../llama-server
#   LLAMA_CPP_PYTHON_VERSION=0.3.36 scripts/build-llama-server.sh
set -euo pipefail
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
DIR=${WEIR_LLAMACPP_DIR:-$HOME/.cache/weir/llamacpp}/$VERSION
INDEX=${PIP_INDEX_URL:-https://pypi.org/simple}
BIN=$DIR/build/bin/llama-server
if [[ -x $BIN ]]; then
  echo "$BIN"
  exit 0
fi
mkdir -p "$DIR"
log=$DIR/build.log
{
  if [[ ! -d $DIR/src ]]; then
    # the sdist's URL and sha256, from the simple index's JSON form (PEP 691)
    read -r url sha < <(curl -sSf -H "Accept: application/vnd.pypi.simple.v1+json" \
      "${INDEX%/}/llama-cpp-python/" | python3 -c "
import json, sys
name = 'llama_cpp_python-$VERSION.tar.gz'
f = next(f for f in json.load(sys.stdin)['files'] if f['filename'] == name)
print(f['url'], f['hashes']['sha256'])")
    curl -sSfL -o "$DIR/sdist.tar.gz" "$url"
    echo "$sha  $DIR/sdist.tar.gz" | sha256sum -c -
    mkdir -p "$DIR/src"
    tar -xzf "$DIR/sdist.tar.gz" -C "$DIR/src" --strip-components=1
  fi
  CMAKE=$(command -v cmake || true)
  if [[ -z $CMAKE ]]; then
    python3 -m venv "$DIR/venv"
    "$DIR/venv/bin/pip" install --quiet --disable-pip-version-check cmake ninja
    CMAKE=$DIR/venv/bin/cmake
    export PATH=$DIR/venv/bin:$PATH
  fi
  "$CMAKE" -S "$DIR/src/vendor/llama.cpp" -B "$DIR/build" -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_OPENMP=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
    $(command -v ninja >/dev/null && echo -G Ninja)
  "$CMAKE" --build "$DIR/build" --target llama-server -j "$(nproc)"
} >"$log" 2>&1 || {
  tail -40 "$log" >&2
  exit 1
}
echo "$BIN"
