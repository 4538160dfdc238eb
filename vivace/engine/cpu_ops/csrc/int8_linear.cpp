// int8 linear for CPU in one call: per-row activation quantization, int8 x int8 -> int32 matmul, then
// the float rescale, so batch-1 decode pays one dispatch, not nine. The matmul is oneDNN's (at::_int_mm)
// except for 2..8 rows with AVX512-VNNI: oneDNN's GEMM packs the weights on every call there and a batch
// of 2 cost 2.6x one row, so those go through a small kernel over weights packed once at load. Integer
// accumulation is exact, so both paths give the same int32 sums and bitwise the same output.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <tuple>
#if defined(__AVX512F__) && defined(__AVX512VNNI__)
#include <immintrin.h>
#define VIVACE_VNNI 1
#endif

namespace {

constexpr int64_t kTileN = 16;  // output columns per packed tile (one zmm of int32 sums)
constexpr int64_t kGroupK = 4;  // inputs per dot-product group (dpbusd: 4 u8 x s8 products per lane)
constexpr int64_t kMaxSmallRows = 8;

int64_t round_up(int64_t x, int64_t to) { return (x + to - 1) / to * to; }

// Quantize each row of x to int8 with its own scale (max |x| / 127); writes q [M, ld] and scales [M].
void quantize_rows(const float* xp, int64_t M, int64_t K, int8_t* qp, int64_t ld, float* rs) {
  at::parallel_for(0, M, 16, [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      const float* row = xp + m * K;
      float mx = 0.f;
      for (int64_t k = 0; k < K; ++k) mx = std::max(mx, std::fabs(row[k]));
      const float scale = (mx + 1e-12f) / 127.f;
      const float inv = 1.f / scale;
      rs[m] = scale;
      int8_t* q = qp + m * ld;
      for (int64_t k = 0; k < K; ++k) q[k] = static_cast<int8_t>(std::nearbyint(row[k] * inv));
      for (int64_t k = K; k < ld; ++k) q[k] = 0;
    }
  });
}

#ifdef VIVACE_VNNI
// Sums for rows [0, M) of u8 activations (int8 + 128, rows of length Kp) against packed weights:
// acc[m][n] = sum_k (x[m][k] + 128) * w[n][k]; the caller subtracts 128 * column sum.
template <int M>
void small_rows(const uint8_t* xu, int64_t Kp, const int8_t* packed, const int32_t* col_sums, int64_t N,
                int32_t* acc) {
  const int64_t tiles = round_up(N, kTileN) / kTileN, groups = Kp / kGroupK;
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t tile = begin; tile < end; ++tile) {
      __m512i sum[M];
      for (int m = 0; m < M; ++m) sum[m] = _mm512_setzero_si512();
      const int8_t* w = packed + tile * groups * 64;
      for (int64_t g = 0; g < groups; ++g) {
        const __m512i wv = _mm512_loadu_si512(w + g * 64);
        for (int m = 0; m < M; ++m) {
          int32_t four;
          std::memcpy(&four, xu + m * Kp + g * kGroupK, sizeof(four));
          sum[m] = _mm512_dpbusd_epi32(sum[m], _mm512_set1_epi32(four), wv);
        }
      }
      const int64_t n0 = tile * kTileN, width = std::min(kTileN, N - n0);
      const __m512i offset = _mm512_slli_epi32(_mm512_loadu_si512(col_sums + n0), 7);  // 128 * column sum
      for (int m = 0; m < M; ++m) {
        alignas(64) int32_t lanes[kTileN];
        _mm512_store_si512(lanes, _mm512_sub_epi32(sum[m], offset));
        std::memcpy(acc + m * N + n0, lanes, width * sizeof(int32_t));
      }
    }
  });
}
#endif

}  // namespace

