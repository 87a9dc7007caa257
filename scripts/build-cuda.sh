#!/usr/bin/env bash
# Builds weir's CUDA binaries on a machine WITHOUT a GPU, from the CUDA 13.0 toolchain on PyPI.
#
#   scripts/build-cuda.sh        # toolchain (once, ~1 min) + release build with --features cuda
#                                # (~13 min the first time on 2 cores, then incremental)
#
# Output (under target/cuda-dist/, what scripts/gpu-check.sh carries to a GPU machine):
#   weir.xz         the server, stripped and xz-compressed
#   gpu_tests.xz    the #[ignore]d CUDA test binary (tests/gpu.rs), likewise
#
# NOTE: CUDA is pinned to 13.0.x: newer nvcc emits PTX that driver 580 (the lent H100/H200)
# cannot load. Without a driver here, the link uses a stub libcuda.so.1 made from the symbols
# cudarc declares; the real driver binds at run time on the GPU machine.
# The build lives in its own target dir (target/cuda) so the CPU build is never invalidated.
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX=${WEIR_CUDA_PREFIX:-$HOME/.cache/weir/cuda13-pip}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/cuda}

setup_toolchain() {
  if [ -x "$PREFIX/cuda/bin/nvcc" ] && [ -e "$PREFIX/cuda/lib/stubs/libcuda.so" ]; then
    return
  fi
  cargo fetch --quiet
  local cudarc
  cudarc=$(cargo metadata --format-version 1 --quiet \
    | python3 -c 'import json,sys,os; m=json.load(sys.stdin); print(next(os.path.dirname(p["manifest_path"]) for p in m["packages"] if p["name"]=="cudarc"))' 2>/dev/null || true)
  if [ -z "$cudarc" ]; then
    # cudarc only enters the graph with the cuda feature
    cudarc=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* | head -1)
  fi
  mkdir -p "$PREFIX"
  python3 -m venv "$PREFIX/venv"
  "$PREFIX/venv/bin/pip" install -q --disable-pip-version-check \
    nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88 \
    nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35
  local sp cu
  sp=$("$PREFIX/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  cu="$sp/nvidia/cu13"
  test -x "$cu/bin/nvcc"
  ln -sfn lib "$cu/lib64"
  (
    cd "$cu/lib"
    for l in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13; do
      ln -sfn "$l" "${l%.*}"
    done
    mkdir -p stubs
    # 34 = CUDA_ERROR_STUB_LIBRARY: a stub call fails loudly instead of pretending to work.
    grep -ohE '^\s+(pub )?fn (cu[A-Za-z0-9_]+)\(' "$cudarc"/src/driver/sys/*.rs \
      | sed -E 's/^\s+(pub )?fn ([A-Za-z0-9_]+)\(/\2/' | sort -u \
      | awk '{print "int " $1 "(void){return 34;}"}' > stubs/cuda_stub.c
    gcc -shared -fPIC -O0 -Wl,-soname,libcuda.so.1 -o stubs/libcuda.so stubs/cuda_stub.c
  )
  ln -sfn "$cu" "$PREFIX/cuda"
}

setup_toolchain
export CUDA_HOME=$PREFIX/cuda
export PATH=$CUDA_HOME/bin:$PATH
export NVCC=$CUDA_HOME/bin/nvcc
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-$(nproc)}
export LIBRARY_PATH=$CUDA_HOME/lib:$CUDA_HOME/lib/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}
# The binary runs on the GPU machine's CPU, not this one.
export RUSTFLAGS=${WEIR_CUDA_RUSTFLAGS:--C target-cpu=x86-64-v3}

cargo build --release --features cuda --bin weir
cargo test --release --features cuda --test gpu --no-run
# the cuda-only code is linted too (the CPU build never compiles it): the library and the test
# files with cuda-only code (the others are the CPU build's, linted by .ci/run)
cargo clippy --release --features cuda --lib --test gpu --test dummy_model -- -D warnings
test_bin=$(cargo test --release --features cuda --test gpu --no-run --message-format=json 2>/dev/null \
  | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "gpu":
        print(m["executable"])' | tail -1)

dist=target/cuda-dist
mkdir -p "$dist"
cp "$CARGO_TARGET_DIR/release/weir" "$dist/weir"
cp "$test_bin" "$dist/gpu_tests"
strip "$dist/weir" "$dist/gpu_tests"
# what travels to the GPU machine (64 MiB at most): the xz-compressed pair, ~20 MB
xz -T0 -6 -f "$dist/weir" "$dist/gpu_tests"
ls -la "$dist"
