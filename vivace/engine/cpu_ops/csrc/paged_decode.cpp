// Paged decode attention on CPU: one query token per sequence, keys and values read in place
// from the block-paged cache (no gather copy). Parallel over (sequence, kv head) with OpenMP.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <vector>
#include <algorithm>

#include <cstring>

static inline float to_float(float x) { return x; }
// bfloat16 is the top half of a float32: widening is a shift, which vectorizes.
static inline float to_float(uint16_t bf16) {
  uint32_t bits = static_cast<uint32_t>(bf16) << 16;
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}
static inline float to_float(int8_t x) { return static_cast<float>(x); }

// The factor a cache row's values are multiplied by: 1 for float rows; an int8 row's own scale,
// stored as a float32 after its d values (vivace/engine/attention/kv_quant.py).
template <typename KV>
static inline float row_scale(const KV*, int64_t) { return 1.f; }
static inline float row_scale(const int8_t* row, int64_t d) {
  float s;
  std::memcpy(&s, row + d, sizeof(s));
  return s;
}

// q [D, H, d] float32; k_cache/v_cache [S, KVH, d] float32 or bfloat16, or [S, KVH, d + 4] int8 rows
// with their scale (contiguous); block_tables [D, MB] int32; context_lens [D] int32; window > 0: each
// row sees only its last `window` keys (sliding-window attention; blocks before them are never read),
// 0: the whole context. Returns [D, H, d] float32.
#if defined(__AVX512F__)
#include <immintrin.h>
static inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
static inline __m512 load16(const uint16_t* p) {
  __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}
static inline __m512 load16(const int8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
// exp(x) for x <= 0 (scores minus their max): 2^n * 2^f with a degree-6 polynomial for 2^f.
static inline __m512 exp16(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.f));
  __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(1.4426950408889634f));
  __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 f = _mm512_sub_ps(t, n);
  __m512 p = _mm512_set1_ps(1.5403530393381606e-4f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.3333558146428443e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.6181291076284772e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5504108664821580e-2f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022650695910071e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9314718055994531e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(p, n);
}
#endif

// Scores of `group` query heads against one key row, each scaled.
template <typename KV>
static inline void score_row(const float* qs, const KV* kv, int64_t group, int64_t d, float scale, float* out, int64_t stride) {
#if defined(__AVX512F__)
  scale *= row_scale(kv, d);
  if (d % 16 == 0) {
    for (int64_t g = 0; g < group; ++g) {
      __m512 acc = _mm512_setzero_ps();
      for (int64_t i = 0; i < d; i += 16) acc = _mm512_fmadd_ps(load16(qs + g * d + i), load16(kv + i), acc);
      out[g * stride] = _mm512_reduce_add_ps(acc) * scale;
    }
    return;
  }
#else
  scale *= row_scale(kv, d);
#endif
  for (int64_t g = 0; g < group; ++g) {
    float dot = 0.f;
    for (int64_t i = 0; i < d; ++i) dot += qs[g * d + i] * to_float(kv[i]);
    out[g * stride] = dot * scale;
  }
}

// Softmax of n scores in place.
static inline void softmax(float* s, int64_t n) {
  float mx = -INFINITY;
  for (int64_t t = 0; t < n; ++t) mx = std::max(mx, s[t]);
  float sum = 0.f;
  int64_t t = 0;
#if defined(__AVX512F__)
  __m512 vmx = _mm512_set1_ps(mx), vsum = _mm512_setzero_ps();
  for (; t + 16 <= n; t += 16) {
    __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(s + t), vmx));
    _mm512_storeu_ps(s + t, e);
    vsum = _mm512_add_ps(vsum, e);
  }
  sum = _mm512_reduce_add_ps(vsum);
#endif
  for (; t < n; ++t) { s[t] = std::exp(s[t] - mx); sum += s[t]; }
  const float inv = 1.f / sum;
  for (t = 0; t < n; ++t) s[t] *= inv;
}

