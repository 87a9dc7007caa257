#!/usr/bin/env bash
# Issue 12's throughput table on a lent H100/H200, one model shape per run (each under ~8
# minutes; the binaries come from scripts/build-cuda.sh here, as for scripts/gpu-check.sh):
#
#   device tool:  run(command="bash scripts/gpu-bench.sh 1b", carry=["target/cuda-dist"], timeout_s=540)
#                 run(command="bash scripts/gpu-bench.sh 8b", carry=["target/cuda-dist"], timeout_s=540)
#
# Everything in one run, so ratios compare like with like:
#   1. the card, and its device-to-device copy bandwidth (PyTorch; bytes read + written);
#   2. weir (`--load-format dummy`, bf16, weir's attention kernels) under `weir bench`: streaming
#      /v1/completions, 128-token prompts, 128 output tokens, at each concurrency of the shape
#      (1b: 1, 32, 128, 256; 8b: 1, 64, 256); after each, the engine's time by step phase from
#      /metrics (forward = the host launching kernels, sample = waiting for them); for 1b also
#      concurrency 32 with `--no-fused-kernels` (the candle ops), concurrency 1 and 32 with
#      `--cuda-graphs` (decode steps replayed from captured graphs), and GPU time by kernel over
#      ~1,500 launches of concurrency-32 decode steps under ncu (PROFILE=0 skips it);
#   3. single-stream decode (1 / mean ITL at concurrency 1) against the memory-bandwidth bound
#      (weight bytes per token over the copy bandwidth of step 1);
#   4. the same loads through the machine's PyTorch + transformers (scripts/bench-transformers.py:
#      `generate` batch 1 and static batches, `generate_batch` continuous batching).
# Output: the table on stdout and in $OUT/table.txt, every JSON beside it.
# ATTENTION=tensor runs candle's ops for attention instead of weir's kernels.
# A dry run of the plumbing without a GPU (tiny shape, the CPU build, a PyTorch venv):
#   DEVICE=cpu ATTENTION=auto WEIR_BIN=target/release/weir PYTHON=/path/venv/bin/python \
#     bash scripts/gpu-bench.sh path/to/tiny/config.json
set -uo pipefail
cd "$(dirname "$0")/.."
SHAPE=${1:-1b}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
ATTENTION=${ATTENTION:-cuda}
DEVICE=${DEVICE:-cuda}
PYTHON=${PYTHON:-python3}
DTYPE=bf16
[ "$DEVICE" = cpu ] && DTYPE=f32
case "$SHAPE" in
  1b) CFG=benches/shapes/llama-3.2-1b.json; CONCS="1 32 128 256"; HF_BATCHES=1,32,128; HF_CONT=128 ;;
  8b) CFG=benches/shapes/llama-3.1-8b.json; CONCS="1 64 256"; HF_BATCHES=1,128; HF_CONT=128 ;;
  qwen3-8b) CFG=benches/shapes/qwen3-8b.json; CONCS="1 64 256"; HF_BATCHES=1,128; HF_CONT=128 ;;
  gemma3-4b) CFG=benches/shapes/gemma-3-4b.json; CONCS="1 64 256"; HF_BATCHES=1,128; HF_CONT=128 ;;
  # mixtures of experts (weir's tensor path: index_select, per-expert GEMMs, index_add); the
  # Qwen3 one fits an H100 (61 GB of bf16 weights), Mixtral needs an H200 (93 GB)
  qwen3-30b-a3b) CFG=benches/shapes/qwen3-30b-a3b.json; CONCS="1 64"; HF_BATCHES=1,64; HF_CONT=64 ;;
  mixtral-8x7b) CFG=benches/shapes/mixtral-8x7b.json; CONCS="1 64"; HF_BATCHES=1,64; HF_CONT=64 ;;
  *.json) CFG=$SHAPE; CONCS="1 4"; HF_BATCHES=1,4; HF_CONT=8 ;;
  *) echo "usage: $0 1b|8b|qwen3-8b|gemma3-4b|qwen3-30b-a3b|mixtral-8x7b|CONFIG.json"; exit 2 ;;
esac
. scripts/gpu-common.sh
if [ -n "${WEIR_BIN:-}" ]; then cp "$WEIR_BIN" "$BIN/weir"; else gpu_binaries weir; fi
TABLE="$OUT/table.txt"
: > "$TABLE"
say() { echo "$*" | tee -a "$TABLE"; }
say "== weir $(git rev-parse --short HEAD 2>/dev/null || echo '?') $SHAPE ($CFG), attention $ATTENTION, $(date -u +%F)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | tee -a "$TABLE"

