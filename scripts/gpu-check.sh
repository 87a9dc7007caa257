#!/usr/bin/env bash
# ONE command for a lent GPU machine (H100/H200): checks weir's CUDA path and prints one
# throughput table. Builds nothing there: the binaries come from scripts/build-cuda.sh on a
# machine without a GPU, xz-compressed under target/cuda-dist/ (carry that folder).
#
#   device tool:  run(command="bash scripts/gpu-check.sh", carry=["target/cuda-dist"], timeout_s=540)
#   (SmolLM2 does not fit in one call's 64 MiB: scripts/gpu-assets.sh shows how to send it in
#   parts first; with it, steps 1 and 2 also check SmolLM2 on CUDA.)
#
# Steps (about 5 minutes; scripts/gpu-bench.sh makes the full throughput table):
#   1. gpu_tests --ignored: weir's kernels and the tensor backend against the naive attention
#      reference (f32/f16/bf16, GQA 1-8, head dims 64-256, contexts to 1,100, a model's own
#      softmax scale, sliding windows of 7 and 512), a tiny Gemma 3 (q/k norms, GeGLU, a
#      sliding-window layer, the hybrid KV cache's two groups) served greedy on CUDA = on CPU, tiny-model logits CUDA vs CPU (f32, bf16; fused kernels and candle ops;
#      plain and YaRN RoPE, whose attention factor reaches the kernels as the softmax scale), greedy /v1/completions served on
#      CUDA = on CPU (also with --cuda-graphs and concurrent requests), seeded requests on CUDA
#      repeat (kernel-drawn and host-sampled rows; each sequence's RNG travels with it), and
#      SmolLM2 (dequantized to bf16) CUDA vs CPU when WEIR_SMOLLM2_GGUF points at its GGUF,
#      a tiny BERT encoder's hidden states (embeddings) CUDA vs CPU, and LoRA adapters (mixed
#      adapter and base requests, merged projections with their deltas) greedy CUDA = CPU, and
#      speculative decoding (prompt lookup, drafts kept) greedy on CUDA = CPU without it.
#   2. `weir serve --load-format dummy` with Llama-3.2-1B's shape (bf16), `weir bench` at
#      concurrency 1 and 32 (128-token prompts, 128 output tokens), once per attention
#      backend (tensor: candle ops; cuda: weir's kernels), printed as one table.
#   3. The model manager on the GPU: two dummy Llama-3.2-1B models under --max-loaded-models 1
#      with --host-memory-budget: time of a one-token request to a cold model (weights made on
#      the device), one back from host memory, a resident one; GPU memory used before the first
#      load and after unloading both; rows sampled on the host (logit_bias, logprobs,
#      penalties, prompt logprobs) on the CUDA engine.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
. scripts/gpu-common.sh
gpu_binaries weir gpu_tests
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
SMOL=""
if ls target/gpu-assets/smollm2.part-* > /dev/null 2>&1; then
  cat target/gpu-assets/smollm2.part-* > "$BIN/smollm2.gguf"
  if [ "$(sha256sum "$BIN/smollm2.gguf" | awk '{print $1}')" = "$(cat target/gpu-assets/smollm2.sha256 2>/dev/null)" ]; then
    SMOL="$BIN/smollm2.gguf"
    export WEIR_SMOLLM2_GGUF="$SMOL"
  else
    echo "SmolLM2 parts incomplete or corrupt (sha256): SmolLM2 checks skipped"
  fi
fi

echo "== 1. correctness (gpu_tests --ignored)"
timeout 240 "$BIN/gpu_tests" --ignored --test-threads 1 --nocapture 2>&1 | tee "$OUT/gpu_tests.log" | grep -E "^test |max error|max \||greedy|seeded|speculation|result|panicked|not set"
tests_rc=${PIPESTATUS[0]}

if [ -n "$SMOL" ]; then
  echo "== 1b. SmolLM2 served on CUDA: greedy completion of 'The capital of France is'"
  "$BIN/weir" serve --model smol="$SMOL" --device cuda --port 8122 > "$OUT/serve-smol.log" 2>&1 &
  spid=$!
  python3 - <<'PY' || tests_rc=1
import json, time, urllib.request as u
for _ in range(120):
    try:
        u.urlopen("http://127.0.0.1:8122/health", timeout=2); break
    except Exception:
        time.sleep(1)
body = json.dumps({"model": "smol", "prompt": "The capital of France is", "max_tokens": 4,
                   "temperature": 0}).encode()
req = u.Request("http://127.0.0.1:8122/v1/completions", body, {"Content-Type": "application/json"})
text = json.load(u.urlopen(req, timeout=60))["choices"][0]["text"]
print(f"SmolLM2 on CUDA: {text!r}")
assert "Paris" in text, text
PY
  kill $spid 2>/dev/null; wait $spid 2>/dev/null
fi