// acc[g] += w[g] * v for each query head g.
template <typename KV>
static inline void accumulate_row(float* acc, const float* w, int64_t stride, const KV* vv, int64_t group, int64_t d) {
  const float rs = row_scale(vv, d);
#if defined(__AVX512F__)
  if (d % 16 == 0) {
    for (int64_t i = 0; i < d; i += 16) {
      __m512 v = load16(vv + i);
      for (int64_t g = 0; g < group; ++g) {
        float* a = acc + g * d + i;
        _mm512_storeu_ps(a, _mm512_fmadd_ps(_mm512_set1_ps(w[g * stride] * rs), v, _mm512_loadu_ps(a)));
      }
    }
    return;
  }
#endif
  for (int64_t g = 0; g < group; ++g) {
    const float wg = w[g * stride] * rs;
    for (int64_t i = 0; i < d; ++i) acc[g * d + i] += wg * to_float(vv[i]);
  }
}

template <typename KV>
static void decode_impl(
    torch::Tensor q, torch::Tensor k_cache, torch::Tensor v_cache,
    torch::Tensor block_tables, torch::Tensor context_lens, int64_t block_size, double scale,
    int64_t window, torch::Tensor out) {
  const int64_t D = q.size(0), H = q.size(1), d = q.size(2);
  const int64_t KVH = k_cache.size(1), row = k_cache.size(2);  // row: d, or d + 4 for int8 rows
  const int64_t group = H / KVH;
  const int64_t MB = block_tables.size(1);
  auto bt = block_tables.contiguous();
  auto cl = context_lens.contiguous();
  const float* qp = q.data_ptr<float>();
  const KV* kp = static_cast<const KV*>(k_cache.data_ptr());
  const KV* vp = static_cast<const KV*>(v_cache.data_ptr());
  const int32_t* btp = bt.data_ptr<int32_t>();
  const int32_t* clp = cl.data_ptr<int32_t>();
  float* op = out.data_ptr<float>();
  const float fscale = static_cast<float>(scale);

  at::parallel_for(0, D * KVH, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores;
    std::vector<float> acc(group * d);
    for (int64_t work = begin; work < end; ++work) {
      const int64_t s = work / KVH, kh = work % KVH;
      const int64_t ctx = clp[s];
      const int64_t first = window > 0 ? std::max<int64_t>(0, ctx - window) : 0;  // first key attended
      const int64_t n_keys = ctx - first;
      scores.resize(group * n_keys);
      const float* qs = qp + (s * H + kh * group) * d;
      // Pass 1: scores of every query head of this kv head, reading each key once.
      // Walk blocks, then offsets: no integer division per token.
      for (int64_t b = first / block_size, t0 = b * block_size; t0 < ctx; t0 += block_size, ++b) {
        const int64_t base = static_cast<int64_t>(btp[s * MB + b]) * block_size;
        const int64_t lo = std::max(first, t0) - t0, n = std::min(block_size, ctx - t0);
        for (int64_t o = lo; o < n; ++o)
          score_row(qs, kp + ((base + o) * KVH + kh) * row, group, d, fscale, scores.data() + t0 + o - first, n_keys);
      }
      for (int64_t g = 0; g < group; ++g) softmax(scores.data() + g * n_keys, n_keys);
      // Pass 2: weighted sum of values, reading each value once.
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int64_t b = first / block_size, t0 = b * block_size; t0 < ctx; t0 += block_size, ++b) {
        const int64_t base = static_cast<int64_t>(btp[s * MB + b]) * block_size;
        const int64_t lo = std::max(first, t0) - t0, n = std::min(block_size, ctx - t0);
        for (int64_t o = lo; o < n; ++o)
          accumulate_row(acc.data(), scores.data() + t0 + o - first, n_keys, vp + ((base + o) * KVH + kh) * row, group, d);
      }
      std::copy(acc.begin(), acc.end(), op + (s * H + kh * group) * d);
    }
  });
}

