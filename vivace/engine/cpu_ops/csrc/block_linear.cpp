// Linear layer computed directly on a GGUF file's quantized blocks (Q4_0, Q4_1, Q8_0), as llama.cpp does:
// each activation row is quantized to int8 in blocks of 32 with one float scale per block (and, for the
// 4-bit types, the block's scaled sum), then every weight block meets its activation block in an integer
// dot product rescaled by the two block scales. Decode reads the file's own bytes per weight (Q4_1: 20
// bytes per 32 weights) instead of int8 re-quantized from them (32 bytes per 32 plus a scale per row).
//
// The weights are read in a tiled layout made once at load (block_tiles): per 8 output columns ("a tile"),
// first every block's 8 fp16 scales (Q4_1: then its 8 fp16 minimums), then every block's 8 columns' quants
// interleaved 4 bytes at a time: byte i of column j's quants lies at (i / 4) * 32 + j * 4 + i % 4. A thread's
// tiles are then two sequential streams the hardware prefetcher follows, the 8 scales load as one vector,
// and one 32-byte load holds the same 4 quant bytes of all 8 columns (Q4: 4 low nibbles and 4 high ones).
// Same bytes as the file's rows (the last tile is padded with zero blocks).
//
// Columns go 8 at a time with no horizontal sums: a 32-byte quant load meets the activation's matching 4
// bytes broadcast to every lane (maddubs), so each 32-bit lane accumulates one column's dot. The 4-bit
// types add all 8 products of a block in int16 (at most 8 * 2 * 15 * 127 = 30,480: exact) before one
// widening; Q8_0 widens each. The 8 columns' exact int32 dots are converted once and scaled by the
// columns' scales times the row's, so the float work is shared by 8 outputs, and a tile's weight loads by
// 8 activation rows (4-bit; Q8_0: 4). The integer sums are written so that the compiler keeps them in
// registers in order (left to itself it computed all of a block's products first and spilled them).
// With AVX512-VNNI, two neighbouring tiles go through one 512-bit register (tile16): each activation
// broadcast then meets 16 columns, and dpbusd sums 4 unsigned-by-signed byte products into each int32 lane
// in one instruction. The 4-bit quants (0..15) are the unsigned side as they are; for Q8_0 the activations
// are, shifted by 128 (x ^ 0x80), and the tile's column sums times 128 come off the exact dot. The int32
// dots are the same integers as tile8's and the float steps the same, so the outputs are the same bits.
// Batch independence: every output element (m, n) is computed by the same sequence of operations (per
// block in order: the exact dot, its scaled fma, then the 4-bit minimum term's fma), whatever tile it
// lands in, so a row's result never depends on its batch-mates.
//
// Registered as torch.ops.vivace_cpu.block_linear (its own op library, so this file needs no line in
// another file's module table). AVX2 + FMA + F16C path (its integer dots by AVX512-VNNI where the CPU has
// it), and a portable scalar path for other CPUs.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define VIVACE_BLOCK_AVX2 1
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define VIVACE_BLOCK_VNNI 1  // dpbusd on 512-bit registers: 64 u8 x s8 products summed into 16 int32 lanes
#endif
#endif

