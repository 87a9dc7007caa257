#!/usr/bin/env bash
# Embeddings throughput: weir's /v1/embeddings against sentence-transformers on the same CPU, in
# one run (one after the other, never at once), on all-MiniLM-L6-v2 (weir fetches it by name
# from PyPI; sentence-transformers reads the same folder).
#   short: the 50 sentences of tests/openai_embeddings.py (~14 tokens each)
#   long:  passages of 240 tokens (close to the model's 256-token limit)
# each at batch 1 (one input per request / encode call, one client) and batch 64 (64 inputs per
# request / encode(batch_size=64)); weir also with 4 clients at batch 1. sentence-transformers
# runs with torch on as many threads as weir's compute pool (nproc).
#
#   PYTHON=target/test-venv/bin/python3 scripts/bench-embeddings.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-8141}
OUT=${OUT:-bench-results/embeddings}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
source scripts/common.sh
SERVER=
trap '[[ -n $SERVER ]] && kill $SERVER 2>/dev/null; true' EXIT
start_weir "$PORT" "$OUT/weir.log" --model all-MiniLM-L6-v2 --preload all-MiniLM-L6-v2
MODEL_DIR=${WEIR_CACHE_DIR:-$HOME/.cache/weir}/models/all-MiniLM-L6-v2
"$PYTHON" scripts/bench_embeddings.py "http://127.0.0.1:$PORT/v1" all-MiniLM-L6-v2 "$MODEL_DIR" \
  | tee "$OUT/summary.txt"
