#!/usr/bin/env bash
# weir against llama.cpp's llama-server on the same model, same machine, same load, in one run.
#
# Builds llama-server once (scripts/build-llama-server.sh, cached), then serves the default model
# (SmolLM2-135M-Instruct Q4_1) with each server in turn on loopback, both with threads = cores
# and llama-server with `-np` equal to the concurrency and `--cache-ram 0`. Both are driven by
# `weir bench` with the same token prompts (same seeds), ignore_eos, temperature 0:
#   - decode: 128-token prompts, 128 output tokens, at each concurrency (output tok/s, TTFT, ITL);
#   - prompt: one prompt at a time of each length in PROMPT_LENGTHS (default 512 to 8,000 tokens),
#     1 output token (prompt tok/s = length / TTFT p50); the c=1 decode level gives the same
#     figure for 128-token prompts (128 / TTFT p50).
# Prints one table with both servers and the ratios, plus each server's peak RSS.
#
#   scripts/bench-vs-llamacpp.sh
#   MODEL=~/.cache/weir/models/gemma-3-270m-q4_k_m.gguf LABEL="Gemma 3 270M Q4_K_M" \
#     OUT=bench-results/vs-llamacpp-gemma3 scripts/bench-vs-llamacpp.sh     # another GGUF
#   CONCURRENCY="1 8 32" REQUESTS_PER_WORKER=4 OUT=bench-results/vs-llamacpp scripts/bench-vs-llamacpp.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CONCURRENCY=${CONCURRENCY:-"1 8 32"}
REQUESTS_PER_WORKER=${REQUESTS_PER_WORKER:-4}
PROMPT_REQUESTS=${PROMPT_REQUESTS:-3}
PROMPT_LENGTHS=${PROMPT_LENGTHS:-"512 1024 2048 4096 8000"}
PORT=${PORT:-8124}
OUT=${OUT:-bench-results/vs-llamacpp}
THREADS=${THREADS:-$(nproc)}
MODEL=${MODEL:-${WEIR_CACHE_DIR:-$HOME/.cache/weir}/models/SmolLM2-135M-Instruct.Q4_1.gguf}
LABEL=${LABEL:-SmolLM2-135M-Instruct Q4_1}
mkdir -p "$OUT"
LLAMA_SERVER=$(scripts/build-llama-server.sh)
source scripts/common.sh
URL=http://127.0.0.1:$PORT
SERVER=
trap '[[ -n $SERVER ]] && kill $SERVER 2>/dev/null || true' EXIT

# peak resident memory of the running server, MiB
peak_rss() { awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$SERVER/status"; }
stop_server() { kill "$SERVER" && wait "$SERVER" 2>/dev/null || true; SERVER=; }

start_llama() {
  local np=$1
  "$LLAMA_SERVER" -m "$MODEL" --host 127.0.0.1 --port "$PORT" -t "$THREADS" -tb "$THREADS" \
    -np "$np" -c $((np < 2 ? 8256 : np * 512)) --cache-ram 0 --alias bench --no-webui \
    >"$OUT/llama-server-np$np.log" 2>&1 &
  SERVER=$!
  wait_healthy "$PORT" "$OUT/llama-server-np$np.log"
}

# bench NAME SEED CONCURRENCY REQUESTS PROMPT OUTPUT
bench() {
  $BIN bench --url "$URL" --model bench --concurrency "$3" --num-requests "$4" --prompt-tokens "$5" \
    --output-tokens "$6" --seed "$2" --output "$OUT/$1.json" >/dev/null
}

# run_levels SERVER_NAME: warm-up, the prompt phase, then every concurrency level
run_levels() {
  local name=$1 c
  bench "$name-warmup" 1000000 1 1 16 8
  for n in $PROMPT_LENGTHS; do
    bench "$name-prompt$n" $((7 + n)) 1 "$PROMPT_REQUESTS" "$n" 1
  done
  for c in $CONCURRENCY; do
    if [[ $name == llama ]]; then
      stop_server
      start_llama "$c"
      bench "$name-warmup" 1000000 1 1 16 8
    fi
    bench "$name-c$c" "$c" "$c" $((c * REQUESTS_PER_WORKER)) 128 128
  done
  echo "$(peak_rss)" >"$OUT/$name-rss"
  stop_server
}

# KV memory of the same order as llama-server's (np × 512 tokens in f16 there; 512 MiB of f32
# here, ~11k tokens): peak RSS compares the servers, not their default cache sizes
start_weir "$PORT" "$OUT/weir.log" --model bench="$MODEL" --kv-cache-memory 512MiB
run_levels weir
start_llama 1
run_levels llama

python3 - "$OUT" "$CONCURRENCY" "$THREADS" "$LABEL" "$PROMPT_LENGTHS" <<'EOF'
import json, sys
out, levels, threads, label = sys.argv[1], sys.argv[2].split(), sys.argv[3], sys.argv[4]
lengths = [int(n) for n in sys.argv[5].split()]
load = lambda n: json.load(open(f"{out}/{n}.json"))
rss = {s: open(f"{out}/{s}-rss").read().strip() for s in ("weir", "llama")}
print(f"{label}, {threads} threads, 128-token prompts, 128 output tokens")
print("| load | weir | llama-server | weir / llama |")
print("|---|---|---|---|")
for c in levels:
    w, l = load(f"weir-c{c}"), load(f"llama-c{c}")
    for key, label in (("output_tokens_per_s", "output tok/s"),):
        print(f"| c={c} {label} | {w[key]:.1f} | {l[key]:.1f} | {w[key] / l[key]:.2f}x |")
    for key in ("ttft_ms", "itl_ms"):
        print(f"| c={c} {key[:-3].upper()} p50 (ms) | {w[key]['p50']:.1f} | {l[key]['p50']:.1f} | {w[key]['p50'] / l[key]['p50']:.2f}x |")
    errs = w["errors"] + l["errors"]
    if errs:
        print(f"| c={c} errors | {w['errors']} | {l['errors']} | |")
for name, n in [(f"c{levels[0]}", 128)] + [(f"prompt{n}", n) for n in lengths]:
    w, l = load(f"weir-{name}"), load(f"llama-{name}")
    tw, tl = w["ttft_ms"]["p50"], l["ttft_ms"]["p50"]
    pw, pl = n * 1e3 / tw, n * 1e3 / tl
    print(f"| prompt tok/s ({n}-token prompt, c={w['concurrency']}, n / TTFT p50) | {pw:.0f} | {pl:.0f} | {pw / pl:.2f}x |")
    if name.startswith("prompt"):
        print(f"| TTFT p50 ({n}-token prompt alone, ms) | {tw:.0f} | {tl:.0f} | {tw / tl:.2f}x |")
print(f"| peak RSS (MiB) | {rss['weir']} | {rss['llama']} | {int(rss['weir']) / int(rss['llama']):.2f}x |")
EOF