namespace {

// GGML type ids (ggml.h) of the block formats computed here.
constexpr int64_t kQ4_0 = 2, kQ4_1 = 3, kQ8_0 = 8;
constexpr int64_t kBlock = 32;   // weights (and activations) per block
constexpr int64_t kTileCols = 8;  // weight rows (output columns) interleaved in one tile
constexpr int64_t tile_count(int64_t n) { return (n + kTileCols - 1) / kTileCols; }
constexpr int64_t kRowChunk = 64;  // activation rows (8 tiles of 8) kept hot while a thread's columns pass

int64_t block_bytes(int64_t qtype) {
  switch (qtype) {
    case kQ4_0: return 18;  // fp16 d, 16 bytes of nibbles
    case kQ4_1: return 20;  // fp16 d, fp16 m, 16 bytes of nibbles
    case kQ8_0: return 34;  // fp16 d, 32 int8
    default: TORCH_CHECK(false, "block_linear: unsupported GGML type id ", qtype, " (Q4_0=2, Q4_1=3, Q8_0=8)");
  }
  return 0;
}

// A block's scale bytes (fp16 d; Q4_1: and fp16 m) and quant bytes.
constexpr int64_t head_bytes(int64_t qtype) { return qtype == kQ4_1 ? 4 : 2; }
constexpr int64_t quant_bytes(int64_t qtype) { return qtype == kQ8_0 ? 32 : 16; }
// Bytes of one tile: `nb` blocks of kTileCols columns (block_tiles' layout).
constexpr int64_t tile_bytes(int64_t nb, int64_t qtype) {
  return nb * kTileCols * (head_bytes(qtype) + quant_bytes(qtype));
}
constexpr int64_t kPrefetch = 1024;  // bytes ahead in a tile's quant stream

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
// `u` (VNNI builds, Q8_0 only) is q + 128 as unsigned bytes: dpbusd multiplies unsigned by signed bytes.
struct QuantRows {
  const int8_t* q;
  const float* d;
  const float* s;
  int64_t K, nb;
  const uint8_t* u = nullptr;
};

void quantize_rows(const float* x, int64_t M, int64_t K, int8_t* q, float* d, float* s) {
  const int64_t nb = K / kBlock;
  at::parallel_for(0, M, 8, [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      for (int64_t b = 0; b < nb; ++b) {
        const float* xb = x + m * K + b * kBlock;
        int8_t* qb = q + m * K + b * kBlock;
#ifdef VIVACE_BLOCK_AVX2
        // The scalar loop below in four vectors: the same products, rounded half to even as nearbyint
        // does in the default rounding mode, so the same bytes.
        __m256 v[4];
        __m256 vmax = _mm256_setzero_ps();
        const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
        for (int k = 0; k < 4; ++k) {
          v[k] = _mm256_loadu_ps(xb + 8 * k);
          vmax = _mm256_max_ps(vmax, _mm256_and_ps(v[k], abs_mask));
        }
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float amax = _mm_cvtss_f32(m4);
        const float scale = amax / 127.f;
        const __m256 inv = _mm256_set1_ps(amax > 0.f ? 127.f / amax : 0.f);
        __m256i i32[4];
        constexpr int kNearest = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;  // ties to even, as nearbyint
        for (int k = 0; k < 4; ++k) i32[k] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[k], inv), kNearest));
        const __m256i sum8 = _mm256_add_epi32(_mm256_add_epi32(i32[0], i32[1]), _mm256_add_epi32(i32[2], i32[3]));
        // packs interleave 128-bit lanes; the permute puts the 32 bytes back in order.
        const __m256i w16a = _mm256_packs_epi32(i32[0], i32[1]), w16b = _mm256_packs_epi32(i32[2], i32[3]);
        const __m256i lane_order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        const __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(w16a, w16b), lane_order);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(qb), bytes);
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum8), _mm256_extracti128_si256(sum8, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
        const int32_t sum = _mm_cvtsi128_si32(s4);
#else
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
#endif
        d[m * nb + b] = scale;
        s[m * nb + b] = scale * static_cast<float>(sum);
      }
    }
  });
}

