// weir's fused element-wise kernels for the Llama layer on CUDA: each replaces a chain of
// candle ops (a launch, a read and a write of the activations each) by one pass.
//
//   add_rms_norm   x' = x + a; h = rms_norm(x') * w          (residual add + the next norm)
//                  out: [2, rows, width]: out[0] = x', out[1] = h
//   silu_mul       out[r, i] = silu(gu[r, i]) * gu[r, I + i]  (gate and up from one GEMM)
//                  gu: [rows, 2 * I], out: [rows, I]
//   rope_qkv       q, k rotated by their token's position, v copied, from one QKV GEMM's rows
//                  qkv: [T, (H + 2 * KvH) * D] -> out: [T * H * D | T * KvH * D | T * KvH * D]
//                  (three whole row-major blocks: q, k, v each contiguous); the angles
//                  position * inv_freq[i] are computed here, in f32 as the host tables are, so
//                  the host does no trigonometry per step
//
// Numerics: f32 inside every kernel. add_rms_norm rounds x' to the storage type first and
// normalises the rounded values (what the unfused add followed by candle's rms_norm computes);
// silu_mul and rope_qkv round once, at the end (the unfused chain rounds after each op).
#include "common.cuh"

#define NORM_THREADS 256


// grid (rows), block NORM_THREADS (a multiple of 32, at most 1024).
template <typename T>
__device__ void add_rms_norm(const T *x, const T *a, const T *w, T *out, uint32_t rows,
                             uint32_t width, float eps) {
  __shared__ float warp_sums[32];
  const uint64_t row = blockIdx.x;
  const T *xr = x + row * width;
  const T *ar = a + row * width;
  T *sum_r = out + row * width;
  T *h_r = out + ((uint64_t)rows + row) * width;
  float sq = 0.f;
  for (uint32_t i = threadIdx.x; i < width; i += blockDim.x) {
    const T s = from_f32<T>(to_f32(xr[i]) + to_f32(ar[i]));
    sum_r[i] = s;
    const float f = to_f32(s);
    sq += f * f;
  }
  sq = warp_sum(sq);
  const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_sums[warp] = sq;
  __syncthreads();
  if (warp == 0) {
    float t = lane < blockDim.x / 32 ? warp_sums[lane] : 0.f;
    t = warp_sum(t);
    if (lane == 0) warp_sums[0] = t;
  }
  __syncthreads();
  const float scale = rsqrtf(warp_sums[0] / (float)width + eps);
  // each thread reads back the elements it wrote itself
  for (uint32_t i = threadIdx.x; i < width; i += blockDim.x) {
    h_r[i] = from_f32<T>(scale * to_f32(sum_r[i]) * to_f32(w[i]));
  }
}

// grid-stride over rows * inter elements.
template <typename T>
__device__ void silu_mul(const T *gu, T *out, uint32_t rows, uint32_t inter) {
  const uint64_t n = (uint64_t)rows * inter;
  for (uint64_t e = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; e < n;
       e += (uint64_t)gridDim.x * blockDim.x) {
    const uint64_t r = e / inter, i = e % inter;
    const float g = to_f32(gu[r * 2 * inter + i]);
    const float u = to_f32(gu[r * 2 * inter + inter + i]);
    out[e] = from_f32<T>(g / (1.f + expf(-g)) * u);
  }
}

// grid (num_tokens, num_heads + 2 * num_kv_heads), block up to head_dim / 2 threads (looping).
// positions: [num_tokens] u32; inv_freq: [head_dim / 2] f32. interleaved: pairs (2i, 2i + 1)
// (GGUF Llama), else (i, i + head_dim / 2) (Hugging Face checkpoints).
template <typename T>
__device__ void rope_qkv(const T *qkv, T *out, const uint32_t *positions, const float *inv_freq,
                         uint32_t num_heads, uint32_t num_kv_heads, uint32_t head_dim,
                         uint32_t interleaved) {
  const uint64_t t = blockIdx.x, tokens = gridDim.x;
  const uint32_t h = blockIdx.y, half = head_dim / 2;
  const uint64_t q_w = (uint64_t)num_heads * head_dim, kv_w = (uint64_t)num_kv_heads * head_dim;
  const T *src = qkv + t * (q_w + 2 * kv_w) + (uint64_t)h * head_dim;
  T *dst;
  if (h < num_heads) {
    dst = out + t * q_w + (uint64_t)h * head_dim;
  } else if (h < num_heads + num_kv_heads) {
    dst = out + tokens * q_w + t * kv_w + (uint64_t)(h - num_heads) * head_dim;
  } else {
    dst = out + tokens * (q_w + kv_w) + t * kv_w + (uint64_t)(h - num_heads - num_kv_heads) * head_dim;
    for (uint32_t i = threadIdx.x; i < head_dim; i += blockDim.x) dst[i] = src[i];
    return;
  }
  for (uint32_t i = threadIdx.x; i < half; i += blockDim.x) {
    const uint32_t i0 = interleaved ? 2 * i : i, i1 = interleaved ? 2 * i + 1 : i + half;
    const float angle = (float)positions[t] * inv_freq[i];
    const float c = cosf(angle), s = sinf(angle);
    const float x0 = to_f32(src[i0]), x1 = to_f32(src[i1]);
    dst[i0] = from_f32<T>(x0 * c - x1 * s);
    dst[i1] = from_f32<T>(x0 * s + x1 * c);
  }
}

#define INSTANTIATE(T, SUFFIX)                                                                 \
  extern "C" __global__ void weir_add_rms_norm_##SUFFIX(const T *x, const T *a, const T *w,    \
                                                         T *out, uint32_t rows,                \
                                                         uint32_t width, float eps) {          \
    add_rms_norm<T>(x, a, w, out, rows, width, eps);                                           \
  }                                                                                            \
  extern "C" __global__ void weir_silu_mul_##SUFFIX(const T *gu, T *out, uint32_t rows,        \
                                                     uint32_t inter) {                         \
    silu_mul<T>(gu, out, rows, inter);                                                         \
  }                                                                                            \
  extern "C" __global__ void weir_rope_qkv_##SUFFIX(                                           \
      const T *qkv, T *out, const uint32_t *positions, const float *inv_freq,                  \
      uint32_t num_heads, uint32_t num_kv_heads, uint32_t head_dim, uint32_t interleaved) {     \
    rope_qkv<T>(qkv, out, positions, inv_freq, num_heads, num_kv_heads, head_dim, interleaved); \
  }

INSTANTIATE(float, f32)
#ifdef __CUDACC__
INSTANTIATE(__half, f16)
INSTANTIATE(__nv_bfloat16, bf16)
#endif
