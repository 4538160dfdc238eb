// Paged decode attention on CPU: one query token per sequence, keys and values read in place
// from the block-paged cache (no gather copy). Parallel over (sequence, kv head) with OpenMP.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <vector>
#include <algorithm>

// q [D, H, d], k_cache/v_cache [S, KVH, d] (float32, contiguous), block_tables [D, MB] int32,
// context_lens [D] int32. Returns [D, H, d].
torch::Tensor paged_decode_attention(
    torch::Tensor q, torch::Tensor k_cache, torch::Tensor v_cache,
    torch::Tensor block_tables, torch::Tensor context_lens, int64_t block_size, double scale) {
  TORCH_CHECK(q.dtype() == torch::kFloat32 && k_cache.dtype() == torch::kFloat32, "float32 only");
  TORCH_CHECK(q.is_contiguous() && k_cache.is_contiguous() && v_cache.is_contiguous(), "contiguous inputs only");
  const int64_t D = q.size(0), H = q.size(1), d = q.size(2);
  const int64_t KVH = k_cache.size(1);
  const int64_t group = H / KVH;
  const int64_t MB = block_tables.size(1);
  auto bt = block_tables.contiguous();
  auto cl = context_lens.contiguous();
  auto out = torch::empty_like(q);
  const float* qp = q.data_ptr<float>();
  const float* kp = k_cache.data_ptr<float>();
  const float* vp = v_cache.data_ptr<float>();
  const int32_t* btp = bt.data_ptr<int32_t>();
  const int32_t* clp = cl.data_ptr<int32_t>();
  float* op = out.data_ptr<float>();
  const float fscale = static_cast<float>(scale);

  at::parallel_for(0, D * KVH, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores;
    std::vector<float> acc(group * d);
    for (int64_t work = begin; work < end; ++work) {
      const int64_t s = work / KVH, kh = work % KVH;
      const int64_t ctx = clp[s];
      scores.resize(group * ctx);
      const float* qs = qp + (s * H + kh * group) * d;
      // Pass 1: scores for every query head of this kv head, reading each key once.
      for (int64_t t = 0; t < ctx; ++t) {
        const int64_t slot = static_cast<int64_t>(btp[s * MB + t / block_size]) * block_size + t % block_size;
        const float* kv = kp + (slot * KVH + kh) * d;
        for (int64_t g = 0; g < group; ++g) {
          const float* qg = qs + g * d;
          float dot = 0.f;
#pragma omp simd reduction(+ : dot)
          for (int64_t i = 0; i < d; ++i) dot += qg[i] * kv[i];
          scores[g * ctx + t] = dot * fscale;
        }
      }
      // Softmax per query head.
      for (int64_t g = 0; g < group; ++g) {
        float* sg = scores.data() + g * ctx;
        float mx = -INFINITY;
        for (int64_t t = 0; t < ctx; ++t) mx = std::max(mx, sg[t]);
        float sum = 0.f;
        for (int64_t t = 0; t < ctx; ++t) { sg[t] = std::exp(sg[t] - mx); sum += sg[t]; }
        const float inv = 1.f / sum;
        for (int64_t t = 0; t < ctx; ++t) sg[t] *= inv;
      }
      // Pass 2: weighted sum of values, reading each value once.
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int64_t t = 0; t < ctx; ++t) {
        const int64_t slot = static_cast<int64_t>(btp[s * MB + t / block_size]) * block_size + t % block_size;
        const float* vv = vp + (slot * KVH + kh) * d;
        for (int64_t g = 0; g < group; ++g) {
          const float w = scores[g * ctx + t];
          float* ag = acc.data() + g * d;
#pragma omp simd
          for (int64_t i = 0; i < d; ++i) ag[i] += w * vv[i];
        }
      }
      float* os = op + (s * H + kh * group) * d;
      std::copy(acc.begin(), acc.end(), os);
    }
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("paged_decode_attention", &paged_decode_attention, "paged decode attention (CPU, float32)");
}