#ifdef VIVACE_BLOCK_AVX2
// 4 activation bytes broadcast to all 8 lanes.
inline __m256i bcast4(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

// Tile of RM activation rows x 8 weight rows (output columns n0.., `cols` of them real: the rest are the last
// tile's zero padding and are not stored). Per block, each 32-byte quant load is shared by the RM rows;
// every (row, column) dot is exact in integers, then converted once per 8 columns and scaled by the 8
// columns' scales times the row's.
template <int64_t QT, int RM>
void tile8(const QuantRows& xr, int64_t m0, const uint8_t* tile, int64_t n0, int cols, float* out, int64_t N,
           const float* bias) {
  constexpr int64_t hb = head_bytes(QT), qb = quant_bytes(QT);
  const uint8_t* heads = tile;
  const uint8_t* quants = tile + xr.nb * 8 * hb;
  __m256 acc[RM];
  for (int i = 0; i < RM; ++i) acc[i] = _mm256_setzero_ps();
  for (int64_t b = 0; b < xr.nb; ++b) {
    const uint8_t* h = heads + b * 8 * hb;
    const uint8_t* qs = quants + b * 8 * qb;
    _mm_prefetch(reinterpret_cast<const char*>(qs + kPrefetch), _MM_HINT_T0);
    if constexpr (8 * qb > 64) _mm_prefetch(reinterpret_cast<const char*>(qs + kPrefetch + 64), _MM_HINT_T0);
    if constexpr (8 * qb > 128) {
      _mm_prefetch(reinterpret_cast<const char*>(qs + kPrefetch + 128), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(qs + kPrefetch + 192), _MM_HINT_T0);
    }
    const int8_t* a = xr.q + m0 * xr.K + b * kBlock;
    __m256i dot[RM];
    if constexpr (QT == kQ8_0) {
      const __m256i ones = _mm256_set1_epi16(1);
      for (int i = 0; i < RM; ++i) dot[i] = _mm256_setzero_si256();
      for (int g = 0; g < 8; ++g) {
        const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + g * 32));
        const __m256i aw = _mm256_sign_epi8(w, w);
        for (int i = 0; i < RM; ++i) {
          const __m256i signed_a = _mm256_sign_epi8(bcast4(a + i * xr.K + g * 4), w);  // w's signs onto x
          const __m256i t = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, signed_a), ones);
          dot[i] = _mm256_add_epi32(dot[i], t);
          __asm__("" : "+x"(dot[i]));  // keep the sums in order in registers: the compiler's add tree spills
        }
      }
    } else {
      // The tile's 4 loads unpacked once (8 registers), then each row's 8 products summed in one register.
      const __m256i mask = _mm256_set1_epi8(0x0f);
      __m256i lo[4], hi[4];
      for (int c = 0; c < 4; ++c) {
        const __m256i r = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + c * 32));
        lo[c] = _mm256_and_si256(r, mask);
        hi[c] = _mm256_and_si256(_mm256_srli_epi16(r, 4), mask);
      }
      const __m256i ones = _mm256_set1_epi16(1);
      for (int i = 0; i < RM; ++i) {
        const int8_t* ai = a + i * xr.K;
        __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(lo[0], bcast4(ai)),
                                     _mm256_maddubs_epi16(hi[0], bcast4(ai + 16)));
        for (int c = 1; c < 4; ++c) {
          p = _mm256_add_epi16(p, _mm256_maddubs_epi16(lo[c], bcast4(ai + c * 4)));
          p = _mm256_add_epi16(p, _mm256_maddubs_epi16(hi[c], bcast4(ai + 16 + c * 4)));
        }
        dot[i] = _mm256_madd_epi16(p, ones);
      }
    }
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h)));
    __m256 mw;
    if constexpr (QT == kQ4_1) mw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + 16)));
    else mw = _mm256_mul_ps(dw, _mm256_set1_ps(-8.f));
    for (int i = 0; i < RM; ++i) {
      const int64_t m = m0 + i;
      const __m256 scale = _mm256_mul_ps(dw, _mm256_set1_ps(xr.d[m * xr.nb + b]));
      acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot[i]), scale, acc[i]);
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

#ifdef VIVACE_BLOCK_VNNI
inline __m512i bcast4x16(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// 32 bytes from each of two tiles, side by side in one register.
inline __m512i load_pair(const uint8_t* a, const uint8_t* b) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a))),
                            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b)), 1);
}

// 8 fp16 from each of two tiles as 16 floats.
inline __m512 halves_pair(const uint8_t* a, const uint8_t* b) {
  const __m256i h = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a))),
                                            _mm_loadu_si128(reinterpret_cast<const __m128i*>(b)), 1);
  return _mm512_cvtph_ps(h);
}

