# Shared by the benchmark scripts: build weir and start a server, waiting until it is healthy.
# Source it; it sets BIN (the load generator, `weir bench` of this tree) and SERVER_BIN (the
# server: WEIR_SERVER_BIN when set, e.g. an older build to compare against, else BIN).

cargo build --release --quiet
BIN=${CARGO_TARGET_DIR:-target}/release/weir
SERVER_BIN=${WEIR_SERVER_BIN:-$BIN}

# start_weir PORT LOG [serve flags...]: starts `weir serve` in the background, sets SERVER to its
# pid and returns once /health answers (or prints the log and fails).
start_weir() {
  local port=$1 log=$2
  shift 2
  $SERVER_BIN serve --port "$port" "$@" >"$log" 2>&1 &
  SERVER=$!
  wait_healthy "$port" "$log"
}

# wait_healthy PORT LOG: returns once the server on PORT answers /health (~60 s at most), else
# prints LOG and fails.
wait_healthy() {
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$1/health" >/dev/null && return 0
    sleep 0.2
  done
  cat "$2"
  return 1
}
