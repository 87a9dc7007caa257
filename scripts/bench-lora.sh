#!/usr/bin/env bash
# What LoRA adapters cost: SmolLM2 served with 8 random rank-16 adapters on all seven projections
# (scripts/make_lora.py), `weir bench` at concurrency 8 and 32 with every request on the base
# model, every request on one adapter, and the requests spread over the 8 adapters in turn. One
# server, the three loads one after the other at each concurrency. Then a second server with
# `--max-cpu-loras CPU_LORAS` (default 4) runs the spread load: adapters read from disk and
# evicted as requests need them (its loads and evictions from /metrics end the summary).
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
spread=$(for i in $(seq 0 7); do printf 'lora-%s,' "$i"; done)
echo "| concurrency | load | output tok/s | TTFT p50 ms | ITL p50 ms |" | tee "$OUT/summary.md"
echo "|---|---|---|---|---|" | tee -a "$OUT/summary.md"
# run_load C LOAD MODEL: one `weir bench` on the server at 8181, its row in the summary
run_load() {
  $BIN bench --url http://127.0.0.1:8181 --model "$3" --concurrency "$1" --num-requests $((2 * $1)) \
    --prompt-tokens 128 --output-tokens 64 --output "$OUT/$2-c$1.json" >/dev/null
  "$PYTHON" -c 'import json, sys; s = json.load(open(sys.argv[1]))
assert s["errors"] == 0, s["errors"]
tps, ttft, itl = s["output_tokens_per_s"], s["ttft_ms"]["p50"], s["itl_ms"]["p50"]
print(f"| {sys.argv[2]} | {sys.argv[3]} | {tps:.1f} | {ttft:.0f} | {itl:.1f} |")' \
    "$OUT/$2-c$1.json" "$1" "$2" | tee -a "$OUT/summary.md"
}
start_weir 8181 "$OUT/weir.log" --model smol="$MODEL" --preload smol --lora-modules "${mods%,}"
trap 'kill $SERVER 2>/dev/null; true' EXIT
until curl -sf http://127.0.0.1:8181/ready >/dev/null; do sleep 0.5; done
for c in 8 32; do
  run_load "$c" base smol
  run_load "$c" one lora-0
  run_load "$c" spread "${spread%,}"
done
kill $SERVER; wait $SERVER 2>/dev/null || true
# the same spread with at most CPU_LORAS adapters read into the model (--max-cpu-loras): requests
# of the others wait for an idle adapter to be evicted and theirs read from disk
CPU_LORAS=${CPU_LORAS:-4}
start_weir 8181 "$OUT/weir-capped.log" --model smol="$MODEL" --preload smol --lora-modules "${mods%,}" \
  --max-cpu-loras "$CPU_LORAS"
until curl -sf http://127.0.0.1:8181/ready >/dev/null; do sleep 0.5; done
for c in 8 32; do
  run_load "$c" "spread-max-cpu-loras-$CPU_LORAS" "${spread%,}"
done
curl -sf http://127.0.0.1:8181/metrics | grep -E '^weir:lora_(loads|evictions)_total' | tee -a "$OUT/summary.md"
