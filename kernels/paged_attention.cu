// weir's paged-attention kernels: the KV write by slot and split-K paged attention of packed
// query rows (decodes and prompt chunks alike).
//
// Layouts (row-major, the same as the CPU backend's host pools):
//   k_pool, v_pool   [num_slots, num_kv_heads * head_dim]      slot = block * block_size + offset
//   block_tables     [num_seqs, max_blocks] u32, padded
//   q                [num_rows, num_heads * head_dim]           every token of the step
//   row_seq          [num_rows] u32 the row's sequence (its block table)
//   row_ctx          [num_rows] u32 keys the row sees: its position + 1 (causal), all of them
//                    already in the pool (the KV write runs first)
//
// Attention: grid (num_rows, num_kv_heads, num_partitions), one block per partition of
// PARTITION keys. A prompt chunk is just several rows of one sequence with growing row_ctx, so
// chunked prefill and prefix-cache hits read earlier context through the block table exactly as
// decodes do (no K-tile reuse across a chunk's rows: simple, not flash). A block reads each key and value row of its KV head once for all `group`
// query heads that share it (GQA), keeps logits in shared memory, and writes the partition's
// max, sum of exponentials and unnormalised output in f32. A second kernel combines the
// partitions. The partition size is fixed, so a row's reduction order never depends on the
// batch it is in. Accumulation is f32 for every storage type.
#include "common.cuh"

#define PARTITION 512
#define THREADS 128
#define MAX_GROUP 8
#define MAX_HEAD_DIM 256

// pool[slots[t], :] = src[t, :] for every token t. grid (num_tokens), block THREADS.
template <typename T>
__device__ void kv_write(T *pool, const T *src, const uint32_t *slots, uint32_t width) {
  const uint32_t t = blockIdx.x;
  const uint64_t dst = (uint64_t)slots[t] * width;
  const uint64_t from = (uint64_t)t * width;
  for (uint32_t i = threadIdx.x; i < width; i += blockDim.x) {
    pool[dst + i] = src[from + i];
  }
}


template <typename T>
__device__ void paged_attention_partial(
    const T *q, const T *k_pool, const T *v_pool, const uint32_t *block_tables,
    const uint32_t *row_seq, const uint32_t *row_ctx, float *part_max, float *part_sum,
    float *part_out, uint32_t num_kv_heads, uint32_t group, uint32_t head_dim,
    uint32_t block_size, uint32_t max_blocks, float scale) {
  __shared__ float q_s[MAX_GROUP * MAX_HEAD_DIM];
  __shared__ float logits[MAX_GROUP * PARTITION];
  __shared__ float m_s[MAX_GROUP];
  __shared__ float l_s[MAX_GROUP];
  const uint32_t row = blockIdx.x, kvh = blockIdx.y, part = blockIdx.z;
  const uint32_t num_parts = gridDim.z;
  const uint32_t num_heads = num_kv_heads * group;
  const uint32_t kv_width = num_kv_heads * head_dim;
  const uint32_t ctx = row_ctx[row];
  const uint32_t start = part * PARTITION;
  const uint32_t end = min(ctx, start + PARTITION);
  // [num_seqs, num_heads, num_parts] and [.., head_dim]
  const uint64_t head0 = (uint64_t)row * num_heads + (uint64_t)kvh * group;
  if (start >= ctx) {
    for (uint32_t g = threadIdx.x; g < group; g += blockDim.x) {
      part_max[(head0 + g) * num_parts + part] = -INFINITY;
      part_sum[(head0 + g) * num_parts + part] = 0.f;
    }
    for (uint32_t i = threadIdx.x; i < group * head_dim; i += blockDim.x) {
      const uint32_t g = i / head_dim, d = i % head_dim;
      part_out[((head0 + g) * num_parts + part) * head_dim + d] = 0.f;
    }
    return;
  }
  const uint32_t n = end - start;
  for (uint32_t i = threadIdx.x; i < group * head_dim; i += blockDim.x) {
    q_s[i] = to_f32(q[head0 * head_dim + i]);
  }
  __syncthreads();
  const uint32_t *table = block_tables + (uint64_t)row_seq[row] * max_blocks;
  // logits: one key per thread, every query head of the group
  for (uint32_t j = threadIdx.x; j < n; j += blockDim.x) {
    const uint32_t pos = start + j;
    const uint64_t slot = (uint64_t)table[pos / block_size] * block_size + pos % block_size;
    const T *k = k_pool + slot * kv_width + (uint64_t)kvh * head_dim;
    for (uint32_t g = 0; g < group; ++g) {
      float acc = 0.f;
      for (uint32_t d = 0; d < head_dim; ++d) acc += q_s[g * head_dim + d] * to_f32(k[d]);
      logits[g * PARTITION + j] = acc * scale;
    }
  }
  __syncthreads();
  // softmax statistics: one warp per query head
  const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (uint32_t g = warp; g < group; g += blockDim.x / 32) {
    float m = -INFINITY;
    for (uint32_t j = lane; j < n; j += 32) m = fmaxf(m, logits[g * PARTITION + j]);
    m = warp_max(m);
    float l = 0.f;
    for (uint32_t j = lane; j < n; j += 32) {
      const float e = __expf(logits[g * PARTITION + j] - m);
      logits[g * PARTITION + j] = e;
      l += e;
    }
    l = warp_sum(l);
    if (lane == 0) {
      m_s[g] = m;
      l_s[g] = l;
    }
  }
  __syncthreads();
  // unnormalised P V: one (query head, dim) per thread, keys in order
  for (uint32_t i = threadIdx.x; i < group * head_dim; i += blockDim.x) {
    const uint32_t g = i / head_dim, d = i % head_dim;
    float acc = 0.f;
    for (uint32_t j = 0; j < n; ++j) {
      const uint32_t pos = start + j;
      const uint64_t slot = (uint64_t)table[pos / block_size] * block_size + pos % block_size;
      acc += logits[g * PARTITION + j] * to_f32(v_pool[slot * kv_width + (uint64_t)kvh * head_dim + d]);
    }
    part_out[((head0 + g) * num_parts + part) * head_dim + d] = acc;
  }
  if (threadIdx.x < group) {
    part_max[(head0 + threadIdx.x) * num_parts + part] = m_s[threadIdx.x];
    part_sum[(head0 + threadIdx.x) * num_parts + part] = l_s[threadIdx.x];
  }
}

