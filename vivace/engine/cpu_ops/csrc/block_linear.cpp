// Linear layer computed directly on a GGUF file's quantized blocks (Q4_0, Q4_1, Q8_0), as llama.cpp does:
// each activation row is quantized to int8 in blocks of 32 with one float scale per block (and, for the
// 4-bit types, the block's scaled sum), then every weight block meets its activation block in an integer
// dot product rescaled by the two block scales. Decode reads the file's own bytes per weight (Q4_1: 20
// bytes per 32 weights) instead of int8 re-quantized from them (32 bytes per 32 plus a scale per row).
//
// Columns go 8 at a time: each block's (row, column) dot is summed exactly in int32, the 8 columns' sums
// meet in one vector (a horizontal-add tree), are converted once and scaled by the columns' scales times
// the row's, so the float work is shared by 8 outputs. Batch independence: every output element (m, n)
// is computed by the same sequence of operations (per block in order: the exact dot, its scaled fma,
// then the 4-bit minimum term's fma), whatever tile it lands in, so a row's result never depends on
// its batch-mates.
//
// Registered as torch.ops.vivace_cpu.block_linear (its own op library, so this file needs no line in
// another file's module table). AVX2 + FMA + F16C path, and a portable scalar path for other CPUs.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define VIVACE_BLOCK_AVX2 1
#endif

namespace {

// GGML type ids (ggml.h) of the block formats computed here.
constexpr int64_t kQ4_0 = 2, kQ4_1 = 3, kQ8_0 = 8;
constexpr int64_t kBlock = 32;   // weights (and activations) per block
constexpr int64_t kRowChunk = 60;  // activation rows (10 tiles of 6) kept hot while a thread's columns pass

int64_t block_bytes(int64_t qtype) {
  switch (qtype) {
    case kQ4_0: return 18;  // fp16 d, 16 bytes of nibbles
    case kQ4_1: return 20;  // fp16 d, fp16 m, 16 bytes of nibbles
    case kQ8_0: return 34;  // fp16 d, 32 int8
    default: TORCH_CHECK(false, "block_linear: unsupported GGML type id ", qtype, " (Q4_0=2, Q4_1=3, Q8_0=8)");
  }
  return 0;
}

float half_to_float(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, sizeof(h));
#ifdef VIVACE_BLOCK_AVX2
  return _cvtsh_ss(h);
#else
  const uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal half: normalize
      int e = -1;
      uint32_t m = man;
      do { ++e; m <<= 1; } while ((m & 0x400) == 0);
      bits = sign | ((127 - 15 - e) << 23) | ((m & 0x3ff) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
#endif
}

// One activation row quantized per block: q[K] int8, d[nb] scale, s[nb] = d * sum(q) (for the 4-bit minimum term).
struct QuantRows {
  const int8_t* q;
  const float* d;
  const float* s;
  int64_t K, nb;
};

void quantize_rows(const float* x, int64_t M, int64_t K, int8_t* q, float* d, float* s) {
  const int64_t nb = K / kBlock;
  at::parallel_for(0, M, 8, [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      for (int64_t b = 0; b < nb; ++b) {
        const float* xb = x + m * K + b * kBlock;
        int8_t* qb = q + m * K + b * kBlock;
        float amax = 0.f;
        for (int64_t j = 0; j < kBlock; ++j) amax = std::max(amax, std::fabs(xb[j]));
        const float scale = amax / 127.f;
        const float inv = amax > 0.f ? 127.f / amax : 0.f;
        int32_t sum = 0;
        for (int64_t j = 0; j < kBlock; ++j) {
          const int32_t v = static_cast<int32_t>(std::nearbyint(xb[j] * inv));
          qb[j] = static_cast<int8_t>(v);
          sum += v;
        }
        d[m * nb + b] = scale;
        s[m * nb + b] = scale * static_cast<float>(sum);
      }
    }
  });
}

