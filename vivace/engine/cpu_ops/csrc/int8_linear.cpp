// int8 linear for CPU in one call: per-row activation quantization, int8 x int8 -> int32 matmul
// (oneDNN through at::_int_mm), then the float rescale, so batch-1 decode pays one dispatch, not nine.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>

// x [M, K] float32; weight_t [K, N] int8 (a transposed view); scales [N] float32; bias [N] or empty.
torch::Tensor int8_linear(torch::Tensor x, torch::Tensor weight_t, torch::Tensor scales, c10::optional<torch::Tensor> bias) {
  TORCH_CHECK(x.dtype() == torch::kFloat32 && x.dim() == 2, "x must be a 2-D float32 tensor");
  auto xc = x.contiguous();
  const int64_t M = xc.size(0), K = xc.size(1), N = weight_t.size(1);
  auto xq = torch::empty({M, K}, xc.options().dtype(torch::kInt8));
  auto row_scale = torch::empty({M}, xc.options());
  const float* xp = xc.data_ptr<float>();
  int8_t* qp = xq.data_ptr<int8_t>();
  float* rs = row_scale.data_ptr<float>();
  at::parallel_for(0, M, 16, [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      const float* row = xp + m * K;
      float mx = 0.f;
      for (int64_t k = 0; k < K; ++k) mx = std::max(mx, std::fabs(row[k]));
      const float scale = (mx + 1e-12f) / 127.f;
      const float inv = 1.f / scale;
      rs[m] = scale;
      int8_t* q = qp + m * K;
      for (int64_t k = 0; k < K; ++k) q[k] = static_cast<int8_t>(std::nearbyint(row[k] * inv));
    }
  });
  auto acc = at::_int_mm(xq, weight_t);  // [M, N] int32
  auto out = torch::empty({M, N}, xc.options());
  const int32_t* ap = acc.data_ptr<int32_t>();
  const float* sp = scales.data_ptr<float>();
  const float* bp = (bias.has_value() && bias->defined()) ? bias->data_ptr<float>() : nullptr;
  float* op = out.data_ptr<float>();
  at::parallel_for(0, M, 16, [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      const float r = rs[m];
      const int32_t* a = ap + m * N;
      float* o = op + m * N;
      if (bp) {
        for (int64_t n = 0; n < N; ++n) o[n] = static_cast<float>(a[n]) * r * sp[n] + bp[n];
      } else {
        for (int64_t n = 0; n < N; ++n) o[n] = static_cast<float>(a[n]) * r * sp[n];
      }
    }
  });
  return out;
}