// tile8's computation on two neighbouring tiles at once (16 output columns n0..; `cols` of them stored), with
// dpbusd summing each lane's 4 unsigned-by-signed byte products in one instruction. The 4-bit quants (0..15)
// are the unsigned side; for Q8_0 the activations are, shifted by 128 (xr.u), and 128 times the columns' sums
// comes off each exact dot. A lone last tile passes itself as `tb` and stores 8 columns at most.
// `ahead` (or nullptr): `ahead_bytes` the caller reads next, asked for into L2 a block's share at a time.
template <int64_t QT, int RM>
void tile16(const QuantRows& xr, int64_t m0, const uint8_t* ta, const uint8_t* tb, int64_t n0, int cols, float* out,
            int64_t N, const float* bias, const uint8_t* ahead, int64_t ahead_bytes) {
  constexpr int64_t hb = head_bytes(QT), qb = quant_bytes(QT);
  const int64_t quants = xr.nb * 8 * hb;
  __m512 acc[RM];
  for (int i = 0; i < RM; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t b = 0; b < xr.nb; ++b) {
    const uint8_t* qa = ta + quants + b * 8 * qb;
    const uint8_t* qz = tb + quants + b * 8 * qb;
    for (int64_t line = 0; line < 8 * qb; line += 64) {
      _mm_prefetch(reinterpret_cast<const char*>(qa + kPrefetch + line), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(qz + kPrefetch + line), _MM_HINT_T0);
    }
    if (ahead != nullptr) {
      const int64_t lo = b * ahead_bytes / xr.nb / 64 * 64, hi = (b + 1) * ahead_bytes / xr.nb / 64 * 64;
      for (int64_t at = lo; at < hi; at += 64) _mm_prefetch(reinterpret_cast<const char*>(ahead + at), _MM_HINT_T1);
    }
    __m512i dot[RM];
    for (int i = 0; i < RM; ++i) dot[i] = _mm512_setzero_si512();
    if constexpr (QT == kQ8_0) {
      const uint8_t* au = xr.u + m0 * xr.K + b * kBlock;
      __m512i wsum = _mm512_setzero_si512();
      for (int g = 0; g < 8; ++g) {
        const __m512i w = load_pair(qa + g * 32, qz + g * 32);
        wsum = _mm512_dpbusd_epi32(wsum, _mm512_set1_epi8(1), w);
        for (int i = 0; i < RM; ++i) dot[i] = _mm512_dpbusd_epi32(dot[i], bcast4x16(au + i * xr.K + g * 4), w);
      }
      const __m512i shift = _mm512_slli_epi32(wsum, 7);
      for (int i = 0; i < RM; ++i) dot[i] = _mm512_sub_epi32(dot[i], shift);
    } else {
      // The rows' sums advance side by side: RM independent chains of dependent dpbusd in flight.
      const int8_t* a = xr.q + m0 * xr.K + b * kBlock;
      const __m512i mask = _mm512_set1_epi8(0x0f);
      for (int c = 0; c < 4; ++c) {
        const __m512i r = load_pair(qa + c * 32, qz + c * 32);
        const __m512i lo = _mm512_and_si512(r, mask), hi = _mm512_and_si512(_mm512_srli_epi16(r, 4), mask);
        for (int i = 0; i < RM; ++i) dot[i] = _mm512_dpbusd_epi32(dot[i], lo, bcast4x16(a + i * xr.K + c * 4));
        for (int i = 0; i < RM; ++i) dot[i] = _mm512_dpbusd_epi32(dot[i], hi, bcast4x16(a + i * xr.K + 16 + c * 4));
      }
    }
    const uint8_t* ha = ta + b * 8 * hb;
    const uint8_t* hz = tb + b * 8 * hb;
    const __m512 dw = halves_pair(ha, hz);
    __m512 mw;
    if constexpr (QT == kQ4_1) mw = halves_pair(ha + 16, hz + 16);
    else mw = _mm512_mul_ps(dw, _mm512_set1_ps(-8.f));
    for (int i = 0; i < RM; ++i) {
      const int64_t m = m0 + i;
      const __m512 scale = _mm512_mul_ps(dw, _mm512_set1_ps(xr.d[m * xr.nb + b]));
      acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[i]), scale, acc[i]);
      if constexpr (QT != kQ8_0) acc[i] = _mm512_fmadd_ps(mw, _mm512_set1_ps(xr.s[m * xr.nb + b]), acc[i]);
    }
  }
  for (int i = 0; i < RM; ++i) {
    alignas(64) float lanes[16];
    _mm512_store_ps(lanes, acc[i]);
    float* o = out + (m0 + i) * N + n0;
    for (int j = 0; j < cols; ++j) o[j] = lanes[j] + (bias ? bias[n0 + j] : 0.f);
  }
}
#endif

