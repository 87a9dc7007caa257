#!/usr/bin/env bash
# The default (portable, x86-64-v3) build of this tree against the same tree built for exactly
# this CPU (-C target-cpu=native), serving the default model side by side: ROUNDS rounds of
# scripts/bench_serving.sh against each binary in turn (portable, native, native, portable, ...).
# The native binary is built in target/rev (its own dependencies) and kept as
# target/weir-native-SHA. Prints one line per binary and concurrency; JSON under OUT.
#
#   scripts/bench-native-vs-portable.sh
#   CONCURRENCY="1 8 32" REQUESTS_PER_WORKER=4 ROUNDS=2 scripts/bench-native-vs-portable.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CONCURRENCY=${CONCURRENCY:-"1 8 32"}
export REQUESTS_PER_WORKER=${REQUESTS_PER_WORKER:-4}
ROUNDS=${ROUNDS:-2}
OUT=${OUT:-bench-results/native-vs-portable}
sha=$(git rev-parse --short HEAD)
cargo build --release --quiet
native=target/weir-native-$sha
if [ ! -x "$native" ]; then
  RUSTFLAGS="-C target-cpu=native" CARGO_TARGET_DIR=target/rev cargo build --release --quiet
  cp target/rev/release/weir "$native"
fi
cp target/release/weir "target/weir-portable-$sha"
run() { # run NAME BINARY ROUND
  echo "== round $3: $1"
  WEIR_SERVER_BIN=$2 OUT="$OUT/r$3-$1" scripts/bench_serving.sh
}
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then
    run portable "target/weir-portable-$sha" "$round"
    run native "$native" "$round"
  else
    run native "$native" "$round"
    run portable "target/weir-portable-$sha" "$round"
  fi
done