// weight_t [K, N] int8 -> (packed [ceil(N/16), ceil(K/4), 16, 4] int8, column sums [ceil(N/16) * 16] int32),
// or two empty tensors where the small-row kernel is not compiled in (no AVX512-VNNI).
std::tuple<torch::Tensor, torch::Tensor> pack_int8_weight(torch::Tensor weight_t) {
  TORCH_CHECK(weight_t.dtype() == torch::kInt8 && weight_t.dim() == 2, "weight_t must be a 2-D int8 tensor");
#ifndef VIVACE_VNNI
  return {torch::empty({0}, torch::kInt8), torch::empty({0}, torch::kInt32)};
#else
  const int64_t K = weight_t.size(0), N = weight_t.size(1);
  const int64_t Np = round_up(N, kTileN), Kp = round_up(K, kGroupK);
  auto packed = torch::zeros({Np / kTileN, Kp / kGroupK, kTileN, kGroupK}, torch::kInt8);
  auto sums = torch::zeros({Np}, torch::kInt32);
  auto w = weight_t.accessor<int8_t, 2>();
  int8_t* pp = packed.data_ptr<int8_t>();
  int32_t* sp = sums.data_ptr<int32_t>();
  for (int64_t n = 0; n < N; ++n) {
    int32_t total = 0;
    for (int64_t k = 0; k < K; ++k) {
      const int8_t value = w[k][n];
      pp[(((n / kTileN) * (Kp / kGroupK) + k / kGroupK) * kTileN + n % kTileN) * kGroupK + k % kGroupK] = value;
      total += value;
    }
    sp[n] = total;
  }
  return {packed, sums};
#endif
}

// x [M, K] float32; weight_t [K, N] int8 (a transposed view); scales [N] float32; bias [N] or None;
// packed, col_sums from pack_int8_weight (or None: oneDNN for every M).
torch::Tensor int8_linear(torch::Tensor x, torch::Tensor weight_t, torch::Tensor scales, c10::optional<torch::Tensor> bias,
                          c10::optional<torch::Tensor> packed, c10::optional<torch::Tensor> col_sums) {
  TORCH_CHECK(x.dtype() == torch::kFloat32 && x.dim() == 2, "x must be a 2-D float32 tensor");
  auto xc = x.contiguous();
  const int64_t M = xc.size(0), K = xc.size(1), N = weight_t.size(1);
  auto row_scale = torch::empty({M}, xc.options());
  float* rs = row_scale.data_ptr<float>();
  torch::Tensor acc;
#ifdef VIVACE_VNNI
  const bool small = M >= 2 && M <= kMaxSmallRows && packed.has_value() && packed->numel() > 0 && col_sums.has_value();
#else
  const bool small = false;
#endif
  if (small) {
#ifdef VIVACE_VNNI
    const int64_t Kp = round_up(K, kGroupK);
    auto xq = torch::empty({M, Kp}, xc.options().dtype(torch::kInt8));
    quantize_rows(xc.data_ptr<float>(), M, K, xq.data_ptr<int8_t>(), Kp, rs);
    auto xu = torch::empty({M, Kp}, xc.options().dtype(torch::kUInt8));
    const int8_t* q = xq.data_ptr<int8_t>();
    uint8_t* u = xu.data_ptr<uint8_t>();
    for (int64_t i = 0; i < M * Kp; ++i) u[i] = static_cast<uint8_t>(q[i] + 128);
    acc = torch::empty({M, N}, xc.options().dtype(torch::kInt32));
    const int8_t* pp = packed->data_ptr<int8_t>();
    const int32_t* cs = col_sums->data_ptr<int32_t>();
    int32_t* ap = acc.data_ptr<int32_t>();
    switch (M) {
      case 2: small_rows<2>(u, Kp, pp, cs, N, ap); break;
      case 3: small_rows<3>(u, Kp, pp, cs, N, ap); break;
      case 4: small_rows<4>(u, Kp, pp, cs, N, ap); break;
      case 5: small_rows<5>(u, Kp, pp, cs, N, ap); break;
      case 6: small_rows<6>(u, Kp, pp, cs, N, ap); break;
      case 7: small_rows<7>(u, Kp, pp, cs, N, ap); break;
      default: small_rows<8>(u, Kp, pp, cs, N, ap); break;
    }
#endif
  } else {
    auto xq = torch::empty({M, K}, xc.options().dtype(torch::kInt8));
    quantize_rows(xc.data_ptr<float>(), M, K, xq.data_ptr<int8_t>(), K, rs);
    acc = at::_int_mm(xq, weight_t);  // [M, N] int32
  }
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