// Activation rows [r0, r1) against column tiles [t0, t1), one tile at a time.
template <int64_t QT>
void tiles_rows8(const QuantRows& xr, int64_t r0, int64_t r1, const uint8_t* w, int64_t t0, int64_t t1, int64_t N,
                 float* out, const float* bias) {
  const int64_t stride = tile_bytes(xr.nb, QT);
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t n0 = t * kTileCols;
    const int cols = static_cast<int>(std::min<int64_t>(kTileCols, N - n0));
    const uint8_t* tile = w + t * stride;
    int64_t m = r0;
    if constexpr (QT != kQ8_0)  // the sign trick leaves registers for 4 rows only
      for (; m + 8 <= r1; m += 8) tile8<QT, 8>(xr, m, tile, n0, cols, out, N, bias);
    for (; m + 4 <= r1; m += 4) tile8<QT, 4>(xr, m, tile, n0, cols, out, N, bias);
    switch (r1 - m) {
      case 3: tile8<QT, 3>(xr, m, tile, n0, cols, out, N, bias); break;
      case 2: tile8<QT, 2>(xr, m, tile, n0, cols, out, N, bias); break;
      case 1: tile8<QT, 1>(xr, m, tile, n0, cols, out, N, bias); break;
      default: break;
    }
  }
}

#ifdef VIVACE_BLOCK_VNNI
// Activation rows [r0, r1) against column tiles [t0, t1), two tiles at a time. The first row group's pass over
// a pair also asks for the next pair (scales and quants) into L2, spread over its blocks: the in-stream
// prefetch runs only kPrefetch bytes ahead and never reaches a tile's scales, and the passes of the other
// row groups read from the cache with no request in flight. The model's matrices from memory (every block
// matrix of the default model but the LM head, in turn, ms per pass): 1 row 3.78 -> 2.70, 4 rows 4.38 ->
// 3.18, 8 rows 6.41 -> 5.26, 32 rows 16.34 -> 15.01; the LM head at 8 / 32 rows 1.64 / 4.56 -> 1.20 / 3.95.
// (tile8 gains nothing from it: the LM head at 1-4 rows through it was slower with it.)
template <int64_t QT>
void tiles_rows16(const QuantRows& xr, int64_t r0, int64_t r1, const uint8_t* w, int64_t t0, int64_t t1,
                  int64_t N, float* out, const float* bias) {
  const int64_t stride = tile_bytes(xr.nb, QT);
  for (int64_t t = t0; t < t1; t += 2) {
    const int64_t n0 = t * kTileCols;
    const bool pair = t + 1 < t1;
    const int cols = static_cast<int>(std::min<int64_t>(pair ? 2 * kTileCols : kTileCols, N - n0));
    const uint8_t* ta = w + t * stride;
    const uint8_t* tb = pair ? ta + stride : ta;
    const uint8_t* ahead = t + 2 < t1 ? ta + 2 * stride : nullptr;  // the next pair (or lone tile), if ours
    const int64_t ahead_bytes = (std::min<int64_t>(t1, t + 4) - (t + 2)) * stride;
    int64_t m = r0;
    for (; m + 8 <= r1; m += 8, ahead = nullptr) tile16<QT, 8>(xr, m, ta, tb, n0, cols, out, N, bias, ahead, ahead_bytes);
    for (; m + 4 <= r1; m += 4, ahead = nullptr) tile16<QT, 4>(xr, m, ta, tb, n0, cols, out, N, bias, ahead, ahead_bytes);
    switch (r1 - m) {
      case 3: tile16<QT, 3>(xr, m, ta, tb, n0, cols, out, N, bias, ahead, ahead_bytes); break;
      case 2: tile16<QT, 2>(xr, m, ta, tb, n0, cols, out, N, bias, ahead, ahead_bytes); break;
      case 1: tile16<QT, 1>(xr, m, ta, tb, n0, cols, out, N, bias, ahead, ahead_bytes); break;
      default: break;
    }
  }
}
#endif

// tiles_rows16 where `pairs`, else tiles_rows8.
template <int64_t QT>
void tiles_rows(bool pairs, const QuantRows& xr, int64_t r0, int64_t r1, const uint8_t* w, int64_t t0, int64_t t1,
                int64_t N, float* out, const float* bias) {
#ifdef VIVACE_BLOCK_VNNI
  if (pairs) return tiles_rows16<QT>(xr, r0, r1, w, t0, t1, N, out, bias);
#endif
  tiles_rows8<QT>(xr, r0, r1, w, t0, t1, N, out, bias);
}

