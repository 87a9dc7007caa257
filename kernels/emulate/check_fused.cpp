// Runs kernels/fused.cu (f32) under the CPU emulation of cuda_emulation.h against naive double
// references: the residual add + RMSNorm (widths below, at and above one pass of the block,
// several rows), SiLU-mul over a grid smaller than the data (grid-stride), and RoPE of packed
// Q/K with V copied (interleaved and Hugging Face pairs, GQA, head dims 8 and 64, tokens at
// different positions). Prints one line per check and "N failures"; exit status 0 when none.
#include "../fused.cu"

#include <cstdio>
#include <random>

static int failures = 0;

static void report(const char *what, double err, double tol) {
  const bool ok = err <= tol;
  std::printf("%s: max error %.3g (tolerance %.1g) %s\n", what, err, tol, ok ? "ok" : "FAIL");
  if (!ok) failures++;
}

static std::vector<float> random_vec(size_t n, std::mt19937 &rng, float scale = 1.f) {
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(n);
  for (auto &x : v) x = u(rng);
  return v;
}

static void check_add_rms_norm(uint32_t rows, uint32_t width, std::mt19937 &rng) {
  const float eps = 1e-5f;
  auto x = random_vec((size_t)rows * width, rng, 3.f), a = random_vec((size_t)rows * width, rng);
  auto w = random_vec(width, rng, 2.f);
  std::vector<float> out(2 * (size_t)rows * width, NAN);
  emu_launch({rows, 1, 1}, {NORM_THREADS, 1, 1}, [&] {
    weir_add_rms_norm_f32(x.data(), a.data(), w.data(), out.data(), rows, width, eps);
  });
  double err = 0;
  for (uint32_t r = 0; r < rows; ++r) {
    double sq = 0;
    for (uint32_t i = 0; i < width; ++i) {
      const double s = (double)x[r * width + i] + a[r * width + i];
      sq += s * s;
    }
    const double scale = 1.0 / std::sqrt(sq / width + eps);
    for (uint32_t i = 0; i < width; ++i) {
      const double s = (double)x[r * width + i] + a[r * width + i];
      err = std::max(err, std::abs(out[(size_t)r * width + i] - s));
      const double h = s * scale * w[i];
      err = std::max(err, std::abs(out[((size_t)rows + r) * width + i] - h) / (1 + std::abs(h)));
    }
  }
  char what[96];
  std::snprintf(what, sizeof what, "add_rms_norm rows %u width %u", rows, width);
  report(what, err, 1e-5);
}

static void check_silu_mul(uint32_t rows, uint32_t inter, std::mt19937 &rng) {
  auto gu = random_vec((size_t)rows * 2 * inter, rng, 6.f);
  std::vector<float> out((size_t)rows * inter, NAN);
  // 3 blocks of 64 threads: fewer than the elements, so each thread strides
  emu_launch({3, 1, 1}, {64, 1, 1}, [&] { weir_silu_mul_f32(gu.data(), out.data(), rows, inter); });
  double err = 0;
  for (uint32_t r = 0; r < rows; ++r)
    for (uint32_t i = 0; i < inter; ++i) {
      const double g = gu[(size_t)r * 2 * inter + i], u = gu[(size_t)r * 2 * inter + inter + i];
      const double y = g / (1 + std::exp(-g)) * u;
      err = std::max(err, std::abs(out[(size_t)r * inter + i] - y) / (1 + std::abs(y)));
    }
  char what[96];
  std::snprintf(what, sizeof what, "silu_mul rows %u inter %u", rows, inter);
  report(what, err, 1e-5);
}

static void check_rope_qkv(uint32_t tokens, uint32_t heads, uint32_t kv_heads, uint32_t dim,
                           bool interleaved, std::mt19937 &rng) {
  const uint32_t half = dim / 2, width = (heads + 2 * kv_heads) * dim;
  auto qkv = random_vec((size_t)tokens * width, rng);
  std::vector<uint32_t> positions(tokens);
  std::vector<float> inv_freq(half);
  for (uint32_t i = 0; i < half; ++i) inv_freq[i] = (float)std::pow(10000.0, -2.0 * i / dim);
  // tokens far apart (a prompt chunk beside a long decode)
  for (uint32_t t = 0; t < tokens; ++t) positions[t] = 7 * t + 3 + (t == tokens - 1 ? 1000 : 0);
  std::vector<double> angle((size_t)tokens * half);
  for (uint32_t t = 0; t < tokens; ++t)
    for (uint32_t i = 0; i < half; ++i)
      angle[t * half + i] = (double)(float)((float)positions[t] * inv_freq[i]);
  std::vector<float> out((size_t)tokens * width, NAN);
  emu_launch({tokens, heads + 2 * kv_heads, 1}, {std::min(half, 32u), 1, 1}, [&] {
    weir_rope_qkv_f32(qkv.data(), out.data(), positions.data(), inv_freq.data(), heads, kv_heads,
                      dim, interleaved ? 1 : 0);
  });
  double err = 0;
  const size_t q_block = (size_t)tokens * heads * dim, kv_block = (size_t)tokens * kv_heads * dim;
  for (uint32_t t = 0; t < tokens; ++t)
    for (uint32_t h = 0; h < heads + 2 * kv_heads; ++h) {
      const float *src = &qkv[(size_t)t * width + h * dim];
      const float *dst = h < heads ? &out[((size_t)t * heads + h) * dim]
                         : h < heads + kv_heads
                             ? &out[q_block + ((size_t)t * kv_heads + h - heads) * dim]
                             : &out[q_block + kv_block + ((size_t)t * kv_heads + h - heads - kv_heads) * dim];
      for (uint32_t i = 0; i < half; ++i) {
        const uint32_t i0 = interleaved ? 2 * i : i, i1 = interleaved ? 2 * i + 1 : i + half;
        double y0 = src[i0], y1 = src[i1];
        if (h < heads + kv_heads) {  // q and k rotate, v is copied
          const double c = std::cos(angle[t * half + i]), s = std::sin(angle[t * half + i]);
          y0 = src[i0] * c - src[i1] * s;
          y1 = src[i0] * s + src[i1] * c;
        }
        err = std::max({err, std::abs(dst[i0] - y0), std::abs(dst[i1] - y1)});
      }
    }
  char what[128];
  std::snprintf(what, sizeof what, "rope_qkv tokens %u heads %u/%u dim %u %s", tokens, heads,
                kv_heads, dim, interleaved ? "interleaved" : "neox");
  report(what, err, 1e-5);
}

int main() {
  std::mt19937 rng(11);
  check_add_rms_norm(3, 100, rng);
  check_add_rms_norm(2, NORM_THREADS, rng);
  check_add_rms_norm(4, 2048 + 5, rng);
  check_silu_mul(5, 300, rng);
  check_rope_qkv(3, 4, 2, 8, true, rng);
  check_rope_qkv(3, 4, 2, 8, false, rng);
  check_rope_qkv(2, 8, 1, 64, false, rng);
  check_rope_qkv(2, 6, 6, 64, true, rng);
  std::printf("%d failures\n", failures);
  return failures == 0 ? 0 : 1;
}
