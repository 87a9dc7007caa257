#!/usr/bin/env bash
# Gemma 3 270M (5 sliding-window layers to 1 global) with the hybrid KV cache on and off
# (`--disable-hybrid-kv-cache-manager`), side by side in one run, under the same KV memory:
# each server gets the same long prompts at once (`weir bench`, token ids). Printed per mode:
# the KV blocks and full-length sequences the pool holds (the server's "model loaded" line),
# the most requests running at once and the preemptions (polled from /metrics), and the
# bench's TTFT and output throughput.
#
#   scripts/bench-hybrid-kv.sh   (KV=256MiB PROMPT=4000 OUTPUT=64 CONC=4 PORT=8131 OUT=bench-results)
set -euo pipefail
cd "$(dirname "$0")/.."
KV=${KV:-256MiB}
PROMPT=${PROMPT:-4000}
OUTPUT=${OUTPUT:-64}
CONC=${CONC:-4}
PORT=${PORT:-8131}
OUT=${OUT:-bench-results}
mkdir -p "$OUT"
source scripts/common.sh

metric() { # metric NAME: its value on the server (the first sample)
  curl -sf "http://127.0.0.1:$PORT/metrics" | awk -v n="$1" 'index($0, n) == 1 { print $2; exit }'
}

for mode in hybrid one-group; do
  flags=(--model gemma3-270m --kv-cache-memory "$KV" --max-model-len 8192)
  [ "$mode" = one-group ] && flags+=(--disable-hybrid-kv-cache-manager)
  log="$OUT/server-hybrid-kv-$mode.log"
  start_weir "$PORT" "$log" "${flags[@]}"
  (
    while true; do
      r=$(metric 'weir:num_requests_running' || echo 0)
      echo "${r%.*}"
      sleep 0.2
    done
  ) >"$OUT/running-$mode.txt" &
  poller=$!
  $BIN bench --url "http://127.0.0.1:$PORT" --model gemma3-270m --concurrency "$CONC" \
    --num-requests "$CONC" --prompt-tokens "$PROMPT" --output-tokens "$OUTPUT" \
    --output "$OUT/hybrid-kv-$mode.json" >/dev/null
  kill $poller
  peak=$(sort -n "$OUT/running-$mode.txt" | tail -1)
  preempted=$(metric 'weir:num_preemptions_total')
  kill $SERVER
  wait $SERVER 2>/dev/null || true
  loaded=$(sed 's/\x1b\[[0-9;]*m//g' "$log" |
    grep -o 'kv_blocks=[0-9]* kv_groups=[0-9]* kv_mib=[0-9]* max_model_len=[0-9]* full_length_seqs=[0-9]*' |
    tail -1 || true)
  python3 - "$OUT/hybrid-kv-$mode.json" "$mode" "$loaded" "$peak" "$preempted" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
mode, loaded, peak, preempted = sys.argv[2:]
print(f"{mode:9s}: {loaded}; running at once {peak}, preemptions {preempted}; "
      f"ttft p50 {s['ttft_ms']['p50'] / 1000:.2f} s max {s['ttft_ms']['max'] / 1000:.2f} s; "
      f"{s['output_tokens_per_s']:.1f} output tok/s; {s['duration_s']:.1f} s; errors {s['errors']}")
EOF
done
