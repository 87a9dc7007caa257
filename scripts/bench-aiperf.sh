#!/usr/bin/env bash
# NVIDIA's aiperf (PyPI `aiperf`, a benchmark client weir did not write) against weir, beside
# `weir bench` on the same load: streamed /v1/completions, 128-token prompts, 64 output tokens
# (ignore_eos), at each concurrency, 4 requests per worker. aiperf gets a tokenizer folder built
# offline from the served GGUF (scripts/tokenizer_folder.py) and counts tokens as the server
# reports them (--use-server-token-count). Prints output tok/s, TTFT p50 and ITL p50 of both.
#
#   scripts/bench-aiperf.sh
#   CONCURRENCY="1 8 32" OUT=bench-results/aiperf scripts/bench-aiperf.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CONCURRENCY=${CONCURRENCY:-"1 8"}
PORT=${PORT:-8196}
OUT=${OUT:-bench-results/aiperf}
AIPERF_VERSION=${AIPERF_VERSION:-0.13.0}
MODEL=${MODEL:-${WEIR_CACHE_DIR:-$HOME/.cache/weir}/models/SmolLM2-135M-Instruct.Q4_1.gguf}
PYTHON=${PYTHON:-target/test-venv/bin/python3}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
VENV=target/aiperf-venv
if [[ ! -x $VENV/bin/aiperf ]]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "aiperf==$AIPERF_VERSION"
fi
[[ -f $OUT/tokenizer/tokenizer.json ]] || "$PYTHON" scripts/tokenizer_folder.py "$MODEL" "$OUT/tokenizer"
source scripts/common.sh
start_weir "$PORT" "$OUT/weir.log" --model smol="$MODEL" --preload smol
trap 'kill $SERVER 2>/dev/null; true' EXIT
until curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null; do sleep 0.5; done
for c in $CONCURRENCY; do
  n=$((4 * c))
  (cd "$OUT" && "$OLDPWD/$VENV/bin/aiperf" profile --model smol --url "http://127.0.0.1:$PORT" \
    --endpoint-type completions --streaming --tokenizer "$OUT/tokenizer" --concurrency "$c" \
    --request-count "$n" --synthetic-input-tokens-mean 128 --synthetic-input-tokens-stddev 0 \
    --output-tokens-mean 64 --output-tokens-stddev 0 --extra-inputs ignore_eos:true \
    --use-server-token-count --random-seed "$c" --ui none --artifact-dir "$OUT/aiperf-c$c" \
    >"$OUT/aiperf-c$c.log" 2>&1)
  $BIN bench --url "http://127.0.0.1:$PORT" --model smol --concurrency "$c" --num-requests "$n" \
    --prompt-tokens 128 --output-tokens 64 --seed "$c" --output "$OUT/weir-c$c.json" >/dev/null
done
"$PYTHON" - "$OUT" "$CONCURRENCY" <<'EOF'
import json, sys
out, levels = sys.argv[1], sys.argv[2].split()
print("| concurrency | metric | weir bench | aiperf | aiperf / weir bench |")
print("|---|---|---|---|---|")
for c in levels:
    w = json.load(open(f"{out}/weir-c{c}.json"))
    a = json.load(open(f"{out}/aiperf-c{c}/profile_export_aiperf.json"))
    rows = [
        ("output tok/s", w["output_tokens_per_s"], a["output_token_throughput"]["avg"]),
        ("TTFT p50 (ms)", w["ttft_ms"]["p50"], a["time_to_first_token"]["p50"]),
        ("ITL p50 (ms)", w["itl_ms"]["p50"], a["inter_token_latency"]["p50"]),
    ]
    for name, wv, av in rows:
        print(f"| {c} | {name} | {wv:.1f} | {av:.1f} | {av / wv:.2f} |")
EOF
