#!/usr/bin/env bash
# Serving throughput and inter-token latency of an older weir revision and this tree, side by
# side: builds BEFORE_REV in a git worktree (own target dir), then runs scripts/bench_serving.sh
# against each server in turn, ROUNDS times, with the same load generator (`weir bench` of this
# tree). Prints one line per server and concurrency; the JSON summaries land under OUT.
# AFTER_FLAGS lists serve-flag sets for this tree, separated by ';' (default: one set, the
# defaults), each measured as its own "after" side.
#
#   scripts/bench_before_after.sh BEFORE_REV [serve flags for every side...]
#   CONCURRENCY="1 8 32 64" REQUESTS_PER_WORKER=2 ROUNDS=2 OUT=bench-results/before-after \
#     AFTER_FLAGS=";--max-num-batched-tokens 256" scripts/bench_before_after.sh 34216fe
set -euo pipefail
cd "$(dirname "$0")/.."
BEFORE_REV=${1:?usage: scripts/bench_before_after.sh BEFORE_REV [serve flags...]}
shift
export CONCURRENCY=${CONCURRENCY:-"1 8 32 64"}
export REQUESTS_PER_WORKER=${REQUESTS_PER_WORKER:-2}
ROUNDS=${ROUNDS:-2}
OUT=${OUT:-bench-results/before-after}
sha=$(git rev-parse --short "$BEFORE_REV")
src="$PWD/target/rev-src/$sha"
# the before binary is built once per revision (delete target/weir-SHA to build it again)
if [ ! -x "target/weir-$sha" ]; then
  if [ ! -d "$src" ]; then
    mkdir -p target/rev-src
    git worktree add --detach "$src" "$sha" >/dev/null
  fi
  # own target dir (the first build compiles the dependencies again), and a clean `weir` crate:
  # builds of two revisions from different worktrees would otherwise share its artifacts
  (cd "$src" && CARGO_TARGET_DIR="$PWD/../../rev" cargo clean --release -p weir --quiet &&
    CARGO_TARGET_DIR="$PWD/../../rev" cargo build --release --quiet)
  cp target/rev/release/weir "target/weir-$sha"
fi
IFS=';' read -r -a after_flags <<<"${AFTER_FLAGS:-}"
[ ${#after_flags[@]} -eq 0 ] && after_flags=("")
head=$(git rev-parse --short HEAD)
for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round: before ($sha)"
  WEIR_SERVER_BIN="target/weir-$sha" OUT="$OUT/r$round-before" scripts/bench_serving.sh "$@"
  for i in "${!after_flags[@]}"; do
    read -r -a flags <<<"${after_flags[$i]}"
    echo "== round $round: after ($head) ${after_flags[$i]:-defaults}"
    OUT="$OUT/r$round-after$i" scripts/bench_serving.sh "$@" "${flags[@]}"
  done
done
