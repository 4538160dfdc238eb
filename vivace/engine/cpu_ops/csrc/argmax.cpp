// Row-wise argmax (torch's CPU argmax is scalar: [128, 49152] took 5.5 ms, a vectorised max 0.5 ms).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>

// x [B, V] float32 -> [B] int64: the first index of each row's largest value, NaN counting as
// largest (as torch.argmax). One vectorised pass finds the max and whether any NaN is present,
// a second finds where it first occurs.
torch::Tensor argmax_rows(torch::Tensor x) {
  TORCH_CHECK(x.dtype() == torch::kFloat32 && x.dim() == 2 && x.size(1) > 0,
              "x must be a 2-D float32 tensor with at least one column");
  auto xc = x.contiguous();
  const int64_t B = xc.size(0), V = xc.size(1);
  auto out = torch::empty({B}, torch::kInt64);
  const float* xp = xc.data_ptr<float>();
  int64_t* op = out.data_ptr<int64_t>();
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const float* row = xp + b * V;
      float best = -INFINITY;
      int nan = 0;
#pragma omp simd reduction(max : best) reduction(| : nan)
      for (int64_t i = 0; i < V; ++i) {
        best = row[i] > best ? row[i] : best;
        nan |= row[i] != row[i];
      }
      // Find the block holding the first match with a vectorised test per block, then the match.
      constexpr int64_t kBlock = 256;
      int64_t index = 0;
      for (int64_t start = 0; start < V; start += kBlock) {
        const int64_t stop = std::min(start + kBlock, V);
        int hit = 0;
#pragma omp simd reduction(| : hit)
        for (int64_t i = start; i < stop; ++i) hit |= nan ? row[i] != row[i] : row[i] == best;
        if (!hit) continue;
        index = start;
        while (!(nan ? row[index] != row[index] : row[index] == best)) ++index;
        break;
      }
      op[b] = index;
    }
  });
  return out;
}