// Below kDynamicRows rows a call lasts a few tens of microseconds and the column tiles are split into
// equal shares up front. From it on, they are handed out in runs as threads ask: a thread the OS preempts
// (for the server's HTTP thread, another process) leaves its rest to the others instead of holding up the
// whole call. A tile's outputs are the same bits on any thread.
constexpr int64_t kDynamicRows = 8;

template <int64_t QT>
void run(const QuantRows& xr, int64_t M, const uint8_t* w, int64_t N, float* out, const float* bias) {
  const int64_t col_tiles = tile_count(N);
#ifdef VIVACE_BLOCK_VNNI
  // Up to 4 Q8_0 rows (the LM head of a few streams) go through tile8: each thread then reads one tile
  // stream, not two, and the head streams from memory at the rate it did before tile16 (49152 x 576, three
  // copies in turn so that none stays in the caches, us per call for 1 / 2 / 3 / 4 rows: 906 / 871 / 914 /
  // 1,041 against 1,305 / 1,280 / 1,315 / 1,364; at 6 rows the two are even). The same bits either way.
  const bool pairs = !(QT == kQ8_0 && M <= 4);
#else
  const bool pairs = false;
#endif
  const int64_t step = pairs ? 2 : 1;  // tiles a thread takes at a time
  const int64_t steps = (col_tiles + step - 1) / step;
  if (M < kDynamicRows) {
    at::parallel_for(0, steps, 1, [&](int64_t begin, int64_t end) {
      tiles_rows<QT>(pairs, xr, 0, M, w, begin * step, std::min(col_tiles, end * step), N, out, bias);
    });
    return;
  }
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), steps));
  const int64_t chunk = std::max<int64_t>(1, steps / (8 * threads)) * step;
#pragma omp parallel num_threads(threads)
  for (int64_t r0 = 0; r0 < M; r0 += kRowChunk) {
    const int64_t r1 = std::min(M, r0 + kRowChunk);
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < col_tiles; t += chunk)
      tiles_rows<QT>(pairs, xr, r0, r1, w, t, std::min(col_tiles, t + chunk), N, out, bias);
  }
}
#else
// Portable path: exact integer block dots, the same block formulas, float accumulation in block order.
// Quant byte i of column j in a block's interleaved quants (see the layout above).
constexpr int64_t quant_at(int64_t i, int64_t j) { return (i / 4) * 32 + j * 4 + i % 4; }

