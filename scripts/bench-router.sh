#!/usr/bin/env bash
# weir replicas behind vllm-router (PyPI `vllm-router`), on loopback: does cache-aware routing
# raise the prefix-cache hit rate and cut TTFT? 3 weir replicas serve SmolLM2 (KV for about half
# of the system prompts each); a shared-prefix workload (10 system prompts of ~1,000 tokens, short
# user questions, 16 clients) runs through the router under round_robin, cache_aware, then
# kv_aware (the router follows each replica's KV cache events, `--kv-events-endpoint`, and
# tokenizes prompts itself with a tokenizer folder written from the GGUF by transformers). The
# hit rate sums weir:prefix_cache_hits_total / queries_total over the replicas (each policy on
# fresh replicas); TTFT p50/p99 from the streamed requests.
#
#   POLICIES="cache_aware kv_aware" scripts/bench-router.sh   # a subset
#
#   PYTHON=target/test-venv/bin/python3 ROUTER=/path/to/vllm-router scripts/bench-router.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench-results/router}
PYTHON=${PYTHON:-python3}
ROUTER=${ROUTER:-$(dirname "$PYTHON")/vllm-router}
mkdir -p "$OUT"
source scripts/common.sh
MODEL=${WEIR_CACHE_DIR:-$HOME/.cache/weir}/models/SmolLM2-135M-Instruct.Q4_1.gguf
TOKENIZER=$OUT/tokenizer
if [[ ! -f $TOKENIZER/tokenizer.json ]]; then
  "$PYTHON" scripts/tokenizer_folder.py "$MODEL" "$TOKENIZER"
fi
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill $p 2>/dev/null; done; true' EXIT
for policy in ${POLICIES:-round_robin cache_aware kv_aware}; do
  urls=()
  events=()
  for i in 0 1 2; do
    port=$((8171 + i))
    extra=()
    if [[ $policy == kv_aware ]]; then
      extra=(--kv-events-endpoint "tcp://*:$((5557 + i))")
      events+=(--kv-event-source "http://127.0.0.1:$port=tcp://127.0.0.1:$((5557 + i))")
    fi
    start_weir "$port" "$OUT/weir-$policy-$i.log" --model smol="$MODEL" --kv-cache-memory 256MiB \
      --max-model-len 2048 "${extra[@]}"
    PIDS+=("$SERVER")
    urls+=("http://127.0.0.1:$port")
  done
  if [[ $policy == kv_aware ]]; then
    events+=(--kv-event-model smol --kv-event-block-size 16)
  fi
  VLLM_ROUTER_TOKENIZER=$TOKENIZER "$ROUTER" --host 127.0.0.1 --port 8170 --policy "$policy" \
    --prometheus-port 8190 --worker-urls "${urls[@]}" "${events[@]}" >"$OUT/router-$policy.log" 2>&1 &
  PIDS+=($!)
  wait_healthy 8170 "$OUT/router-$policy.log"
  "$PYTHON" scripts/bench_router.py "http://127.0.0.1:8170/v1" smol "$policy" "${urls[@]}" \
    | tee -a "$OUT/summary.txt"
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  PIDS=()
done
