// Multi-LoRA on a batch mixing adapters, gathered per row (punica's BGMV/SGMV on the CPU): each token adds
// only its own adapter's low-rank product, at the adapter's own rank, so a step costs the arithmetic
// its tokens need rather than every loaded slot's at the largest rank. Tokens are grouped by adapter
// into chunks, so each adapter row is read once per chunk (from L1) rather than once per token.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <vector>

namespace {
constexpr int64_t kChunk = 16;  // tokens of one adapter computed together
}

// y [T, N] += per token t with slot s = slots[t] >= 0, per part p (output columns bounds[p]..bounds[p+1]):
//   sum over r < ranks[s] of (x[t] . a[row]) * b[row, part columns], row = (s * P + p) * max_rank + r.
// a [S * P * max_rank, K] and b [S * P * max_rank, N] float32 are LoRALinear's slot-stacked matrices.
void lora_add(torch::Tensor y, torch::Tensor x, torch::Tensor slots, torch::Tensor a, torch::Tensor b,
              torch::Tensor ranks, std::vector<int64_t> bounds, int64_t max_rank) {
  TORCH_CHECK(x.dtype() == torch::kFloat32 && y.dtype() == torch::kFloat32 && a.dtype() == torch::kFloat32 &&
              b.dtype() == torch::kFloat32, "lora_add runs on float32 tensors");
  TORCH_CHECK(slots.dtype() == torch::kInt32 && ranks.dtype() == torch::kInt32, "int32 slots and ranks");
  TORCH_CHECK(x.dim() == 2 && y.dim() == 2 && x.size(0) == y.size(0) && slots.size(0) == x.size(0),
              "x [T, K], y [T, N] and slots [T] must agree");
  TORCH_CHECK(x.is_contiguous() && y.is_contiguous() && a.is_contiguous() && b.is_contiguous(), "contiguous inputs only");
  const int64_t T = x.size(0), K = x.size(1), N = y.size(1);
  const int64_t P = static_cast<int64_t>(bounds.size()) - 1;
  TORCH_CHECK(P >= 1 && bounds[P] == N && a.size(1) == K && b.size(1) == N, "part bounds must cover y's columns");
  const int64_t S = ranks.size(0);
  TORCH_CHECK(a.size(0) >= S * P * max_rank && b.size(0) >= S * P * max_rank, "fewer stacked rows than slots");
  const float* xp = x.data_ptr<float>();
  const float* ap = a.data_ptr<float>();
  const float* bp = b.data_ptr<float>();
  const int32_t* sp = slots.data_ptr<int32_t>();
  const int32_t* rp = ranks.data_ptr<int32_t>();
  float* yp = y.data_ptr<float>();

  // Tokens grouped by slot (stable), cut into chunks of at most kChunk tokens of one slot.
  std::vector<std::vector<int64_t>> by_slot(S);
  for (int64_t t = 0; t < T; ++t) {
    TORCH_CHECK(sp[t] < S, "slot ", sp[t], " out of range");
    if (sp[t] >= 0) by_slot[sp[t]].push_back(t);
  }
  std::vector<std::pair<int64_t, std::vector<int64_t>>> chunks;  // (slot, its tokens)
  for (int64_t s = 0; s < S; ++s) {
    for (size_t i = 0; i < by_slot[s].size(); i += kChunk) {
      const size_t end = std::min(by_slot[s].size(), i + kChunk);
      chunks.emplace_back(s, std::vector<int64_t>(by_slot[s].begin() + i, by_slot[s].begin() + end));
    }
  }
  at::parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t begin, int64_t end) {
    std::vector<float> h(kChunk * max_rank);
    for (int64_t c = begin; c < end; ++c) {
      const int64_t s = chunks[c].first;
      const std::vector<int64_t>& tokens = chunks[c].second;
      const int64_t n_tok = static_cast<int64_t>(tokens.size());
      const int64_t rank = std::min<int64_t>(rp[s], max_rank);
      for (int64_t p = 0; p < P; ++p) {
        const int64_t first = (s * P + p) * max_rank, lo = bounds[p], hi = bounds[p + 1];
        const float* a_part = ap + first * K;
        const float* b_part = bp + first * N;
        for (int64_t i = 0; i < n_tok; ++i) {  // h[i][r] = x[token i] . a[row r], four rows at a time
          const float* xr = xp + tokens[i] * K;
          float* hi_row = h.data() + i * max_rank;
          int64_t r = 0;
          for (; r + 4 <= rank; r += 4) {
            const float *a0 = a_part + r * K, *a1 = a0 + K, *a2 = a1 + K, *a3 = a2 + K;
            float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
            for (int64_t k = 0; k < K; ++k) {
              s0 += xr[k] * a0[k];
              s1 += xr[k] * a1[k];
              s2 += xr[k] * a2[k];
              s3 += xr[k] * a3[k];
            }
            hi_row[r] = s0, hi_row[r + 1] = s1, hi_row[r + 2] = s2, hi_row[r + 3] = s3;
          }
          for (; r < rank; ++r) {
            const float* ar = a_part + r * K;
            float acc = 0.f;
#pragma omp simd reduction(+ : acc)
            for (int64_t k = 0; k < K; ++k) acc += xr[k] * ar[k];
            hi_row[r] = acc;
          }
        }
        for (int64_t r = 0; r < rank; ++r) {  // y[token i, part columns] += h[i][r] * b[row r, part columns]
          const float* br = b_part + r * N;
          for (int64_t i = 0; i < n_tok; ++i) {
            float* yr = yp + tokens[i] * N;
            const float hr = h[i * max_rank + r];
#pragma omp simd
            for (int64_t n = lo; n < hi; ++n) yr[n] += hr * br[n];
          }
        }
      }
    }
  });
}