echo "== 2. throughput: dummy Llama-3.2-1B (bf16), 128-token prompts, 128 output tokens"
CFG=$(mktemp -d)
cp benches/shapes/llama-3.2-1b.json "$CFG/config.json"
printf "%-8s %5s %9s %7s %12s %12s %12s %12s\n" backend conc requests errors "tok/s" "TTFT p50 ms" "ITL p50 ms" "ITL p99 ms" | tee "$OUT/table.txt"
for backend in tensor cuda; do
  port=8123
  "$BIN/weir" serve --model llama1b="$CFG/config.json" --load-format dummy --device cuda \
    --attention-backend "$backend" --max-model-len 2048 --max-num-seqs 128 \
    --max-num-batched-tokens 4096 --port $port > "$OUT/serve-$backend.log" 2>&1 &
  pid=$!
  for _ in $(seq 120); do
    python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/health', timeout=2)" 2>/dev/null && break
    kill -0 $pid 2>/dev/null || break
    sleep 1
  done
  if ! kill -0 $pid 2>/dev/null; then
    echo "$backend: the server did not start:"; grep -A3 "^Error" "$OUT/serve-$backend.log" | head -4; tests_rc=1
    continue
  fi
  for c in 1 32; do
    n=$(( c == 1 ? 4 : 2 * c ))
    timeout 90 "$BIN/weir" bench --url "http://127.0.0.1:$port" --model llama1b --concurrency $c \
      --num-requests $n --prompt-tokens 128 --output-tokens 128 --max-token-id 128000 \
      --output "$OUT/bench-$backend-$c.json" > /dev/null 2>> "$OUT/bench-$backend.err" || true
    python3 - "$OUT/bench-$backend-$c.json" "$backend" "$c" <<'PY' | tee -a "$OUT/table.txt"
import json, sys
try:
    s = json.load(open(sys.argv[1]))
    print(f"{sys.argv[2]:<8} {sys.argv[3]:>5} {s['num_requests']:>9} {s['errors']:>7} {s['output_tokens_per_s']:>12.1f} "
          f"{s['ttft_ms']['p50']:>12.1f} {s['itl_ms']['p50']:>12.2f} {s['itl_ms']['p99']:>12.2f}")
except Exception as e:
    print(f"{sys.argv[2]:<8} {sys.argv[3]:>5} failed: {e}")
PY
  done
  kill $pid 2>/dev/null; wait $pid 2>/dev/null
  grep -E "GPU memory|model loaded" "$OUT/serve-$backend.log" | head -2
done
echo "== table"; cat "$OUT/table.txt"

echo "== 3. model swap on the GPU (two dummy Llama-3.2-1B, one loaded at a time, 16 GiB host tier)"
"$BIN/weir" serve --model a="$CFG/config.json" --model b="$CFG/config.json" --load-format dummy \
  --device cuda --max-model-len 2048 --gpu-memory-utilization 0.5 --max-loaded-models 1 \
  --host-memory-budget 16GiB --port 8124 > "$OUT/serve-swap.log" 2>&1 &
pid=$!
timeout 240 python3 - <<'PY' || tests_rc=1
import json, subprocess, time, urllib.request as u
base = "http://127.0.0.1:8124"
def gpu_used_mib():
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True).stdout
    return int(out.split()[0])
def call(path, body=None):
    data = json.dumps(body).encode() if body is not None else (b"" if path.startswith("/admin/models/") else None)
    req = u.Request(base + path, data, {"Content-Type": "application/json"})
    return json.load(u.urlopen(req, timeout=180))
for _ in range(120):
    try:
        u.urlopen(base + "/health", timeout=2); break
    except Exception:
        time.sleep(1)
time.sleep(1)
empty = gpu_used_mib()
rows = []
for model, what in [("a", "cold"), ("b", "cold (a -> host)"), ("a", "host (b -> host)"),
                    ("a", "resident"), ("b", "host")]:
    t = time.perf_counter()
    call("/v1/completions", {"model": model, "prompt": [1, 2, 3, 4], "max_tokens": 1})
    rows.append((model, what, (time.perf_counter() - t) * 1e3, gpu_used_mib()))
for m, what, ms, used in rows:
    print(f"swap: {m} {what:<18} {ms:8.1f} ms   GPU used {used} MiB")
# rows sampled on the host (logit_bias, logprobs, penalties) beside kernel-sampled ones
forced = call("/v1/completions", {"model": "a", "prompt": [1, 2, 3], "max_tokens": 4,
                                  "logprobs": 2, "logit_bias": {"42": 100},
                                  "return_tokens_as_token_ids": True, "ignore_eos": True})
lp = forced["choices"][0]["logprobs"]
print(f"host-sampled rows on CUDA: tokens {lp['tokens']}, logprobs {lp['token_logprobs']}")
assert lp["tokens"] == ["token_id:42"] * 4, lp
assert all(v is not None and v <= 0 for v in lp["token_logprobs"]), lp
call("/v1/completions", {"model": "a", "prompt": [5, 6, 7], "max_tokens": 8, "temperature": 1.0,
                         "seed": 3, "frequency_penalty": 1.0, "repetition_penalty": 1.3,
                         "min_p": 0.05, "prompt_logprobs": 1})
stats = call("/admin/stats")
for m in stats["models"]:
    print(f"swap: {m['id']}: loads {m['loads']} host_loads {m['host_loads']} evictions {m['evictions']} "
          f"bytes {m['bytes'] >> 20} MiB host_bytes {m['host_bytes'] >> 20} MiB")
for m in ("a", "b"):
    call(f"/admin/models/{m}/unload")
time.sleep(1)
after = gpu_used_mib()
print(f"swap: GPU used {empty} MiB before the first load, {after} MiB after unloading both")
assert stats["models"][0]["host_loads"] >= 1, stats
assert after < empty + 1024, (empty, after)
PY
kill $pid 2>/dev/null; wait $pid 2>/dev/null
grep -E "kept in host|evicting|error|ERROR" "$OUT/serve-swap.log" | head -6
exit $tests_rc
