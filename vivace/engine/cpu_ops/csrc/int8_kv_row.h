// The int8 KV cache row, as vivace/engine/attention/kv_quant.py defines it: head_dim int8 values
// nearbyint(x / s) clamped to [-127, 127], then the row's float16 scale s = float16(min(absmax / 127,
// 65504)), 1 where that is 0. Written by store_kv.cpp, read by paged_attention.cpp.
#pragma once
#include <c10/util/Half.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

constexpr int64_t kInt8RowScaleBytes = sizeof(c10::Half);

// Elements of one cache row: head_dim, plus the scale's bytes for an int8 cache.
inline int64_t kv_row_width(int64_t head_dim, bool int8) { return head_dim + (int8 ? kInt8RowScaleBytes : 0); }

// d values into one int8 row and its scale (c10::Half rounds to nearest even, as torch's .to(torch.float16)).
inline void quantize_int8_row(const float* in, int64_t d, int8_t* out) {
  float amax = 0.f;
  for (int64_t i = 0; i < d; ++i) amax = std::max(amax, std::fabs(in[i]));
  c10::Half h(std::min(amax / 127.f, 65504.f));
  if (!(static_cast<float>(h) > 0.f)) h = c10::Half(1.f);
  const float s = static_cast<float>(h);
  for (int64_t i = 0; i < d; ++i) out[i] = static_cast<int8_t>(std::min(127.f, std::max(-127.f, std::nearbyint(in[i] / s))));
  std::memcpy(out + d, &h, sizeof(h));
}

// The scale stored after a row's d values.
inline float int8_row_scale(const int8_t* row, int64_t d) {
  c10::Half scale;
  std::memcpy(&scale, row + d, sizeof(scale));
  return static_cast<float>(scale);
}
