#!/usr/bin/env bash
# Failover behind vllm-router: 3 weir replicas (SmolLM2) on loopback, 16 clients sending
# completions through the router for 20 s; after 5 s one replica is stopped, by SIGKILL (a crash)
# or by SIGTERM (a graceful drain), under round_robin and under cache_aware. Counts the requests
# answered and the failed ones (non-2xx or a broken connection).
#
#   PYTHON=target/test-venv/bin/python3 scripts/bench-failover.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench-results/failover}
PYTHON=${PYTHON:-python3}
ROUTER=${ROUTER:-$(dirname "$PYTHON")/vllm-router}
mkdir -p "$OUT"
source scripts/common.sh
MODEL=${WEIR_CACHE_DIR:-$HOME/.cache/weir}/models/SmolLM2-135M-Instruct.Q4_1.gguf
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill $p 2>/dev/null; done; true' EXIT
echo "| policy | stop | answered | failed |" | tee "$OUT/summary.txt"
echo "|---|---|---|---|" | tee -a "$OUT/summary.txt"
for policy in round_robin cache_aware; do
  for signal in KILL TERM; do
    urls=()
    replicas=()
    for i in 0 1 2; do
      port=$((8181 + i))
      start_weir "$port" "$OUT/weir-$policy-$signal-$i.log" --model smol="$MODEL" \
        --kv-cache-memory 128MiB --shutdown-grace 20
      PIDS+=("$SERVER")
      replicas+=("$SERVER")
      urls+=("http://127.0.0.1:$port")
    done
    "$ROUTER" --host 127.0.0.1 --port 8180 --policy "$policy" --prometheus-port 8190 --worker-urls "${urls[@]}" \
      --health-check-endpoint /ready --health-check-interval-secs 1 \
      >"$OUT/router-$policy-$signal.log" 2>&1 &
    PIDS+=($!)
    wait_healthy 8180 "$OUT/router-$policy-$signal.log"
    ( sleep 5; kill -"$signal" "${replicas[0]}" ) &
    counts=$("$PYTHON" - "http://127.0.0.1:8180" <<'PY'
import concurrent.futures, json, sys, time, urllib.request
url, end = sys.argv[1], time.time() + 20
def client(c):
    ok = failed = i = 0
    while time.time() < end:
        body = json.dumps({"model": "smol", "prompt": f"Client {c} line {i}:", "max_tokens": 16,
                           "temperature": 0}).encode()
        req = urllib.request.Request(f"{url}/v1/completions", body, {"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=60).read()
            ok += 1
        except Exception:
            failed += 1
        i += 1
    return ok, failed
with concurrent.futures.ThreadPoolExecutor(16) as pool:
    results = list(pool.map(client, range(16)))
print(sum(r[0] for r in results), sum(r[1] for r in results))
PY
)
    read -r answered failed <<<"$counts"
    echo "| $policy | SIG$signal | $answered | $failed |" | tee -a "$OUT/summary.txt"
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    PIDS=()
  done
done
