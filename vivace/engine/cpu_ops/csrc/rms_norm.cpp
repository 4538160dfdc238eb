// RMSNorm over the last dimension in one pass per row (torch's CPU rms_norm is several ops).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>

// x [M, H] float32, weight [H] float32 -> [M, H].
torch::Tensor rms_norm(torch::Tensor x, torch::Tensor weight, double eps) {
  TORCH_CHECK(x.dtype() == torch::kFloat32 && x.dim() == 2, "x must be a 2-D float32 tensor");
  auto xc = x.contiguous();
  const int64_t M = xc.size(0), H = xc.size(1);
  auto out = torch::empty_like(xc);
  const float* xp = xc.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const float feps = static_cast<float>(eps);
  at::parallel_for(0, M, 16, [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      const float* row = xp + m * H;
      float ss = 0.f;
#pragma omp simd reduction(+ : ss)
      for (int64_t h = 0; h < H; ++h) ss += row[h] * row[h];
      const float inv = 1.f / std::sqrt(ss / static_cast<float>(H) + feps);
      float* o = op + m * H;
#pragma omp simd
      for (int64_t h = 0; h < H; ++h) o[h] = row[h] * inv * wp[h];
    }
  });
  return out;
}

// (rms_norm(x + residual), x + residual) in one pass per row: the residual add before each norm.
std::tuple<torch::Tensor, torch::Tensor> add_rms_norm(torch::Tensor x, torch::Tensor residual, torch::Tensor weight, double eps) {
  TORCH_CHECK(x.dtype() == torch::kFloat32 && x.dim() == 2 && residual.sizes() == x.sizes() &&
              residual.dtype() == torch::kFloat32, "x and residual must be 2-D float32 tensors of one shape");
  auto xc = x.contiguous();
  auto rc = residual.contiguous();
  const int64_t M = xc.size(0), H = xc.size(1);
  auto out = torch::empty_like(xc);
  auto summed = torch::empty_like(xc);
  const float* xp = xc.data_ptr<float>();
  const float* rp = rc.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  float* op = out.data_ptr<float>();
  float* sp = summed.data_ptr<float>();
  const float feps = static_cast<float>(eps);
  at::parallel_for(0, M, 16, [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      float* s = sp + m * H;
      float ss = 0.f;
#pragma omp simd reduction(+ : ss)
      for (int64_t h = 0; h < H; ++h) {
        s[h] = xp[m * H + h] + rp[m * H + h];
        ss += s[h] * s[h];
      }
      const float inv = 1.f / std::sqrt(ss / static_cast<float>(H) + feps);
      float* o = op + m * H;
#pragma omp simd
      for (int64_t h = 0; h < H; ++h) o[h] = s[h] * inv * wp[h];
    }
  });
  return {out, summed};
}
