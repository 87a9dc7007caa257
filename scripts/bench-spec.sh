#!/usr/bin/env bash
# Speculative decoding by prompt lookup (`--speculative-config`, ngram) on the default model,
# on vs off side by side in one run, one server at a time:
#   1. an editing-style load where drafts match: chat requests to repeat a paragraph of
#      README.md (scripts/bench_spec.py), at concurrency 1 and 8;
#   2. loads where they match less: short stories inspired by the same paragraphs (new text), and
#      `weir bench` on random token prompts (whose greedy output often loops).
# Each mode's answers to load 1 are compared (greedy: they must be the same).
#
#   scripts/bench-spec.sh   (CONCS="1 8" SPEC='{"method":"ngram",...}' REQUESTS=16 PORT=8133 OUT=bench-results)
set -euo pipefail
cd "$(dirname "$0")/.."
SPEC=${SPEC:-'{"method": "ngram", "num_speculative_tokens": 5, "prompt_lookup_min": 2, "prompt_lookup_max": 4}'}
REQUESTS=${REQUESTS:-16}
PORT=${PORT:-8133}
OUT=${OUT:-bench-results}
mkdir -p "$OUT"
source scripts/common.sh
MODEL=SmolLM2-135M-Instruct
for mode in off on; do
  flags=()
  [ "$mode" = on ] && flags+=(--speculative-config "$SPEC")
  start_weir "$PORT" "$OUT/server-spec-$mode.log" "${flags[@]}"
  for c in ${CONCS:-1 8}; do
    printf 'speculation %-3s repeat  ' "$mode"
    python3 scripts/bench_spec.py "http://127.0.0.1:$PORT" "$MODEL" "$c" "$REQUESTS" README.md \
      "$OUT/spec-$mode-c$c.json"
    printf 'speculation %-3s story   ' "$mode"
    TASK=story python3 scripts/bench_spec.py "http://127.0.0.1:$PORT" "$MODEL" "$c" "$REQUESTS" \
      README.md "$OUT/spec-story-$mode-c$c.json"
  done
  for c in ${CONCS:-1 8}; do
    $BIN bench --url "http://127.0.0.1:$PORT" --model "$MODEL" --concurrency "$c" \
      --num-requests $((2 * c + 2)) --prompt-tokens 256 --output-tokens 128 \
      --output "$OUT/spec-random-$mode-c$c.json" >/dev/null
    python3 -c "import json; s=json.load(open('$OUT/spec-random-$mode-c$c.json')); print(f\"speculation $mode random  c=$c: {s['output_tokens_per_s']:.1f} output tok/s, itl p50 {s['itl_ms']['p50']:.1f} ms\")"
  done
  curl -sf "http://127.0.0.1:$PORT/metrics" | grep '^weir:spec_decode_num_\(draft\|accepted\)_tokens_total' || true
  kill $SERVER
  wait $SERVER 2>/dev/null || true
done
for c in ${CONCS:-1 8}; do
  for load in "" story-; do
    python3 -c "import json; a=json.load(open('$OUT/spec-${load}off-c$c.json'))['answers']; b=json.load(open('$OUT/spec-${load}on-c$c.json'))['answers']; print('${load:-repeat-} c=$c answers identical:', a == b)"
  done
done
