// Writing a step's new keys and values into the paged KV cache on CPU in one call: the float32 -> cache
// dtype conversion (or int8 quantization with a per-row scale) and both scatters.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <algorithm>
#include <cmath>
#include <cstring>

#include "int8_kv_row.h"
#ifdef __AVX512F__
#include <immintrin.h>
#endif

namespace {

// n floats to bfloat16, rounded to nearest even with NaN made quiet, as c10::BFloat16(float) does.
void to_bfloat16(const float* in, c10::BFloat16* out, int64_t n) {
  int64_t i = 0;
#ifdef __AVX512F__
  const __m512i one = _mm512_set1_epi32(1), bias = _mm512_set1_epi32(0x7fff), quiet_nan = _mm512_set1_epi32(0x7fc0);
  for (; i + 16 <= n; i += 16) {
    const __m512 x = _mm512_loadu_ps(in + i);
    const __m512i u = _mm512_castps_si512(x);
    const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), one);
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, bias), odd), 16);
    r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), quiet_nan);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), _mm512_cvtepi32_epi16(r));
  }
#endif
  for (; i < n; ++i) out[i] = c10::BFloat16(in[i]);
}

// n floats to float16, rounded to nearest even (overflow to infinity), NaN as c10::Half(float) makes it
// (sign | 0x7e00): the same bits as torch's .to(torch.float16).
void to_float16(const float* in, c10::Half* out, int64_t n) {
  int64_t i = 0;
#ifdef __AVX512F__
  for (; i + 16 <= n; i += 16) {
    const __m512 x = _mm512_loadu_ps(in + i);
    if (_mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q)) break;  // a NaN: this vector and the rest one at a time
    const __m256i h = _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), h);
  }
#endif
  for (; i < n; ++i) out[i] = c10::Half(in[i]);
}

// The cache lines of `bytes` at p, asked for ahead of writing them.
void prefetch_for_write(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(c + off, 1, 3);
}

}  // namespace

// k, v [T, KVH, d] float32; k_cache, v_cache [S, KVH, d] float32, bfloat16 or float16, or [S, KVH, d + 2]
// int8 rows with their scale, contiguous; slots [T] int64. Row t goes to cache row slots[t]; bfloat16 and
// float16 round to nearest even, as torch's .to(dtype).
void store_kv(torch::Tensor k, torch::Tensor v, torch::Tensor k_cache, torch::Tensor v_cache, torch::Tensor slots) {
  TORCH_CHECK(k.dtype() == torch::kFloat32 && v.dtype() == torch::kFloat32 && k.dim() == 3 && k.sizes() == v.sizes(),
              "k and v must be [tokens, kv_heads, head_dim] float32 tensors of one shape");
  const bool int8 = k_cache.scalar_type() == torch::kInt8;
  const int64_t width = kv_row_width(k.size(2), int8);
  TORCH_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous() && k_cache.dtype() == v_cache.dtype() &&
              k_cache.size(1) == k.size(1) && k_cache.size(2) == width, "caches must be contiguous [slots, kv_heads, head_dim]");
  TORCH_CHECK(slots.dtype() == torch::kInt64 && slots.numel() == k.size(0), "one int64 slot per token");
  const bool bf16 = k_cache.scalar_type() == torch::kBFloat16, f16 = k_cache.scalar_type() == torch::kHalf;
  TORCH_CHECK(bf16 || f16 || int8 || k_cache.scalar_type() == torch::kFloat32,
              "caches must be float32, bfloat16, float16 or int8");
  auto kc = k.contiguous(), vc = v.contiguous();
  const int64_t T = kc.size(0), heads = kc.size(1), d = kc.size(2), row = heads * d, S = k_cache.size(0);
  const int64_t* sp = slots.data_ptr<int64_t>();
  for (int64_t t = 0; t < T; ++t) TORCH_CHECK(sp[t] >= 0 && sp[t] < S, "slot ", sp[t], " is outside the cache");
  const float* src[2] = {kc.data_ptr<float>(), vc.data_ptr<float>()};
  void* dst[2] = {k_cache.data_ptr(), v_cache.data_ptr()};
  const int64_t elem = k_cache.element_size(), row_bytes = heads * width * elem;
  at::parallel_for(0, 2 * T, 16, [&](int64_t begin, int64_t end) {
    // A step's rows land anywhere in a cache of gigabytes, each one a miss to memory: asked for all at once,
    // the misses overlap instead of each row's conversion waiting on its own (32 rows into a touched
    // 30-layer bfloat16 cache at random slots: 13.4 us per call without, 9.7 us with).
    for (int64_t j = begin; j < end; ++j)
      prefetch_for_write(static_cast<char*>(dst[j / T]) + sp[j % T] * row_bytes, row_bytes);
    for (int64_t j = begin; j < end; ++j) {
      const int64_t which = j / T, t = j % T;
      const float* in = src[which] + t * row;
      if (int8) {
        int8_t* out = static_cast<int8_t*>(dst[which]) + sp[t] * heads * width;
        for (int64_t h = 0; h < heads; ++h) quantize_int8_row(in + h * d, d, out + h * width);
      } else if (bf16) {
        c10::BFloat16* out = static_cast<c10::BFloat16*>(dst[which]) + sp[t] * row;
        to_bfloat16(in, out, row);
      } else if (f16) {
        to_float16(in, static_cast<c10::Half*>(dst[which]) + sp[t] * row, row);
      } else {
        std::memcpy(static_cast<float*>(dst[which]) + sp[t] * row, in, row * sizeof(float));
      }
    }
  });
}
