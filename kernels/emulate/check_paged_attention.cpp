// Runs kernels/paged_attention.cu (f32) under the CPU emulation of cuda_emulation.h against a
// naive reference: KV write by slot, then split-K paged attention over random block tables for
// packed rows: each sequence's last `rows` positions (1: a decode; more: a prompt chunk whose
// rows see causally growing contexts).
// Exit status 0 when every case is within 1e-4; prints one line per case.
#include "../paged_attention.cu"

#include <cstdio>
#include <random>

struct Case {
  uint32_t num_seqs, num_kv_heads, group, head_dim, block_size;
  std::vector<uint32_t> ctx;
  std::vector<uint32_t> rows;  // query rows per sequence (its last positions)
};

static float check(const Case &c, std::mt19937 &rng) {
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  const uint32_t H = c.num_kv_heads * c.group, D = c.head_dim, W = c.num_kv_heads * D;
  uint32_t max_ctx = 0, max_blocks = 0, num_blocks = 0;
  for (auto n : c.ctx) {
    max_ctx = std::max(max_ctx, n);
    max_blocks = std::max(max_blocks, (n + c.block_size - 1) / c.block_size);
    num_blocks += (n + c.block_size - 1) / c.block_size;
  }
  num_blocks += 2;
  std::vector<uint32_t> perm(num_blocks);
  for (uint32_t i = 0; i < num_blocks; ++i) perm[i] = i;
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<uint32_t> tables(c.num_seqs * max_blocks, 0);
  uint32_t next = 0;
  for (uint32_t s = 0; s < c.num_seqs; ++s)
    for (uint32_t b = 0; b < (c.ctx[s] + c.block_size - 1) / c.block_size; ++b)
      tables[s * max_blocks + b] = perm[next++];
  const uint32_t slots = num_blocks * c.block_size;
  std::vector<float> k_pool(slots * W, 0.f), v_pool(slots * W, 0.f);
  // every token's K/V written through the KV write kernel, one sequence at a time
  std::vector<std::vector<float>> ks(c.num_seqs), vs(c.num_seqs);
  for (uint32_t s = 0; s < c.num_seqs; ++s) {
    const uint32_t n = c.ctx[s];
    std::vector<float> k(n * W), v(n * W);
    std::vector<uint32_t> slot(n);
    for (auto &x : k) x = u(rng);
    for (auto &x : v) x = u(rng);
    for (uint32_t p = 0; p < n; ++p)
      slot[p] = tables[s * max_blocks + p / c.block_size] * c.block_size + p % c.block_size;
    emu_launch({n, 1, 1}, {32, 1, 1}, [&] { weir_kv_write_f32(k_pool.data(), k.data(), slot.data(), W); });
    emu_launch({n, 1, 1}, {32, 1, 1}, [&] { weir_kv_write_f32(v_pool.data(), v.data(), slot.data(), W); });
    ks[s] = k;
    vs[s] = v;
  }
  // packed rows: sequence s contributes its last c.rows[s] positions
  std::vector<uint32_t> row_seq, row_ctx;
  for (uint32_t s = 0; s < c.num_seqs; ++s)
    for (uint32_t r = 0; r < c.rows[s]; ++r) {
      row_seq.push_back(s);
      row_ctx.push_back(c.ctx[s] - c.rows[s] + r + 1);
    }
  const uint32_t R = (uint32_t)row_seq.size();
  std::vector<float> q(R * H * D);
  for (auto &x : q) x = u(rng);
  const uint32_t parts = (max_ctx + PARTITION - 1) / PARTITION;
  std::vector<float> pm(R * H * parts), ps(pm.size()), po(pm.size() * D);
  std::vector<float> out(R * H * D, 0.f);
  const float scale = 1.f / std::sqrt((float)D);
  emu_launch({R, c.num_kv_heads, parts}, {THREADS, 1, 1}, [&] {
    weir_paged_attention_partial_f32(q.data(), k_pool.data(), v_pool.data(), tables.data(),
                                     row_seq.data(), row_ctx.data(), pm.data(), ps.data(),
                                     po.data(), c.num_kv_heads, c.group, D, c.block_size,
                                     max_blocks, scale);
  });
  emu_launch({R, H, 1}, {std::min(D, 128u), 1, 1}, [&] {
    weir_paged_attention_reduce_f32(pm.data(), ps.data(), po.data(), out.data(), parts, D);
  });
  float worst = 0.f;
  for (uint32_t row = 0; row < R; ++row)
    for (uint32_t h = 0; h < H; ++h) {
      const uint32_t s = row_seq[row], ctx = row_ctx[row];
      const uint32_t kv = (h / c.group) * D;
      const float *qh = &q[(row * H + h) * D];
      std::vector<double> w(ctx);
      double m = -1e300, total = 0;
      for (uint32_t j = 0; j < ctx; ++j) {
        double acc = 0;
        for (uint32_t d = 0; d < D; ++d) acc += (double)qh[d] * ks[s][j * W + kv + d];
        w[j] = acc * scale;
        m = std::max(m, w[j]);
      }
      for (auto &x : w) total += (x = std::exp(x - m));
      for (uint32_t d = 0; d < D; ++d) {
        double acc = 0;
        for (uint32_t j = 0; j < ctx; ++j) acc += w[j] * vs[s][j * W + kv + d];
        worst = std::max(worst, (float)std::fabs(acc / total - out[(row * H + h) * D + d]));
      }
    }
  return worst;
}

int main() {
  std::mt19937 rng(7);
  const std::vector<Case> cases = {
      {3, 2, 4, 64, 16, {5, 40, 17}, {1, 1, 1}},
      {2, 2, 8, 128, 16, {1100, 513}, {1, 1}},  // three and two partitions
      {4, 4, 1, 64, 1, {9, 1, 33, 2}, {4, 1, 6, 2}},  // prompt chunks beside decodes
      {2, 1, 8, 128, 32, {512, 700}, {3, 1}},
      {1, 2, 4, 64, 16, {40}, {40}},  // a whole prompt
  };
  int failed = 0;
  for (const auto &c : cases) {
    const float e = check(c, rng);
    std::printf("seqs %u kv_heads %u group %u head_dim %u block %u rows %u..: max error %.2e\n",
                c.num_seqs, c.num_kv_heads, c.group, c.head_dim, c.block_size, c.rows[0], e);
    if (!(e < 1e-4f)) failed = 1;
  }
  return failed;
}
