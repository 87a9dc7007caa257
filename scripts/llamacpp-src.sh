#!/usr/bin/env bash
# Fetches llama.cpp's sources once, as vendored in the sdist of the PyPI package
# `llama-cpp-python` (its URL and sha256 from the index's PEP 691 JSON), and prints the folder of
# llama.cpp in it (`convert_hf_to_gguf.py`, `gguf-py/`, the C++ sources). Cached under
# $WEIR_LLAMACPP_DIR (default ~/.cache/weir/llamacpp). Used by scripts/build-llama-server.sh and
# by tests/hf_reference.rs (which converts Hugging Face folders to GGUF with llama.cpp's own
# converter).
#
#   scripts/llamacpp-src.sh                  # → ~/.cache/weir/llamacpp/0.3.36/src/vendor/llama.cpp
set -euo pipefail
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
DIR=${WEIR_LLAMACPP_DIR:-$HOME/.cache/weir/llamacpp}/$VERSION
INDEX=${PIP_INDEX_URL:-https://pypi.org/simple}
SRC=$DIR/src/vendor/llama.cpp
if [[ ! -f $SRC/convert_hf_to_gguf.py ]]; then
  mkdir -p "$DIR"
  # the sdist's URL and sha256, from the simple index's JSON form (PEP 691)
  read -r url sha < <(curl -sSf -H "Accept: application/vnd.pypi.simple.v1+json" \
    "${INDEX%/}/llama-cpp-python/" | python3 -c "
import json, sys
name = 'llama_cpp_python-$VERSION.tar.gz'
f = next(f for f in json.load(sys.stdin)['files'] if f['filename'] == name)
print(f['url'], f['hashes']['sha256'])")
  curl -sSfL -o "$DIR/sdist.tar.gz.partial" "$url"
  echo "$sha  $DIR/sdist.tar.gz.partial" | sha256sum -c - >/dev/null
  rm -rf "$DIR/src.partial"
  mkdir -p "$DIR/src.partial"
  tar -xzf "$DIR/sdist.tar.gz.partial" -C "$DIR/src.partial" --strip-components=1
  rm -rf "$DIR/src"
  mv "$DIR/src.partial" "$DIR/src"
  rm -f "$DIR/sdist.tar.gz.partial"
fi
echo "$SRC"
