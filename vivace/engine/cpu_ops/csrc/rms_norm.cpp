// RMSNorm over the last dimension in one pass per row (torch's CPU rms_norm is several ops).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

namespace {

// sum of x[h]^2 over a row, in sixteen lanes where AVX512 is built (then the lanes' fixed reduction), so
// the sum is not one chain of dependent scalar adds.
float sum_squares(const float* x, int64_t H) {
  int64_t h = 0;
  float ss = 0.f;
#ifdef __AVX512F__
  __m512 acc = _mm512_setzero_ps();
  for (; h + 16 <= H; h += 16) {
    const __m512 v = _mm512_loadu_ps(x + h);
    acc = _mm512_fmadd_ps(v, v, acc);
  }
  ss = _mm512_reduce_add_ps(acc);
#endif
  for (; h < H; ++h) ss += x[h] * x[h];
  return ss;
}

// o = x * inv * w over a row.
void scale_row(const float* x, float inv, const float* w, float* o, int64_t H) {
  int64_t h = 0;
#ifdef __AVX512F__
  const __m512 vinv = _mm512_set1_ps(inv);
  for (; h + 16 <= H; h += 16)
    _mm512_storeu_ps(o + h, _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(x + h), vinv), _mm512_loadu_ps(w + h)));
#endif
  for (; h < H; ++h) o[h] = x[h] * inv * w[h];
}

}  // namespace

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
      const float inv = 1.f / std::sqrt(sum_squares(row, H) / static_cast<float>(H) + feps);
      scale_row(row, inv, wp, op + m * H, H);
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
      int64_t h = 0;
#ifdef __AVX512F__
      for (; h + 16 <= H; h += 16)
        _mm512_storeu_ps(s + h, _mm512_add_ps(_mm512_loadu_ps(xp + m * H + h), _mm512_loadu_ps(rp + m * H + h)));
#endif
      for (; h < H; ++h) s[h] = xp[m * H + h] + rp[m * H + h];
      const float inv = 1.f / std::sqrt(sum_squares(s, H) / static_cast<float>(H) + feps);
      scale_row(s, inv, wp, op + m * H, H);
    }
  });
  return {out, summed};
}
