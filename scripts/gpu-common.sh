# Shared by the scripts that run on a lent GPU machine (gpu-check.sh, gpu-bench.sh): nothing is
# built there. Source it; `gpu_binaries NAME...` unpacks each binary of target/cuda-dist/
# (xz-compressed by scripts/build-cuda.sh, or plain) into $BIN, and sourcing points the loader
# at the CUDA 13 user-space libraries of the machine's PyTorch venv (libcuda.so.1 comes from
# the driver).

BIN=$(mktemp -d)

gpu_binaries() {
  local f
  for f in "$@"; do
    if [ -f "target/cuda-dist/$f.xz" ]; then xz -dc "target/cuda-dist/$f.xz" > "$BIN/$f"; else cp "target/cuda-dist/$f" "$BIN/$f"; fi
    chmod +x "$BIN/$f"
  done
}

for d in /opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib /usr/local/cuda-13.0/targets/x86_64-linux/lib; do
  if [ -e "$d/libcublas.so.13" ]; then
    export LD_LIBRARY_PATH="$d:/usr/local/nvidia/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    break
  fi
done
