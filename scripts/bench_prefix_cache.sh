#!/usr/bin/env bash
# Time to first token with a repeated system prompt, automatic prefix caching on vs off, side by
# side in one run: each server gets the same requests (a shared 1000-token prefix + 32 own tokens,
# 16 output tokens, concurrency 1), one server at a time.
#
#   scripts/bench_prefix_cache.sh        (PREFIX=1000 REQUESTS=8 PORT=8124 OUT=bench-results)
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-1000}
REQUESTS=${REQUESTS:-8}
PORT=${PORT:-8124}
OUT=${OUT:-bench-results}
mkdir -p "$OUT"
source scripts/common.sh
for mode in on off; do
  flags=()
  [ "$mode" = off ] && flags+=(--no-prefix-caching)
  start_weir "$PORT" "$OUT/server-prefix-$mode.log" "${flags[@]}"
  $BIN bench --url "http://127.0.0.1:$PORT" --concurrency 1 --num-requests "$REQUESTS" \
    --shared-prefix-tokens "$PREFIX" --prompt-tokens 32 --output-tokens 16 \
    --output "$OUT/prefix-$mode.json" >/dev/null
  kill $SERVER; wait $SERVER 2>/dev/null || true
  python3 -c "import json; s=json.load(open('$OUT/prefix-$mode.json')); print(f\"prefix caching $mode: ttft p50={s['ttft_ms']['p50']:8.1f}ms mean={s['ttft_ms']['mean']:8.1f}ms p99={s['ttft_ms']['p99']:8.1f}ms errors={s['errors']}\")"
done
