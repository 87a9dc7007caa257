// Just enough of CUDA to run weir's kernels on the CPU, for tests/kernels_emulated.rs: a grid
// runs one block at a time on one std::thread per thread of a block, __syncthreads is a block
// barrier and warp shuffles exchange through a per-warp barrier. __shared__ arrays become
// statics (one block at a time shares them). f32 only.
#pragma once
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

using std::min;
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float rsqrtf(float x) { return 1.f / std::sqrt(x); }
inline uint32_t __float_as_uint(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}

struct EmuWarp {
  std::barrier<> bar{32};
  float vals[32];
};
inline std::barrier<> *emu_block_barrier;
inline EmuWarp *emu_warps;

inline void __syncthreads() { emu_block_barrier->arrive_and_wait(); }

inline float __shfl_xor_sync(unsigned, float x, int offset) {
  EmuWarp &w = emu_warps[threadIdx.x / 32];
  const unsigned lane = threadIdx.x % 32;
  w.vals[lane] = x;
  w.bar.arrive_and_wait();
  const float r = w.vals[lane ^ offset];
  w.bar.arrive_and_wait();
  return r;
}

// Runs `kernel` over `grid` blocks of `block` threads (block.x a multiple of 32 when the kernel
// shuffles). One std::thread per CUDA thread walks every block in order; a barrier between
// blocks keeps one block at a time (the __shared__ statics belong to it).
template <typename F> void emu_launch(dim3 grid, dim3 block, F kernel) {
  gridDim = grid;
  blockDim = block;
  const unsigned n = block.x;
  std::barrier<> bar(n), between_blocks(n);
  std::vector<EmuWarp> warps((n + 31) / 32);
  emu_block_barrier = &bar;
  emu_warps = warps.data();
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < n; ++t) {
    threads.emplace_back([=, &between_blocks] {
      threadIdx = {t, 0, 0};
      for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
          for (unsigned x = 0; x < grid.x; ++x) {
            blockIdx = {x, y, z};
            kernel();
            between_blocks.arrive_and_wait();
          }
    });
  }
  for (auto &t : threads) t.join();
}
