#!/usr/bin/env bash
# Does a running batch slow interactive traffic? weir serves SmolLM2; 8 concurrent streamed
# chat requests (3 rounds) measure time to first token (TTFT) alone, then again while a
# 500-line completions batch (Batch API, 32 tokens each) runs; also the batch's own lines/s.
#
#   PYTHON=target/test-venv/bin/python3 scripts/bench-batch.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-8161}
OUT=${OUT:-bench-results/batch}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
source scripts/common.sh
SERVER=
CACHE=$(mktemp -d)
trap '[[ -n $SERVER ]] && kill $SERVER 2>/dev/null; rm -rf "$CACHE"; true' EXIT
MODEL=${WEIR_CACHE_DIR:-$HOME/.cache/weir}/models/SmolLM2-135M-Instruct.Q4_1.gguf
start_weir "$PORT" "$OUT/weir.log" --model smol="$MODEL" --cache-dir "$CACHE"
"$PYTHON" scripts/bench_batch.py "http://127.0.0.1:$PORT/v1" smol | tee "$OUT/summary.txt"