// out[row, head, :] from the partitions. grid (num_rows, num_heads), block head_dim threads
// (or THREADS, looping).
template <typename T>
__device__ void paged_attention_reduce(const float *part_max, const float *part_sum,
                                    const float *part_out, T *out, uint32_t num_parts,
                                    uint32_t head_dim) {
  const uint64_t head = (uint64_t)blockIdx.x * gridDim.y + blockIdx.y;
  float m = -INFINITY;
  for (uint32_t p = 0; p < num_parts; ++p) m = fmaxf(m, part_max[head * num_parts + p]);
  float l = 0.f;
  for (uint32_t p = 0; p < num_parts; ++p) {
    l += part_sum[head * num_parts + p] * __expf(part_max[head * num_parts + p] - m);
  }
  const float inv = 1.f / l;
  for (uint32_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float acc = 0.f;
    for (uint32_t p = 0; p < num_parts; ++p) {
      acc += part_out[(head * num_parts + p) * head_dim + d] * __expf(part_max[head * num_parts + p] - m);
    }
    out[head * head_dim + d] = from_f32<T>(acc * inv);
  }
}

#define INSTANTIATE(T, SUFFIX)                                                                 \
  extern "C" __global__ void weir_kv_write_##SUFFIX(T *pool, const T *src,                    \
                                                     const uint32_t *slots, uint32_t width) {  \
    kv_write<T>(pool, src, slots, width);                                                      \
  }                                                                                            \
  extern "C" __global__ void weir_paged_attention_partial_##SUFFIX(                               \
      const T *q, const T *k_pool, const T *v_pool, const uint32_t *block_tables,             \
      const uint32_t *row_seq, const uint32_t *row_ctx, float *part_max, float *part_sum,     \
      float *part_out, uint32_t num_kv_heads, uint32_t group, uint32_t head_dim,              \
      uint32_t block_size, uint32_t max_blocks, float scale) {                                 \
    paged_attention_partial<T>(q, k_pool, v_pool, block_tables, row_seq, row_ctx, part_max,      \
                            part_sum, part_out, num_kv_heads, group, head_dim, block_size,    \
                            max_blocks, scale);                                                \
  }                                                                                            \
  extern "C" __global__ void weir_paged_attention_reduce_##SUFFIX(                                \
      const float *part_max, const float *part_sum, const float *part_out, T *out,            \
      uint32_t num_parts, uint32_t head_dim) {                                                 \
    paged_attention_reduce<T>(part_max, part_sum, part_out, out, num_parts, head_dim);           \
  }

INSTANTIATE(float, f32)
#ifdef __CUDACC__
INSTANTIATE(__half, f16)
INSTANTIATE(__nv_bfloat16, bf16)
#endif
