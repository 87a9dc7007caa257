// Runs kernels/sampling.cu under the CPU emulation of cuda_emulation.h: greedy and top_k = 1 are
// the argmax, top-k and top-p keep exactly the host sampler's candidate sets, the same seed gives
// the same token, and the draws follow softmax(logits / temperature) within the kept set.
// Exit status 0 when every check holds.
#include "../sampling.cu"

#include <cstdio>
#include <map>
#include <random>

static std::vector<uint32_t> sample(const std::vector<float> &logits, uint32_t vocab,
                                    std::vector<float> t, std::vector<uint32_t> k,
                                    std::vector<float> p, std::vector<uint64_t> seeds,
                                    unsigned threads = 16) {
  const uint32_t rows = (uint32_t)t.size();
  std::vector<uint32_t> out(rows);
  emu_launch({rows, 1, 1}, {threads, 1, 1}, [&] {
    weir_sample_f32(logits.data(), vocab, t.data(), k.data(), p.data(), seeds.data(), out.data());
  });
  return out;
}

static int failures = 0;
#define CHECK(cond, ...)                   \
  if (!(cond)) {                           \
    std::printf("FAIL: " __VA_ARGS__);     \
    std::printf("\n");                     \
    failures++;                            \
  }

int main() {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-4.f, 4.f);
  const uint32_t V = 1000;
  std::vector<float> row(V);
  for (auto &x : row) x = u(rng);
  uint32_t argmax = 0;
  for (uint32_t i = 0; i < V; ++i)
    if (row[i] > row[argmax]) argmax = i;
  // descending order of the row (the host sampler's candidate order)
  std::vector<uint32_t> order(V);
  for (uint32_t i = 0; i < V; ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return row[a] > row[b]; });

  auto g = sample(row, V, {0.f}, {0}, {1.f}, {1});
  CHECK(g[0] == argmax, "greedy %u != argmax %u", g[0], argmax);
  g = sample(row, V, {0.8f}, {1}, {1.f}, {1});
  CHECK(g[0] == argmax, "top_k 1 %u != argmax %u", g[0], argmax);
  // 4 rows at once, each its own parameters, equal to the same rows alone
  std::vector<float> four;
  for (int r = 0; r < 4; ++r) four.insert(four.end(), row.begin(), row.end());
  auto batch = sample(four, V, {0.f, 1.f, 0.7f, 1.3f}, {0, 5, 0, 0}, {1.f, 1.f, 0.9f, 1.f}, {0, 11, 12, 13});
  CHECK(batch[0] == argmax, "batched greedy");
  CHECK(batch[1] == sample(row, V, {1.f}, {5}, {1.f}, {11})[0], "row 1 batched != alone");
  CHECK(batch[2] == sample(row, V, {0.7f}, {0}, {0.9f}, {12})[0], "row 2 batched != alone");
  CHECK(batch[3] == sample(row, V, {1.3f}, {0}, {1.f}, {13})[0], "row 3 batched != alone");

  // top-k 5: every draw among the 5 largest; the draws cover them
  std::map<uint32_t, int> seen;
  for (uint64_t s = 0; s < 300; ++s) seen[sample(row, V, {3.f}, {5}, {1.f}, {s})[0]]++;
  for (auto [tok, n] : seen) {
    const bool top5 = std::find(order.begin(), order.begin() + 5, tok) != order.begin() + 5;
    CHECK(top5, "top_k 5 drew token %u outside the top 5", tok);
  }
  CHECK(seen.size() == 5, "top_k 5 at temperature 3 drew %zu distinct tokens", seen.size());

  // top-p: the kept set is the smallest descending prefix whose mass reaches top_p
  const float t = 1.f, top_p = 0.6f;
  double m = row[order[0]], z = 0, cum = 0;
  for (auto i : order) z += std::exp((row[i] - m) / t);
  size_t keep = 0;
  while (keep < V && cum < top_p * z) cum += std::exp((row[order[keep++]] - m) / t);
  seen.clear();
  for (uint64_t s = 0; s < 400; ++s) seen[sample(row, V, {t}, {0}, {top_p}, {s})[0]]++;
  for (auto [tok, n] : seen) {
    const bool kept = std::find(order.begin(), order.begin() + keep, tok) != order.begin() + keep;
    CHECK(kept, "top_p drew token %u outside the %zu kept", tok, keep);
  }

  // the same seed, the same token
  CHECK(sample(row, V, {1.f}, {0}, {1.f}, {42})[0] == sample(row, V, {1.f}, {0}, {1.f}, {42})[0],
        "seeded draw not reproducible");

  // frequencies follow softmax on a 4-token vocabulary: 4,000 seeds, within 0.03
  const std::vector<float> small = {1.f, 3.f, 2.f, 0.5f};
  std::vector<int> count(4, 0);
  const int n = 4000;
  std::vector<float> rows;
  std::vector<float> ts(n, 1.f), ps(n, 1.f);
  std::vector<uint32_t> ks(n, 0);
  std::vector<uint64_t> seeds(n);
  for (int s = 0; s < n; ++s) {
    rows.insert(rows.end(), small.begin(), small.end());
    seeds[s] = 1000003ull * s + 7;
  }
  for (auto tok : sample(rows, 4, ts, ks, ps, seeds, 4)) count[tok]++;
  double zz = 0;
  for (auto x : small) zz += std::exp(x);
  for (int i = 0; i < 4; ++i) {
    const double want = std::exp(small[i]) / zz, got = (double)count[i] / n;
    CHECK(std::fabs(want - got) < 0.03, "token %d: frequency %.3f, softmax %.3f", i, got, want);
  }
  std::printf("sampling kernel: top_p keeps %zu of %u; %zu distinct draws; %d failures\n", keep, V,
              seen.size(), failures);
  return failures ? 1 : 0;
}