torch::Tensor paged_decode_attention(
    torch::Tensor q, torch::Tensor k_cache, torch::Tensor v_cache,
    torch::Tensor block_tables, torch::Tensor context_lens, int64_t block_size, double scale, int64_t window) {
  TORCH_CHECK(q.dtype() == torch::kFloat32, "queries must be float32");
  TORCH_CHECK(k_cache.dtype() == v_cache.dtype(), "k and v caches must share a dtype");
  TORCH_CHECK(q.is_contiguous() && k_cache.is_contiguous() && v_cache.is_contiguous(), "contiguous inputs only");
  TORCH_CHECK(block_tables.dtype() == torch::kInt32 && context_lens.dtype() == torch::kInt32, "int32 tables");
  const bool int8 = k_cache.dtype() == torch::kInt8;
  TORCH_CHECK(k_cache.size(2) == q.size(2) + (int8 ? 4 : 0), "cache rows must be head_dim wide (+ 4 scale bytes if int8)");
  auto out = torch::empty_like(q);
  if (int8) {
    decode_impl<int8_t>(q, k_cache, v_cache, block_tables, context_lens, block_size, scale, window, out);
  } else if (k_cache.dtype() == torch::kFloat32) {
    decode_impl<float>(q, k_cache, v_cache, block_tables, context_lens, block_size, scale, window, out);
  } else if (k_cache.dtype() == torch::kBFloat16) {
    decode_impl<uint16_t>(q, k_cache, v_cache, block_tables, context_lens, block_size, scale, window, out);
  } else {
    TORCH_CHECK(false, "KV cache dtype must be float32, bfloat16 or int8");
  }
  return out;
}

torch::Tensor int8_linear(torch::Tensor x, torch::Tensor weight_t, torch::Tensor scales, c10::optional<torch::Tensor> bias,
                          c10::optional<torch::Tensor> packed, c10::optional<torch::Tensor> col_sums);
std::tuple<torch::Tensor, torch::Tensor> pack_int8_weight(torch::Tensor weight_t);
torch::Tensor rms_norm(torch::Tensor x, torch::Tensor weight, double eps);
torch::Tensor argmax_rows(torch::Tensor x);
std::tuple<torch::Tensor, torch::Tensor> add_rms_norm(torch::Tensor x, torch::Tensor residual, torch::Tensor weight, double eps);
torch::Tensor rotary(torch::Tensor x, torch::Tensor cos, torch::Tensor signed_sin, torch::Tensor positions);
torch::Tensor silu_mul(torch::Tensor gate_up);
void store_kv(torch::Tensor k, torch::Tensor v, torch::Tensor k_cache, torch::Tensor v_cache, torch::Tensor slots);
void lora_add(torch::Tensor y, torch::Tensor x, torch::Tensor slots, torch::Tensor a, torch::Tensor b,
              torch::Tensor ranks, std::vector<int64_t> bounds, int64_t max_rank);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("paged_decode_attention", &paged_decode_attention, "paged decode attention (CPU, float32)",
        py::arg("q"), py::arg("k_cache"), py::arg("v_cache"), py::arg("block_tables"), py::arg("context_lens"),
        py::arg("block_size"), py::arg("scale"), py::arg("window") = 0);
  m.def("int8_linear", &int8_linear, "int8 linear with per-row activation scales (CPU)");
  m.def("pack_int8_weight", &pack_int8_weight, "int8 weights packed for the small-row VNNI kernel, and column sums");
  m.def("rms_norm", &rms_norm, "RMSNorm over the last dimension (CPU, float32)");
  m.def("argmax_rows", &argmax_rows, "first index of each row's largest value (CPU, float32)");
  m.def("add_rms_norm", &add_rms_norm, "RMSNorm of x + residual, and x + residual (CPU, float32)");
  m.def("rotary", &rotary, "rotary embedding, rotate_half layout (CPU, float32)");
  m.def("silu_mul", &silu_mul, "silu(gate) * up over [gate | up] rows (CPU, float32)");
  m.def("store_kv", &store_kv, "write a step's K/V rows into the paged cache, converting to its dtype (CPU)");
  m.def("lora_add", &lora_add, "add each token's own LoRA adapter product to y in place, gathered per row (CPU, float32)");
}