#ifdef VIVACE_BLOCK_AVX2
// The 32 weights of a block as bytes ready for maddubs: 4-bit types give unsigned nibbles 0..15 in element
// order (low nibbles are elements 0..15, high nibbles 16..31); Q8_0 gives |w| (its sign moves onto x).
template <int64_t QT>
__m256i weight_bytes(const uint8_t* qs) {
  if constexpr (QT == kQ8_0) {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs));
    return _mm256_sign_epi8(w, w);
  } else {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
    const __m256i both = _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw);
    return _mm256_and_si256(both, _mm256_set1_epi8(0x0f));
  }
}

// The 8 int32 partial sums of one block's 32 products: activation bytes `a` against weight bytes `wv`
// (Q8_0: |w|, with the signs of the raw weights `raw` moved onto the activations).
template <int64_t QT>
inline __m256i block_dot(__m256i wv, const uint8_t* raw, __m256i a, __m256i ones) {
  if constexpr (QT == kQ8_0) {
    const __m256i sign = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(raw));
    return _mm256_madd_epi16(_mm256_maddubs_epi16(wv, _mm256_sign_epi8(a, sign)), ones);
  } else {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(wv, a), ones);
  }
}

// Four vectors of partial sums reduced to their four totals, one per 32-bit lane of each 128-bit half
// (the halves still to be added).
inline __m256i reduce4(__m256i p0, __m256i p1, __m256i p2, __m256i p3) {
  return _mm256_hadd_epi32(_mm256_hadd_epi32(p0, p1), _mm256_hadd_epi32(p2, p3));
}

// The first 4 bytes of 8 blocks (Q4_1: fp16 d then fp16 m; the others: fp16 d then data) as one
// vector, block j in lane j.
inline __m256i block_heads(const uint8_t* const* blk) {
  int32_t h[8];
  for (int j = 0; j < 8; ++j) std::memcpy(&h[j], blk[j], sizeof(int32_t));
  return _mm256_setr_epi32(h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]);
}

// Tile of RM activation rows x 8 weight rows (output columns n0.., `cols` of them real: the rest repeat
// the last one and are not stored). For each block, every (row, column) dot is summed exactly in int32,
// the 8 columns' sums are gathered into one vector, converted once and scaled by the 8 columns' scales
// times the row's. The same operations for each output element whatever the tile, so batch-independent.
template <int64_t QT, int RM>
void tile8(const QuantRows& xr, int64_t m0, const uint8_t* w, int64_t row_bytes, int64_t n0, int cols, float* out,
           int64_t N, const float* bias) {
  constexpr int64_t bb = QT == kQ4_0 ? 18 : QT == kQ4_1 ? 20 : 34;
  constexpr int64_t qs_off = QT == kQ4_1 ? 4 : 2;
  const __m256i ones = _mm256_set1_epi16(1);
  // fp16 d (and Q4_1's m) of each lane's 32-bit head: low halves to bytes 0..7, high halves to 8..15.
  const __m256i split = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15,  //
                                         0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
  const uint8_t* rows[8];
  for (int j = 0; j < 8; ++j) rows[j] = w + (n0 + std::min(j, cols - 1)) * row_bytes;
  __m256 acc[RM];
  for (int i = 0; i < RM; ++i) acc[i] = _mm256_setzero_ps();
  // The next tile's 8 weight rows (memory right after these) are prefetched a slice per block: the 8
  // interleaved short streams of a tile are not what a hardware prefetcher follows.
  const char* next = reinterpret_cast<const char*>(w + (n0 + 8) * row_bytes);
  const int64_t next_lines = (8 * row_bytes + 63) / 64;
  for (int64_t b = 0; b < xr.nb; ++b) {
    for (int64_t l = b * next_lines / xr.nb; l < (b + 1) * next_lines / xr.nb; ++l)
      _mm_prefetch(next + l * 64, _MM_HINT_T1);
    const uint8_t* blk[8];
    __m256i wv[8];
    for (int j = 0; j < 8; ++j) {
      blk[j] = rows[j] + b * bb;
      wv[j] = weight_bytes<QT>(blk[j] + qs_off);
    }
    const __m256i heads = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(block_heads(blk), split), 0xd8);
    const __m256 dw = _mm256_cvtph_ps(_mm256_castsi256_si128(heads));
    __m256 mw;
    if constexpr (QT == kQ4_1) mw = _mm256_cvtph_ps(_mm256_extracti128_si256(heads, 1));
    else mw = _mm256_mul_ps(dw, _mm256_set1_ps(-8.f));  // Q4_0: w = d * (q - 8); unused for Q8_0
    for (int i = 0; i < RM; ++i) {
      const int64_t m = m0 + i;
      const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xr.q + m * xr.K + b * kBlock));
      const __m256i lo = reduce4(block_dot<QT>(wv[0], blk[0] + qs_off, a, ones),
                                 block_dot<QT>(wv[1], blk[1] + qs_off, a, ones),
                                 block_dot<QT>(wv[2], blk[2] + qs_off, a, ones),
                                 block_dot<QT>(wv[3], blk[3] + qs_off, a, ones));
      const __m256i hi = reduce4(block_dot<QT>(wv[4], blk[4] + qs_off, a, ones),
                                 block_dot<QT>(wv[5], blk[5] + qs_off, a, ones),
                                 block_dot<QT>(wv[6], blk[6] + qs_off, a, ones),
                                 block_dot<QT>(wv[7], blk[7] + qs_off, a, ones));
      const __m256i dots = _mm256_add_epi32(_mm256_permute2x128_si256(lo, hi, 0x20),
                                            _mm256_permute2x128_si256(lo, hi, 0x31));
      const __m256 scale = _mm256_mul_ps(dw, _mm256_set1_ps(xr.d[m * xr.nb + b]));
      acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dots), scale, acc[i]);
      if constexpr (QT != kQ8_0) acc[i] = _mm256_fmadd_ps(mw, _mm256_set1_ps(xr.s[m * xr.nb + b]), acc[i]);
    }
  }
  for (int i = 0; i < RM; ++i) {
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, acc[i]);
    float* o = out + (m0 + i) * N + n0;
    for (int j = 0; j < cols; ++j) o[j] = lanes[j] + (bias ? bias[n0 + j] : 0.f);
  }
}

