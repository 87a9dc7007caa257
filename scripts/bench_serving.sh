#!/usr/bin/env bash
# Serving benchmark: starts `weir serve` (release build) with the default model, then runs
# `weir bench` at each concurrency (128-token prompts, 128 output tokens, ignore_eos) and prints
# one JSON summary per level. Extra arguments go to `weir serve`.
#
#   scripts/bench_serving.sh [serve flags...]
#   CONCURRENCY="1 8 32" REQUESTS_PER_WORKER=4 PORT=8123 OUT=bench-results scripts/bench_serving.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CONCURRENCY=${CONCURRENCY:-"1 8 32"}
REQUESTS_PER_WORKER=${REQUESTS_PER_WORKER:-4}
PORT=${PORT:-8123}
OUT=${OUT:-bench-results}
mkdir -p "$OUT"
source scripts/common.sh
start_weir "$PORT" "$OUT/server.log" "$@"
trap 'kill $SERVER 2>/dev/null || true' EXIT
# one short warm-up request; every level below draws its own prompts (--seed), so the prefix
# cache never serves one level's prompts to the next
$BIN bench --url "http://127.0.0.1:$PORT" --concurrency 1 --num-requests 1 --output-tokens 8 \
  --seed 1000000 >/dev/null
for c in $CONCURRENCY; do
  n=$((c * REQUESTS_PER_WORKER))
  $BIN bench --url "http://127.0.0.1:$PORT" --concurrency "$c" --num-requests "$n" \
    --prompt-tokens 128 --output-tokens 128 --seed "$c" --output "$OUT/c$c.json" >/dev/null
  python3 -c "import json,sys; s=json.load(open('$OUT/c$c.json')); print(f\"c={s['concurrency']:>3} req={s['num_requests']:>4} err={s['errors']} tok/s={s['output_tokens_per_s']:8.1f} ttft_p50={s['ttft_ms']['p50']:8.1f}ms itl_p50={s['itl_ms']['p50']:6.1f}ms itl_p99={s['itl_ms']['p99']:6.1f}ms itl_max={s['itl_ms']['max']:6.1f}ms\")"
done