echo "== 1. copy bandwidth"
BW=$(timeout 60 "$PYTHON" - "$DEVICE" <<'PY'
import sys, time, torch
dev = sys.argv[1]
n = 1 << (30 if dev == "cuda" else 26)  # bf16 elements: 2 GiB per buffer on the GPU
a = torch.empty(n, dtype=torch.bfloat16, device=dev); b = torch.empty_like(a)
sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
for _ in range(3): b.copy_(a)
sync(); t = time.perf_counter()
for _ in range(10): b.copy_(a)
sync()
print(f"{2 * 2 * n * 10 / (time.perf_counter() - t) / 1e9:.0f}")
PY
)
say "device-to-device copy: ${BW:-?} GB/s (read + write)"
WEIGHT_GB=$("$PYTHON" - "$CFG" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
h, i, l, v = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
d = c.get("head_dim", h // c["num_attention_heads"])
q, kv = c["num_attention_heads"] * d, c["num_key_value_heads"] * d
# bytes one decode token reads: every layer, the final norm and the LM head (one embedding row)
per_layer = h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h
print(f"{2 * (l * per_layer + h + v * h) / 1e9:.4g}")
PY
)
say "weights read per decode token (bf16): $WEIGHT_GB GB"
MAX_TOKEN_ID=$(python3 -c "import json,sys; print(min(128000, json.load(open(sys.argv[1]))['vocab_size']))" "$CFG")

serve() {  # serve PORT LOG [extra flags]: starts weir, waits for /health; 1 if it died
  local port=$1 log=$2; shift 2
  "$BIN/weir" serve --model m="$CFG" --load-format dummy --device "$DEVICE" --dtype "$DTYPE" \
    --attention-backend "$ATTENTION" --max-model-len 2048 --port "$port" "$@" > "$log" 2>&1 &
  PID=$!
  for _ in $(seq 180); do
    curl -sf "http://127.0.0.1:$port/health" > /dev/null && return 0
    kill -0 $PID 2>/dev/null || break
    sleep 1
  done
  echo "weir did not start:"; grep -iE "error|panic" "$log" | head -5
  return 1
}

phases() {  # phases PORT FILE: saves /metrics; with a second FILE prints the phase shares between
  curl -sf "http://127.0.0.1:$1/metrics" > "$2"
  [ $# -ge 3 ] || return 0
  python3 - "$3" "$2" <<'PY'
import re, sys
def read(path):
    vals = {}
    for line in open(path):
        m = re.match(r'weir:(step_phase_seconds_total|step_duration_seconds_sum|step_duration_seconds_count)\{([^}]*)\} (\S+)', line)
        if m:
            key = m.group(1) + (re.search(r'phase="(\w+)"', m.group(2)) or [None, ""])[1]
            vals[key] = vals.get(key, 0.0) + float(m.group(3))
    return vals
a, b = read(sys.argv[1]), read(sys.argv[2])
d = {k: b.get(k, 0.0) - a.get(k, 0.0) for k in b}
steps, total = d.get("step_duration_seconds_count", 0), d.get("step_duration_seconds_sum", 0)
if steps:
    parts = " ".join(f"{p} {100 * d.get('step_phase_seconds_total' + p, 0) / total:.0f}%"
                     for p in ("schedule", "forward", "sample", "update"))
    print(f"      {steps:.0f} steps, mean {1e3 * total / steps:.2f} ms: {parts}")
PY
}

bench() {  # bench PORT LABEL CONC: one weir bench row
  local port=$1 label=$2 c=$3 n
  n=$(( c == 1 ? 4 : 2 * c ))
  [ "$SHAPE" = 8b ] && [ "$c" -ge 256 ] && n=$c
  phases "$port" "$OUT/m0.txt"
  timeout 120 "$BIN/weir" bench --url "http://127.0.0.1:$port" --model m --concurrency "$c" \
    --num-requests "$n" --prompt-tokens 128 --output-tokens 128 --max-token-id "$MAX_TOKEN_ID" \
    --output "$OUT/bench-$label-$c.json" > /dev/null 2>> "$OUT/bench.err"
  python3 - "$OUT/bench-$label-$c.json" "$label" "$c" <<'PY' | tee -a "$TABLE"
import json, sys
try:
    s = json.load(open(sys.argv[1]))
    print(f"weir {sys.argv[2]:<14} conc {sys.argv[3]:>4} requests {s['num_requests']:>4} errors {s['errors']}: "
          f"{s['output_tokens_per_s']:9.1f} tok/s  TTFT p50 {s['ttft_ms']['p50']:8.1f} ms  "
          f"ITL p50 {s['itl_ms']['p50']:6.2f} ms p99 {s['itl_ms']['p99']:6.2f} ms")
except Exception as e:
    print(f"weir {sys.argv[2]:<14} conc {sys.argv[3]:>4} failed: {e}")
PY
  phases "$port" "$OUT/m1.txt" "$OUT/m0.txt" | tee -a "$TABLE"
}

echo "== 2. weir"
rc=0
if serve 8200 "$OUT/serve.log"; then
  grep -E "model loaded" "$OUT/serve.log" | sed 's/\x1b\[[0-9;]*m//g' | tail -1 | cut -c1-300
  for c in $CONCS; do bench 8200 fused "$c"; done
  kill $PID; wait $PID 2>/dev/null
else
  rc=1; kill $PID 2>/dev/null
fi
if [ "$SHAPE" = 1b ] && serve 8201 "$OUT/serve-unfused.log" --no-fused-kernels; then
  bench 8201 candle-ops 32
  kill $PID; wait $PID 2>/dev/null
fi
if [ "$SHAPE" = 1b ] && [ "$ATTENTION" = cuda ] && serve 8203 "$OUT/serve-graphs.log" --cuda-graphs; then
  for c in 1 32; do bench 8203 cuda-graphs "$c"; done
  say "      graphs captured: $(grep -c 'CUDA graph captured' "$OUT/serve-graphs.log")"
  grep -E "CUDA graph capture failed" "$OUT/serve-graphs.log" | sed 's/\x1b\[[0-9;]*m//g' | head -2 | cut -c1-400 | tee -a "$TABLE"
  kill $PID; wait $PID 2>/dev/null
fi

if [ "$SHAPE" = 1b ] && [ "${PROFILE:-1}" = 1 ] && command -v ncu > /dev/null; then
  echo "== 2b. GPU time by kernel (ncu, concurrency 32 decode steps)"
  # one metric, one pass per kernel; the first launches (weights, the prompt step) skipped
  timeout 150 ncu --target-processes all --clock-control none --metrics gpu__time_duration.sum \
    --launch-skip 2500 --launch-count 1500 -f -o "$OUT/decode" \
    "$BIN/weir" serve --model m="$CFG" --load-format dummy --device "$DEVICE" --dtype "$DTYPE" \
    --attention-backend "$ATTENTION" --max-model-len 2048 --port 8202 > "$OUT/ncu-serve.log" 2>&1 &
  NCU=$!
  for _ in $(seq 120); do curl -sf http://127.0.0.1:8202/health > /dev/null && break; sleep 1; done
  timeout 90 "$BIN/weir" bench --url http://127.0.0.1:8202 --model m --concurrency 32 \
    --num-requests 32 --prompt-tokens 128 --output-tokens 64 --max-token-id "$MAX_TOKEN_ID" > /dev/null 2>&1
  pkill -TERM -f "weir serve --model m=.* --port 8202"
  wait $NCU 2>/dev/null
  if [ -f "$OUT/decode.ncu-rep" ]; then
    ncu --import "$OUT/decode.ncu-rep" --csv --page raw --metrics gpu__time_duration.sum > "$OUT/ncu.csv" 2>/dev/null
    python3 - "$OUT/ncu.csv" <<'PY' | tee -a "$TABLE"
import csv, sys, collections
rows = list(csv.reader(open(sys.argv[1])))
head = rows[0]
name, dur = head.index("Kernel Name"), head.index("gpu__time_duration.sum")
unit = rows[1][dur] if len(rows) > 1 else ""
tot, cnt = collections.Counter(), collections.Counter()
for r in rows[2:]:
    try:
        t = float(r[dur].replace(",", ""))
    except (ValueError, IndexError):
        continue
    k = r[name].split("(")[0][:60]
    tot[k] += t
    cnt[k] += 1
s = sum(tot.values())
print(f"      {sum(cnt.values())} kernels profiled, {s:.0f} {unit} of GPU time; by kernel:")
for k, t in tot.most_common(12):
    print(f"      {100 * t / s:5.1f}%  {cnt[k]:5d} x {t / cnt[k]:9.1f} {unit}  {k}")
PY
  else
    echo "ncu made no report:"; tail -3 "$OUT/ncu-serve.log"
  fi
fi

echo "== 3. single stream against the bandwidth bound"
python3 - "$OUT/bench-fused-1.json" "${BW:-0}" "$WEIGHT_GB" <<'PY' | tee -a "$TABLE"
import json, sys
try:
    itl = json.load(open(sys.argv[1]))["itl_ms"]["mean"]  # = decode time per token
    bw, gb = float(sys.argv[2]), float(sys.argv[3])
    bound = bw / gb
    print(f"single-stream decode {1e3 / itl:.1f} tok/s (ITL mean {itl:.2f} ms); bound {bound:.1f} tok/s "
          f"({gb} GB per token at {bw:.0f} GB/s): {100 * 1e3 / itl / bound:.0f}% of the bound")
except Exception as e:
    print(f"single-stream figure unavailable: {e}")
PY

echo "== 4. transformers baseline"
TORCH_DTYPE=bfloat16
[ "$DEVICE" = cpu ] && TORCH_DTYPE=float32
timeout 200 "$PYTHON" scripts/bench-transformers.py --config "$CFG" --device "$DEVICE" --dtype "$TORCH_DTYPE" \
  --batches "$HF_BATCHES" --continuous "$HF_CONT" --json "$OUT/transformers.json" 2>> "$OUT/transformers.err" \
  | grep -E "^transformers" | tee -a "$TABLE"
[ "${PIPESTATUS[0]}" = 0 ] || { echo "transformers did not finish (see transformers.err):"; tail -3 "$OUT/transformers.err"; }

echo "== table"
cat "$TABLE"
exit $rc