template <int64_t QT>
void run(const QuantRows& xr, int64_t M, const uint8_t* w, int64_t row_bytes, int64_t N, float* out,
         const float* bias) {
  constexpr int RN = 8;
  const int64_t col_tiles = (N + RN - 1) / RN;
  at::parallel_for(0, col_tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r0 = 0; r0 < M; r0 += kRowChunk) {
      const int64_t r1 = std::min(M, r0 + kRowChunk);
      for (int64_t t = begin; t < end; ++t) {
        const int64_t n0 = t * RN;
        const int cols = static_cast<int>(std::min<int64_t>(RN, N - n0));
        int64_t m = r0;
        for (; m + 6 <= r1; m += 6) tile8<QT, 6>(xr, m, w, row_bytes, n0, cols, out, N, bias);
        switch (r1 - m) {
          case 5: tile8<QT, 5>(xr, m, w, row_bytes, n0, cols, out, N, bias); break;
          case 4: tile8<QT, 4>(xr, m, w, row_bytes, n0, cols, out, N, bias); break;
          case 3: tile8<QT, 3>(xr, m, w, row_bytes, n0, cols, out, N, bias); break;
          case 2: tile8<QT, 2>(xr, m, w, row_bytes, n0, cols, out, N, bias); break;
          case 1: tile8<QT, 1>(xr, m, w, row_bytes, n0, cols, out, N, bias); break;
          default: break;
        }
      }
    }
  });
}
#else
// Portable path: exact integer block dots, the same block formulas, float accumulation in block order.
template <int64_t QT>
void run(const QuantRows& xr, int64_t M, const uint8_t* w, int64_t row_bytes, int64_t N, float* out,
         const float* bias) {
  constexpr int64_t bb = QT == kQ4_0 ? 18 : QT == kQ4_1 ? 20 : 34;
  at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
    for (int64_t m = 0; m < M; ++m) {
      for (int64_t n = begin; n < end; ++n) {
        float acc = 0.f, mins = 0.f;
        for (int64_t b = 0; b < xr.nb; ++b) {
          const uint8_t* blk = w + n * row_bytes + b * bb;
          const int8_t* a = xr.q + m * xr.K + b * kBlock;
          const float d = half_to_float(blk);
          int32_t dot = 0;
          if constexpr (QT == kQ8_0) {
            const int8_t* qs = reinterpret_cast<const int8_t*>(blk + 2);
            for (int64_t j = 0; j < kBlock; ++j) dot += qs[j] * a[j];
          } else {
            const uint8_t* qs = blk + (QT == kQ4_1 ? 4 : 2);
            for (int64_t j = 0; j < 16; ++j) dot += (qs[j] & 0x0f) * a[j] + (qs[j] >> 4) * a[j + 16];
            const float mw = QT == kQ4_1 ? half_to_float(blk + 2) : -8.f * d;
            mins = std::fma(mw, xr.s[m * xr.nb + b], mins);
          }
          acc = std::fma(static_cast<float>(dot), d * xr.d[m * xr.nb + b], acc);
        }
        out[m * N + n] = acc + mins + (bias ? bias[n] : 0.f);
      }
    }
  });
}
#endif

}  // namespace