template <int64_t QT>
void run(const QuantRows& xr, int64_t M, const uint8_t* w, int64_t N, float* out, const float* bias) {
  constexpr int64_t hb = head_bytes(QT), qb = quant_bytes(QT);
  const int64_t stride = tile_bytes(xr.nb, QT);
  at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
    for (int64_t m = 0; m < M; ++m) {
      for (int64_t n = begin; n < end; ++n) {
        float acc = 0.f, mins = 0.f;
        for (int64_t b = 0; b < xr.nb; ++b) {
          const uint8_t* tile = w + (n / 8) * stride;
          const uint8_t* h = tile + b * 8 * hb;
          const uint8_t* quants = tile + xr.nb * 8 * hb + b * 8 * qb;
          const int8_t* a = xr.q + m * xr.K + b * kBlock;
          const float d = half_to_float(h + 2 * (n % 8));
          int32_t dot = 0;
          if constexpr (QT == kQ8_0) {
            const int8_t* qs = reinterpret_cast<const int8_t*>(quants);
            for (int64_t j = 0; j < kBlock; ++j) dot += qs[quant_at(j, n % 8)] * a[j];
          } else {
            const uint8_t* qs = quants;
            for (int64_t j = 0; j < 16; ++j) {
              const uint8_t q = qs[quant_at(j, n % 8)];
              dot += (q & 0x0f) * a[j] + (q >> 4) * a[j + 16];
            }
            const float mw = QT == kQ4_1 ? half_to_float(h + 16 + 2 * (n % 8)) : -8.f * d;
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

// blocks [N, K / 32 * block bytes] uint8 (a GGUF tensor's rows) -> tiles [ceil(N / 8), K / 32 * 8 * block bytes]
// uint8 in the layout block_linear reads: per 8 rows, every block's scales (and minimums), then every
// block's 8 rows of quants interleaved 4 bytes at a time; rows past N are zero blocks.
torch::Tensor block_tiles(const torch::Tensor& blocks, int64_t qtype) {
  TORCH_CHECK(blocks.dtype() == torch::kUInt8 && blocks.dim() == 2, "block_tiles: blocks must be a 2-D uint8 tensor");
  const int64_t bb = block_bytes(qtype), hb = head_bytes(qtype), qb = quant_bytes(qtype);
  TORCH_CHECK(blocks.size(1) % bb == 0, "block_tiles: rows of ", blocks.size(1), " bytes are not whole blocks");
  auto src_t = blocks.contiguous();
  const int64_t N = src_t.size(0), nb = src_t.size(1) / bb, tiles = tile_count(N);
  const int64_t stride = tile_bytes(nb, qtype);
  auto out = torch::zeros({tiles, stride}, src_t.options());
  const uint8_t* src = src_t.data_ptr<uint8_t>();
  uint8_t* dst = out.data_ptr<uint8_t>();
  at::parallel_for(0, tiles, 16, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      uint8_t* heads = dst + t * stride;
      uint8_t* quants = heads + nb * 8 * hb;
      for (int64_t j = 0; j < 8 && t * 8 + j < N; ++j) {
        const uint8_t* row = src + (t * 8 + j) * nb * bb;
        for (int64_t b = 0; b < nb; ++b) {
          const uint8_t* blk = row + b * bb;
          std::memcpy(heads + b * 8 * hb + 2 * j, blk, 2);                        // d
          if (hb == 4) std::memcpy(heads + b * 8 * hb + 16 + 2 * j, blk + 2, 2);  // Q4_1's m
          for (int64_t i = 0; i < qb; i += 4) std::memcpy(quants + b * 8 * qb + i * 8 + j * 4, blk + hb + i, 4);
        }
      }
    }
  });
  return out;
}

// x [M, K] float32; tiles from block_tiles for N rows of GGML type `qtype`; bias [N] float32 or None.
// Returns x @ W.T (+ bias) as float32 [M, N].
torch::Tensor block_linear(const torch::Tensor& x, const torch::Tensor& tiles, int64_t qtype, int64_t N,
                           const c10::optional<torch::Tensor>& bias) {
  TORCH_CHECK(x.dtype() == torch::kFloat32 && x.dim() == 2, "block_linear: x must be a 2-D float32 tensor");
  TORCH_CHECK(tiles.dtype() == torch::kUInt8 && tiles.dim() == 2 && tiles.is_contiguous(),
              "block_linear: tiles must be a contiguous 2-D uint8 tensor");
  block_bytes(qtype);  // rejects a type the kernel does not take
  auto xc = x.contiguous();
  const int64_t M = xc.size(0), K = xc.size(1);
  TORCH_CHECK(K % kBlock == 0, "block_linear: input width ", K, " is not a multiple of 32");
  const int64_t nb = K / kBlock;
  const int64_t stride = tile_bytes(nb, qtype);
  TORCH_CHECK(tiles.size(0) == tile_count(N) && tiles.size(1) == stride, "block_linear: tiles of ", tiles.size(0),
              " x ", tiles.size(1), " bytes, expected ", tile_count(N), " x ", stride, " for ", N, " rows of width ",
              K);
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
  QuantRows xr{q.data_ptr<int8_t>(), d.data_ptr<float>(), s.data_ptr<float>(), K, nb};
#ifdef VIVACE_BLOCK_VNNI
  torch::Tensor u;
  if (qtype == kQ8_0) {
    u = torch::bitwise_xor(q, -128).view(torch::kUInt8);  // two's complement: x ^ 0x80 = x + 128 as a byte
    xr.u = u.data_ptr<uint8_t>();
  }
#endif
  auto out = torch::empty({M, N}, xc.options());
  const uint8_t* w = tiles.data_ptr<uint8_t>();
  float* op = out.data_ptr<float>();
  switch (qtype) {
    case kQ4_0: run<kQ4_0>(xr, M, w, N, op, bp); break;
    case kQ4_1: run<kQ4_1>(xr, M, w, N, op, bp); break;
    default: run<kQ8_0>(xr, M, w, N, op, bp); break;
  }
  return out;
}

TORCH_LIBRARY(vivace_cpu, m) {
  m.def("block_tiles(Tensor blocks, int qtype) -> Tensor", &block_tiles);
  m.def("block_linear(Tensor x, Tensor tiles, int qtype, int n, Tensor? bias) -> Tensor", &block_linear);
}
