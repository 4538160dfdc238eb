// Writing a step's new keys and values into the paged KV cache on CPU in one call: the float32 -> cache
// dtype conversion (or int8 quantization with a per-row scale) and both scatters.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <algorithm>
#include <cmath>
#include <cstring>

#include "int8_kv_row.h"

// k, v [T, KVH, d] float32; k_cache, v_cache [S, KVH, d] float32 or bfloat16, or [S, KVH, d + 2] int8
// rows with their scale, contiguous; slots [T] int64. Row t goes to cache row slots[t]; bfloat16 rounds
// to nearest even, as torch's .to(torch.bfloat16).
void store_kv(torch::Tensor k, torch::Tensor v, torch::Tensor k_cache, torch::Tensor v_cache, torch::Tensor slots) {
  TORCH_CHECK(k.dtype() == torch::kFloat32 && v.dtype() == torch::kFloat32 && k.dim() == 3 && k.sizes() == v.sizes(),
              "k and v must be [tokens, kv_heads, head_dim] float32 tensors of one shape");
  const bool int8 = k_cache.scalar_type() == torch::kInt8;
  const int64_t width = kv_row_width(k.size(2), int8);
  TORCH_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous() && k_cache.dtype() == v_cache.dtype() &&
              k_cache.size(1) == k.size(1) && k_cache.size(2) == width, "caches must be contiguous [slots, kv_heads, head_dim]");
  TORCH_CHECK(slots.dtype() == torch::kInt64 && slots.numel() == k.size(0), "one int64 slot per token");
  const bool bf16 = k_cache.scalar_type() == torch::kBFloat16;
  TORCH_CHECK(bf16 || int8 || k_cache.scalar_type() == torch::kFloat32, "caches must be float32, bfloat16 or int8");
  auto kc = k.contiguous(), vc = v.contiguous();
  const int64_t T = kc.size(0), heads = kc.size(1), d = kc.size(2), row = heads * d, S = k_cache.size(0);
  const int64_t* sp = slots.data_ptr<int64_t>();
  for (int64_t t = 0; t < T; ++t) TORCH_CHECK(sp[t] >= 0 && sp[t] < S, "slot ", sp[t], " is outside the cache");
  const float* src[2] = {kc.data_ptr<float>(), vc.data_ptr<float>()};
  void* dst[2] = {k_cache.data_ptr(), v_cache.data_ptr()};
  at::parallel_for(0, 2 * T, 16, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      const int64_t which = j / T, t = j % T;
      const float* in = src[which] + t * row;
      if (int8) {
        int8_t* out = static_cast<int8_t*>(dst[which]) + sp[t] * heads * width;
        for (int64_t h = 0; h < heads; ++h) quantize_int8_row(in + h * d, d, out + h * width);
      } else if (bf16) {
        c10::BFloat16* out = static_cast<c10::BFloat16*>(dst[which]) + sp[t] * row;
        for (int64_t i = 0; i < row; ++i) out[i] = c10::BFloat16(in[i]);
      } else {
        std::memcpy(static_cast<float*>(dst[which]) + sp[t] * row, in, row * sizeof(float));
      }
    }
  });
}
