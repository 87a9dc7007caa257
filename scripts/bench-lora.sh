#!/usr/bin/env bash
# What LoRA adapters cost: SmolLM2 served with 8 random rank-16 adapters on all seven projections
# (scripts/make_lora.py), `weir bench` at concurrency 8 and 32 with every request on the base
# model, every request on one adapter, and the requests spread over the 8 adapters in turn. One
# server, the three loads one after the other at each concurrency.
#
#   PYTHON=target/test-venv/bin/python3 scripts/bench-lora.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench-results/lora}
PYTHON=${PYTHON:-python3}
RANK=${RANK:-16}
mkdir -p "$OUT"
source scripts/common.sh
MODEL=${WEIR_CACHE_DIR:-$HOME/.cache/weir}/models/SmolLM2-135M-Instruct.Q4_1.gguf
[[ -d $OUT/adapters/lora-7 ]] || "$PYTHON" scripts/make_lora.py "$OUT/adapters" 8 "$RANK"
mods=$(for i in $(seq 0 7); do printf 'lora-%s=%s/adapters/lora-%s,' "$i" "$OUT" "$i"; done)
start_weir 8181 "$OUT/weir.log" --model smol="$MODEL" --preload smol --lora-modules "${mods%,}"
trap 'kill $SERVER 2>/dev/null; true' EXIT
until curl -sf http://127.0.0.1:8181/ready >/dev/null; do sleep 0.5; done
spread=$(for i in $(seq 0 7); do printf 'lora-%s,' "$i"; done)
echo "| concurrency | load | output tok/s | TTFT p50 ms | ITL p50 ms |" | tee "$OUT/summary.md"
echo "|---|---|---|---|---|" | tee -a "$OUT/summary.md"
for c in 8 32; do
  for load in base one spread; do
    case $load in
      base) model=smol ;;
      one) model=lora-0 ;;
      spread) model=${spread%,} ;;
    esac
    $BIN bench --url http://127.0.0.1:8181 --model "$model" --concurrency "$c" --num-requests $((2 * c)) \
      --prompt-tokens 128 --output-tokens 64 --output "$OUT/$load-c$c.json" >/dev/null
    "$PYTHON" -c 'import json, sys; s = json.load(open(sys.argv[1]))
assert s["errors"] == 0, s["errors"]
tps, ttft, itl = s["output_tokens_per_s"], s["ttft_ms"]["p50"], s["itl_ms"]["p50"]
print(f"| {sys.argv[2]} | {sys.argv[3]} | {tps:.1f} | {ttft:.0f} | {itl:.1f} |")' \
      "$OUT/$load-c$c.json" "$c" "$load" | tee -a "$OUT/summary.md"
  done
done
