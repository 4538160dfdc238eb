// Small per-layer ops fused for CPU: each replaces several torch calls whose dispatch cost, at batch
// one, rivals their arithmetic (rotary was roll + cat + 2 mul + add per layer; SwiGLU silu + mul).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>

#include "simd_exp.h"

// x [T, H, D] float32 (head dim contiguous, any row/head strides); cos, signed_sin [P, D] float32
// contiguous; positions [T] int64 -> [T, H, D]: x * cos + roll(x, D/2) * signed_sin at each row's
// position (HF rotate_half layout, the sign folded into the table). The compiler may fuse a product
// and the sum into one FMA, so results can differ from torch's in the last bit.
torch::Tensor rotary(torch::Tensor x, torch::Tensor cos, torch::Tensor signed_sin, torch::Tensor positions) {
  TORCH_CHECK(x.dtype() == torch::kFloat32 && x.dim() == 3 && x.stride(2) == 1,
              "x must be a [tokens, heads, head_dim] float32 tensor with a contiguous head dim");
  TORCH_CHECK(cos.is_contiguous() && signed_sin.is_contiguous() && cos.size(1) == x.size(2),
              "cos and sin tables must be contiguous [positions, head_dim]");
  TORCH_CHECK(positions.dtype() == torch::kInt64 && positions.numel() == x.size(0), "one int64 position per token");
  const int64_t T = x.size(0), H = x.size(1), D = x.size(2), half = D / 2, P = cos.size(0);
  auto out = torch::empty({T, H, D}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* cp = cos.data_ptr<float>();
  const float* sp = signed_sin.data_ptr<float>();
  const int64_t* pp = positions.data_ptr<int64_t>();
  float* op = out.data_ptr<float>();
  const int64_t st = x.stride(0), sh = x.stride(1);
  for (int64_t t = 0; t < T; ++t) TORCH_CHECK(pp[t] >= 0 && pp[t] < P, "position ", pp[t], " is beyond the rotary table");
  at::parallel_for(0, T * H, 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t t = r / H, h = r % H;
      const float* in = xp + t * st + h * sh;
      const float* c = cp + pp[t] * D;
      const float* s = sp + pp[t] * D;
      float* o = op + r * D;
      for (int64_t i = 0; i < half; ++i) {
        const float a = in[i] * c[i];
        const float b = in[i + half] * s[i];
        o[i] = a + b;
      }
      for (int64_t i = half; i < D; ++i) {
        const float a = in[i] * c[i];
        const float b = in[i - half] * s[i];
        o[i] = a + b;
      }
    }
  });
  return out;
}

// gate_up [T, 2I] float32 -> [T, I]: silu(gate) * up, gate the first half of each row.
torch::Tensor silu_mul(torch::Tensor gate_up) {
  TORCH_CHECK(gate_up.dtype() == torch::kFloat32 && gate_up.dim() == 2 && gate_up.size(1) % 2 == 0,
              "gate_up must be a [tokens, 2 * intermediate] float32 tensor");
  auto gu = gate_up.contiguous();
  const int64_t T = gu.size(0), I = gu.size(1) / 2;
  auto out = torch::empty({T, I}, gu.options());
  const float* gp = gu.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, T, 16, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const float* g = gp + t * 2 * I;
      const float* u = g + I;
      float* o = op + t * I;
      int64_t i = 0;
#if defined(__AVX2__) && defined(__FMA__)
      // libm's expf is scalar (the loop it sat in did not vectorize): eight lanes of exp8 instead.
      for (; i + 8 <= I; i += 8) {
        const __m256 x = _mm256_loadu_ps(g + i);
        const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
        const __m256 silu = _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.f), e));
        _mm256_storeu_ps(o + i, _mm256_mul_ps(silu, _mm256_loadu_ps(u + i)));
      }
#endif
      for (; i < I; ++i) o[i] = g[i] / (1.f + std::exp(-g[i])) * u[i];
    }
  });
  return out;
}