// x [M, K] float32; blocks [N, K / 32 * block bytes] uint8 (a GGUF tensor's rows, unchanged); qtype the GGML
// type id; bias [N] float32 or None. Returns x @ W.T (+ bias) as float32 [M, N].
torch::Tensor block_linear(const torch::Tensor& x, const torch::Tensor& blocks, int64_t qtype,
                           const c10::optional<torch::Tensor>& bias) {
  TORCH_CHECK(x.dtype() == torch::kFloat32 && x.dim() == 2, "block_linear: x must be a 2-D float32 tensor");
  TORCH_CHECK(blocks.dtype() == torch::kUInt8 && blocks.dim() == 2 && blocks.is_contiguous(),
              "block_linear: blocks must be a contiguous 2-D uint8 tensor");
  const int64_t bb = block_bytes(qtype);
  auto xc = x.contiguous();
  const int64_t M = xc.size(0), K = xc.size(1), N = blocks.size(0);
  TORCH_CHECK(K % kBlock == 0, "block_linear: input width ", K, " is not a multiple of 32");
  const int64_t nb = K / kBlock;
  TORCH_CHECK(blocks.size(1) == nb * bb, "block_linear: rows of ", blocks.size(1), " bytes, expected ", nb * bb,
              " for width ", K);
  const float* bp = nullptr;
  torch::Tensor bias_c;
  if (bias.has_value() && bias->defined()) {
    bias_c = bias->contiguous();
    TORCH_CHECK(bias_c.dtype() == torch::kFloat32 && bias_c.numel() == N, "block_linear: bias must be float32 [N]");
    bp = bias_c.data_ptr<float>();
  }
  auto q = torch::empty({M, K}, xc.options().dtype(torch::kInt8));
  auto d = torch::empty({M, nb}, xc.options());
  auto s = torch::empty({M, nb}, xc.options());
  quantize_rows(xc.data_ptr<float>(), M, K, q.data_ptr<int8_t>(), d.data_ptr<float>(), s.data_ptr<float>());
  const QuantRows xr{q.data_ptr<int8_t>(), d.data_ptr<float>(), s.data_ptr<float>(), K, nb};
  auto out = torch::empty({M, N}, xc.options());
  const uint8_t* w = blocks.data_ptr<uint8_t>();
  float* op = out.data_ptr<float>();
  switch (qtype) {
    case kQ4_0: run<kQ4_0>(xr, M, w, blocks.size(1), N, op, bp); break;
    case kQ4_1: run<kQ4_1>(xr, M, w, blocks.size(1), N, op, bp); break;
    default: run<kQ8_0>(xr, M, w, blocks.size(1), N, op, bp); break;
  }
  return out;
}

TORCH_LIBRARY(vivace_cpu, m) {
  m.def("block_linear(Tensor x, Tensor blocks, int qtype, Tensor? bias) -> Tensor", &block_linear);
}
