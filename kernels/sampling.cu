// Sampling where the logits are: one block per row picks the row's token, so only token ids
// cross to the host.
//
// Per row: y = logits / temperature (temperature <= 0: argmax). Top-k and top-p keep the
// tokens whose order-preserving key (the float's bits, flipped so that unsigned order is float
// order) is at least a threshold found by radix select, MSB first:
//   top-k: the k-th largest key (ties at the threshold stay in);
//   top-p: the largest key whose kept mass sum(exp(y - max) for key >= it) is at least
//          top_p * the mass of the top-k set: the smallest top set reaching top_p.
// The draw is Gumbel-max: argmax over kept tokens of y_i + g_i, g_i = -log(-log(u_i)), with u_i a
// counter-based hash of (seed, i), so a row's token depends only on its logits and its seed,
// never on the batch. Ties go to the lowest index.
#ifdef __CUDACC__
#else
#include "emulate/cuda_emulation.h"
#endif
#include <stdint.h>

#define SAMPLE_THREADS 1024

__device__ __forceinline__ uint32_t order_key(float x) {
  uint32_t b = __float_as_uint(x);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// splitmix64 of (seed, index): a uniform in (0, 1).
__device__ __forceinline__ float uniform(uint64_t seed, uint32_t i) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * ((uint64_t)i + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return ((float)(z >> 40) + 0.5f) * (1.0f / 16777216.0f);
}

struct Sum {
  template <typename T> __device__ T operator()(T a, T b) const { return a + b; }
};
struct Max {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// A block-wide reduction over one value per thread (every thread must call it), in a fixed
// tree order for a given block size.
template <typename T, typename Op> __device__ T block_reduce(T x, T *scratch, Op op) {
  scratch[threadIdx.x] = x;
  __syncthreads();
  for (uint32_t s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) scratch[threadIdx.x] = op(scratch[threadIdx.x], scratch[threadIdx.x + s]);
    __syncthreads();
  }
  const T r = scratch[0];
  __syncthreads();
  return r;
}

// (value, index) argmax, lowest index on ties.
__device__ uint32_t block_argmax(float v, uint32_t i, float *vals, uint32_t *idx) {
  vals[threadIdx.x] = v;
  idx[threadIdx.x] = i;
  __syncthreads();
  for (uint32_t s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      const float a = vals[threadIdx.x], b = vals[threadIdx.x + s];
      const uint32_t ia = idx[threadIdx.x], ib = idx[threadIdx.x + s];
      if (b > a || (b == a && ib < ia)) {
        vals[threadIdx.x] = b;
        idx[threadIdx.x] = ib;
      }
    }
    __syncthreads();
  }
  const uint32_t r = idx[0];
  __syncthreads();
  return r;
}

// grid (rows), block SAMPLE_THREADS (a power of two). logits [rows, vocab] f32.
extern "C" __global__ void weir_sample_f32(const float *logits, uint32_t vocab,
                                           const float *temperature, const uint32_t *top_k,
                                           const float *top_p, const uint64_t *seeds,
                                           uint32_t *out) {
  __shared__ float fs[SAMPLE_THREADS];
  __shared__ uint32_t us[SAMPLE_THREADS];
  const uint32_t row = blockIdx.x;
  const float *x = logits + (uint64_t)row * vocab;
  const float t = temperature[row];
  // greedy: plain argmax
  if (t <= 0.f || top_k[row] == 1) {
    float best = -INFINITY;
    uint32_t best_i = 0xffffffffu;
    for (uint32_t i = threadIdx.x; i < vocab; i += blockDim.x) {
      if (x[i] > best || best_i == 0xffffffffu) {
        best = x[i];
        best_i = i;
      }
    }
    const uint32_t r = block_argmax(best, best_i, fs, us);
    if (threadIdx.x == 0) out[row] = r;
    return;
  }
  const float inv_t = 1.f / t;
  float m = -INFINITY;
  for (uint32_t i = threadIdx.x; i < vocab; i += blockDim.x) m = fmaxf(m, x[i] * inv_t);
  m = block_reduce(m, fs, Max());
  // top-k threshold: the k-th largest key
  uint32_t kth = 0;
  const uint32_t k = top_k[row];
  if (k > 0 && k < vocab) {
    for (int bit = 31; bit >= 0; --bit) {
      const uint32_t cand = kth | (1u << bit);
      uint32_t c = 0;
      for (uint32_t i = threadIdx.x; i < vocab; i += blockDim.x) c += order_key(x[i] * inv_t) >= cand;
      if (block_reduce(c, us, Sum()) >= k) kth = cand;
    }
  }
  // mass of the top-k set
  float z = 0.f;
  for (uint32_t i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float y = x[i] * inv_t;
    if (order_key(y) >= kth) z += __expf(y - m);
  }
  z = block_reduce(z, fs, Sum());
  // top-p threshold: the largest key whose kept mass (within the top-k set) reaches top_p * z
  uint32_t pth = kth;
  const float p = top_p[row];
  if (p < 1.f) {
    uint32_t prefix = 0;
    for (int bit = 31; bit >= 0; --bit) {
      const uint32_t cand = prefix | (1u << bit);
      const uint32_t at = cand > kth ? cand : kth;
      float mass = 0.f;
      for (uint32_t i = threadIdx.x; i < vocab; i += blockDim.x) {
        const float y = x[i] * inv_t;
        if (order_key(y) >= at) mass += __expf(y - m);
      }
      if (block_reduce(mass, fs, Sum()) >= p * z) prefix = cand;
    }
    pth = prefix > kth ? prefix : kth;
  }
  // Gumbel-max over the kept tokens
  const uint64_t seed = seeds[row];
  float best = -INFINITY;
  uint32_t best_i = 0xffffffffu;
  for (uint32_t i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float y = x[i] * inv_t;
    if (order_key(y) < pth) continue;
    const float g = y - __logf(-__logf(uniform(seed, i)));
    if (g > best || best_i == 0xffffffffu) {
      best = g;
      best_i = i;
    }
  }
  const uint32_t r = block_argmax(best, best_i, fs, us);
  if (threadIdx.x == 0) out[row] = r;
}
