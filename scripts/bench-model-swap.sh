#!/usr/bin/env bash
# The model manager's swap costs on the CPU: time to first token of SmolLM2 when it is resident,
# and when it is on disk (unloaded: the request loads it); then throughput of requests that
# alternate between two models under a one-model budget (every request swaps) against the same
# requests to one model. The two models are the same GGUF under two ids. A second server adds
# --host-memory-budget: an evicted model keeps its weights and comes back with a new KV cache.
#
#   OUT=bench-results/model-swap scripts/bench-model-swap.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
OUT=${OUT:-bench-results/model-swap}
PORT=${PORT:-8321}
N=${N:-10}
mkdir -p "$OUT"
MODEL=$(ls ~/.cache/weir/models/SmolLM2-135M-Instruct.Q4_1.gguf)
start_weir "$PORT" "$OUT/server.log" --model "a=$MODEL" --model "b=$MODEL" \
  --max-loaded-models 1 --kv-cache-memory 256MiB
trap 'kill $SERVER 2>/dev/null || true' EXIT
url="http://127.0.0.1:$PORT"

# ttft MODEL: seconds until the whole answer of a 1-token completion (its first token) is back
ttft() {
  curl -s -o /dev/null -w '%{time_total}' "$url/v1/completions" \
    -H 'content-type: application/json' \
    -d "{\"model\":\"$1\",\"prompt\":\"Hello\",\"max_tokens\":1}"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

curl -s -X POST "$url/admin/models/a/load" >/dev/null
for _ in $(seq "$N"); do ttft a; echo; done | median >"$OUT/ttft_resident"
for _ in $(seq "$N"); do
  curl -s -X POST "$url/admin/models/a/unload" >/dev/null
  ttft a; echo
done | median >"$OUT/ttft_cold"

# 2 x N requests of 32 tokens: alternating a/b (a swap each) vs all to a
gen() {
  curl -s -o /dev/null "$url/v1/completions" -H 'content-type: application/json' \
    -d "{\"model\":\"$1\",\"prompt\":\"Once upon a time\",\"max_tokens\":32,\"ignore_eos\":true}"
}
t0=$(date +%s.%N)
for _ in $(seq "$N"); do gen a; gen a; done
t1=$(date +%s.%N)
for _ in $(seq "$N"); do gen a; gen b; done
t2=$(date +%s.%N)
one=$(echo "2 * $N * 32 / ($t1 - $t0)" | bc -l)
alt=$(echo "2 * $N * 32 / ($t2 - $t1)" | bc -l)
stats=$(curl -s "$url/admin/stats")
echo "$stats" >"$OUT/stats.json"
# the host tier: b's request evicts a (weights kept), a's request brings it back
kill $SERVER; wait $SERVER 2>/dev/null || true
start_weir "$PORT" "$OUT/server-host.log" --model "a=$MODEL" --model "b=$MODEL" \
  --max-loaded-models 1 --kv-cache-memory 256MiB --host-memory-budget 1GiB
for _ in $(seq "$N"); do
  ttft b >/dev/null
  ttft a; echo
done | median >"$OUT/ttft_host"
t3=$(date +%s.%N)
for _ in $(seq "$N"); do gen a; gen b; done
t4=$(date +%s.%N)
alt_host=$(echo "2 * $N * 32 / ($t4 - $t3)" | bc -l)
host_stats=$(curl -s "$url/admin/stats")

printf '| SmolLM2 Q4_1, CPU | value |\n|---|---|\n'
printf '| TTFT resident (median of %s) | %.1f ms |\n' "$N" "$(echo "$(cat "$OUT/ttft_resident") * 1000" | bc -l)"
printf '| TTFT cold, loaded from disk by the request (median of %s) | %.1f ms |\n' "$N" "$(echo "$(cat "$OUT/ttft_cold") * 1000" | bc -l)"
printf '| TTFT back from the host tier (median of %s) | %.1f ms |\n' "$N" "$(echo "$(cat "$OUT/ttft_host") * 1000" | bc -l)"
printf '| output tok/s, %s x 2 requests to one model | %.1f |\n' "$N" "$one"
printf '| output tok/s, %s x 2 requests alternating two models, one-model budget | %.1f |\n' "$N" "$alt"
printf '| the same, with --host-memory-budget 1GiB | %.1f |\n' "$alt_host"
echo "host tier loads: $(echo "$host_stats" | python3 -c 'import json,sys; d=json.load(sys.stdin); print({m["id"]: (m["loads"], m["host_loads"]) for m in d["models"]})')"
echo "loads/evictions: $(echo "$stats" | python3 -c 'import json,sys; d=json.load(sys.stdin); print({m["id"]: (m["loads"], m["evictions"]) for m in d["models"]})')"
