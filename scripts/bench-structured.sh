#!/usr/bin/env bash
# Constrained decoding's cost: SmolLM2 on the CPU at concurrency 8, 32 chat requests of up to 96
# tokens, first all unconstrained, then half of them under a JSON schema (response_format), on
# one server in one run. Prints output tokens/s for both mixes (and per class in the mixed run).
#
#   OUT=bench-results/structured scripts/bench-structured.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
OUT=${OUT:-bench-results/structured}
PORT=${PORT:-8331}
mkdir -p "$OUT"
MODEL=$(ls ~/.cache/weir/models/SmolLM2-135M-Instruct.Q4_1.gguf)
start_weir "$PORT" "$OUT/server.log" --model "smol=$MODEL"
trap 'kill $SERVER 2>/dev/null || true' EXIT
python3 - "http://127.0.0.1:$PORT/v1" <<'PY' | tee "$OUT/result.txt"
import concurrent.futures as cf, statistics, sys, time
import openai
client = openai.OpenAI(base_url=sys.argv[1], api_key="unused", max_retries=0)
SCHEMA = {"type": "object", "additionalProperties": False,
          "required": ["name", "age", "role", "hobbies"],
          "properties": {"name": {"type": "string", "maxLength": 40},
                         "age": {"type": "integer", "minimum": 0, "maximum": 120},
                         "role": {"enum": ["engineer", "doctor", "teacher"]},
                         "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 20},
                                     "maxItems": 4}}}
def one(i, constrained):
    """(constrained, output tokens, decode tok/s after the first token)"""
    kw = {"response_format": {"type": "json_schema",
                              "json_schema": {"name": "p", "schema": SCHEMA}}} if constrained else {}
    t0, first, n = time.perf_counter(), None, 0
    for chunk in client.chat.completions.create(
        model="smol", messages=[{"role": "user", "content": f"Describe person number {i} as JSON."}],
        max_tokens=96, temperature=0.8, seed=i, stream=True,
        stream_options={"include_usage": True}, **kw):
        if chunk.choices and chunk.choices[0].delta.content and first is None:
            first = time.perf_counter()
        if chunk.usage:
            n = chunk.usage.completion_tokens
    end = time.perf_counter()
    return constrained, n, (n - 1) / (end - first) if first and n > 1 else 0.0
def run(mix):
    t = time.perf_counter()
    with cf.ThreadPoolExecutor(8) as pool:
        res = list(pool.map(lambda a: one(*a), [(i, mix and i % 2 == 1) for i in range(32)]))
    dt = time.perf_counter() - t
    return res, dt
run(False)  # warm-up (and the vocabulary's grammar trie is built on the first constrained one)
one(0, True)
for label, mix in [("none constrained", False), ("half constrained", True)]:
    res, dt = run(mix)
    tot = sum(n for _, n, _ in res)
    free = [r for c, _, r in res if not c]
    con = [r for c, _, r in res if c]
    print(f"{label:<17} {tot / dt:6.1f} output tok/s ({tot} tokens in {dt:.1f} s); per-request decode "
          f"tok/s median: unconstrained {statistics.median(free):.1f}"
          + (f", constrained {statistics.median(con):.1f}" if con else ""))
PY
