#!/usr/bin/env bash
# Splits the default model (SmolLM2-135M-Instruct Q4_1, 98 MB: more than the 64 MiB one device
# call can carry) into three ~33 MB parts under target/gpu-assets/, so that it can reach a lent
# GPU machine over three back-to-back calls while the machine stays warm (ignored files that a
# call does not name in `carry` stay there between calls):
#
#   scripts/gpu-assets.sh
#   run(command="true", carry=["target/gpu-assets/smollm2.part-aa"])
#   run(command="true", carry=["target/gpu-assets/smollm2.part-ab"])
#   run(command="bash scripts/gpu-check.sh",
#       carry=["target/cuda-dist", "target/gpu-assets/smollm2.part-ac", "target/gpu-assets/smollm2.sha256"])
#
# scripts/gpu-check.sh joins the parts, checks the sha256 and then also runs the SmolLM2 checks
# (logits CUDA vs CPU, greedy " Paris" served on CUDA). Without the parts it skips them.
set -euo pipefail
cd "$(dirname "$0")/.."
gguf=${WEIR_CACHE_DIR:-$HOME/.cache/weir}/models/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$gguf" ]; then
  echo "no $gguf yet: run the tests or 'cargo run --release' once to fetch it" >&2
  exit 1
fi
out=target/gpu-assets
rm -rf "$out"
mkdir -p "$out"
split -b 33M "$gguf" "$out/smollm2.part-"
(cd "$(dirname "$gguf")" && sha256sum "$(basename "$gguf")") | awk '{print $1}' > "$out/smollm2.sha256"
ls -la "$out"
