// Paged attention on CPU for every row of a step, decode or prefill, read in place from the block-paged
// cache: flash-style, tiled over keys with an online softmax, parallel over (span, kv head, query tile).
//
// A span is a run of consecutive query rows of one sequence (a decode is a span of one row; a prefill
// chunk, a span of its tokens). A work item takes up to QT tokens of one span and the `group` query
// heads of one KV head and runs every row over each tile of KT keys and values, read in place (float32,
// bfloat16 or float16 rows, widened in registers) or from a float32 copy of the tile (int8 rows). Key
// tiles are aligned to absolute positions and each row's arithmetic (dot products, running max and sum,
// weighted sum of values) follows a fixed order over its own keys only, so a row's result never depends
// on the other rows of its tile or batch: decode, prefill, chunked prefill and a prefix hit give the same
// bits for the same token.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <c10/util/Half.h>
#include <omp.h>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "int8_kv_row.h"
#include "simd_exp.h"

namespace {

constexpr int64_t KT = 64;  // keys per tile, starting at multiples of KT
constexpr int64_t QT = 16;  // query tokens per work item
constexpr float NEG_INF = -std::numeric_limits<float>::infinity();

// Eight float lanes: AVX2 registers, or a plain array with the same lane arithmetic elsewhere.
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
using V8 = __m256;
inline V8 vzero() { return _mm256_setzero_ps(); }
inline V8 vset(float x) { return _mm256_set1_ps(x); }
inline V8 vload(const float* p) { return _mm256_loadu_ps(p); }
inline void vstore(float* p, V8 v) { _mm256_storeu_ps(p, v); }
inline V8 vfma(V8 a, V8 b, V8 c) { return _mm256_fmadd_ps(a, b, c); }
inline V8 vadd(V8 a, V8 b) { return _mm256_add_ps(a, b); }
inline V8 vsub(V8 a, V8 b) { return _mm256_sub_ps(a, b); }
inline V8 vmul(V8 a, V8 b) { return _mm256_mul_ps(a, b); }
inline V8 vmax(V8 a, V8 b) { return _mm256_max_ps(a, b); }
// Eight bfloat16 values widened: each is the top half of a float32.
inline V8 vload_bf16(const uint16_t* p) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
}
// Eight float16 values widened (F16C: exact, as every float16 is a float32).
inline V8 vload_f16(const c10::Half* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
// Lane k of the result: ((a[k]0 + a[k]1) + (a[k]2 + a[k]3)) + ((a[k]4 + a[k]5) + (a[k]6 + a[k]7)).
inline V8 reduce8(const V8* a) {
  V8 u0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
  V8 u1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}
// exp(x) for x <= 0 (simd_exp.h).
inline V8 vexp(V8 x) { return exp8(x); }
#else
struct V8 { float x[8]; };
inline V8 vzero() { return V8{}; }
inline V8 vset(float s) { V8 v; for (int k = 0; k < 8; ++k) v.x[k] = s; return v; }
inline V8 vload(const float* p) { V8 v; std::memcpy(v.x, p, sizeof(v.x)); return v; }
inline void vstore(float* p, V8 v) { std::memcpy(p, v.x, sizeof(v.x)); }
inline V8 vfma(V8 a, V8 b, V8 c) { for (int k = 0; k < 8; ++k) c.x[k] = std::fma(a.x[k], b.x[k], c.x[k]); return c; }
inline V8 vadd(V8 a, V8 b) { for (int k = 0; k < 8; ++k) a.x[k] += b.x[k]; return a; }
inline V8 vsub(V8 a, V8 b) { for (int k = 0; k < 8; ++k) a.x[k] -= b.x[k]; return a; }
inline V8 vmul(V8 a, V8 b) { for (int k = 0; k < 8; ++k) a.x[k] *= b.x[k]; return a; }
inline V8 vmax(V8 a, V8 b) { for (int k = 0; k < 8; ++k) a.x[k] = std::max(a.x[k], b.x[k]); return a; }
inline V8 vload_bf16(const uint16_t* p) {
  V8 v;
  for (int k = 0; k < 8; ++k) {
    const uint32_t bits = static_cast<uint32_t>(p[k]) << 16;
    std::memcpy(v.x + k, &bits, sizeof(float));
  }
  return v;
}
inline V8 vload_f16(const c10::Half* p) {
  V8 v;
  for (int k = 0; k < 8; ++k) v.x[k] = static_cast<float>(p[k]);
  return v;
}
inline V8 reduce8(const V8* a) {
  V8 out;
  for (int k = 0; k < 8; ++k) {
    const float* x = a[k].x;
    out.x[k] = ((x[0] + x[1]) + (x[2] + x[3])) + ((x[4] + x[5]) + (x[6] + x[7]));
  }
  return out;
}
inline V8 vexp(V8 x) { for (int k = 0; k < 8; ++k) x.x[k] = std::exp(std::max(x.x[k], -87.f)); return x; }
#endif

inline float hsum(V8 v) {
  float x[8];
  vstore(x, v);
  return ((x[0] + x[1]) + (x[2] + x[3])) + ((x[4] + x[5]) + (x[6] + x[7]));
}
inline float hmax(V8 v) {
  float x[8];
  vstore(x, v);
  return std::max(std::max(std::max(x[0], x[1]), std::max(x[2], x[3])), std::max(std::max(x[4], x[5]), std::max(x[6], x[7])));
}

// One cache row (d values of one token and KV head) as float32, an int8 row times its own scale
// (the float16 after its d values: vivace/engine/attention/kv_quant.py).
inline void widen(const float* in, int64_t d, float* out) { std::memcpy(out, in, d * sizeof(float)); }
inline void widen(const uint16_t* in, int64_t d, float* out) {
  int64_t i = 0;
  for (; i + 8 <= d; i += 8) vstore(out + i, vload_bf16(in + i));
  for (; i < d; ++i) {
    const uint32_t bits = static_cast<uint32_t>(in[i]) << 16;
    std::memcpy(out + i, &bits, sizeof(float));
  }
}
inline void widen(const c10::Half* in, int64_t d, float* out) {
  int64_t i = 0;
  for (; i + 8 <= d; i += 8) vstore(out + i, vload_f16(in + i));
  for (; i < d; ++i) out[i] = static_cast<float>(in[i]);
}
inline void widen(const int8_t* in, int64_t d, float* out) {
  const float s = int8_row_scale(in, d);
  for (int64_t i = 0; i < d; ++i) out[i] = static_cast<float>(in[i]) * s;
}

// Where the cache row of the key at position `key` and KV head `kh` starts, in elements of a cache
// [slots, KVH, width], through the sequence's block table.
inline int64_t cache_row(const int32_t* table, int64_t key, int64_t block_size, int64_t KVH, int64_t kh, int64_t width) {
  const int64_t slot = static_cast<int64_t>(table[key / block_size]) * block_size + key % block_size;
  return (slot * KVH + kh) * width;
}

// A key's K and V cache rows requested ahead of their widening: rows are scattered by the block table and
// strided by the other KV heads, a pattern the hardware prefetcher does not foresee, so without this each
// row is a cache miss once a step's KV outgrows the caches (measured: 32 decodes at 1,024 context, 1.8x).
// Into the core's L2 (prefetcht1): a key's rows are up to 12 lines, and asked for into L1 they queued behind
// its few miss buffers (32 decodes at 256 context over 30 layers' caches: 569 us per call, 483 into L2).
constexpr int64_t kPrefetchKeys = 16;

// Keys of its next item a thread asks for while it runs the heads after the first of its current one
// (whose rows it reads from its own caches, with no memory request in flight): 256 keys' whole K and V
// rows are 192 KB of bfloat16 at the default model's 3 x 64, beside the current item's in a 1 MB L2.
constexpr int64_t kAheadKeys = 256;

// Rows asked for during one value pass: at each value slot j, the `lines` cache lines from at[j] (if set).
struct Ahead {
  const char* const* at;
  int64_t lines;
};

// The whole K and V cache rows (every KV head) of keys [key, end) of a sequence, handed out one at a time
// (a key's K row, then its V row), walking the block table without a division per key.
struct RowsAhead {
  const char *k = nullptr, *v = nullptr;
  const int32_t* table = nullptr;
  int64_t block_size = 0, row_bytes = 0, key = 0, end = 0, block = 0, offset = 0;
  bool value = false;
  int64_t left() const { return 2 * (end - key) - (value ? 1 : 0); }
  const char* next() {
    const char* row = (value ? v : k) + (static_cast<int64_t>(table[block]) * block_size + offset) * row_bytes;
    if (value) {
      ++key;
      if (++offset == block_size) offset = 0, ++block;
    }
    value = !value;
    return row;
  }
};
template <typename KV>
inline void prefetch_rows(const KV* kp, const KV* vp, const int32_t* table, int64_t key, int64_t block_size,
                          int64_t KVH, int64_t kh, int64_t width) {
  const int64_t at = cache_row(table, key, block_size, KVH, kh, width);
  const char* k = reinterpret_cast<const char*>(kp + at);
  const char* v = reinterpret_cast<const char*>(vp + at);
  for (int64_t off = 0; off < width * static_cast<int64_t>(sizeof(KV)); off += 64) {
    __builtin_prefetch(k + off, 0, 2);
    __builtin_prefetch(v + off, 0, 2);
  }
}

struct Span {
  int64_t row, rows, pos;  // first query row of the step, how many, position of the first
};

// Eight values of a float32, bfloat16 or float16 row as float32 lanes (exact: a bfloat16 is a float32's top
// half, and a float16's every value is a float32).
inline V8 vload_row(const float* p) { return vload(p); }
inline V8 vload_row(const uint16_t* p) { return vload_bf16(p); }
inline V8 vload_row(const c10::Half* p) { return vload_f16(p); }

// Scores of up to three rows against the tile's keys [jlo, jhi) (multiples of 4), each key's row at krow[j]:
// its cache row read in place (float32, bfloat16 or float16, widened in registers), or its float32 copy.
// S[r][j] = q_r . k_j, a chain of fused multiply-adds over the d8 dimensions in eight lanes, then reduce8's
// fixed sum of the lanes. A lane of reduce8 sums its own vector only, so a row's scores are the same bits whichever
// rows it is grouped with and whether its keys were copied.
template <int ROWS, typename KV>
inline void tile_scores_rows(const float* const* q, const KV* const* krow, int64_t d8, int64_t jlo, int64_t jhi,
                             float* const* s) {
  for (int64_t j = jlo; j < jhi; j += 4) {
    V8 acc[3][4];
    for (int r = 0; r < ROWS; ++r)
      for (int x = 0; x < 4; ++x) acc[r][x] = vzero();
    const KV *k0 = krow[j], *k1 = krow[j + 1], *k2 = krow[j + 2], *k3 = krow[j + 3];
    for (int64_t i = 0; i < d8; i += 8) {
      const V8 w0 = vload_row(k0 + i), w1 = vload_row(k1 + i), w2 = vload_row(k2 + i), w3 = vload_row(k3 + i);
      for (int r = 0; r < ROWS; ++r) {
        const V8 a = vload(q[r] + i);
        acc[r][0] = vfma(a, w0, acc[r][0]);
        acc[r][1] = vfma(a, w1, acc[r][1]);
        acc[r][2] = vfma(a, w2, acc[r][2]);
        acc[r][3] = vfma(a, w3, acc[r][3]);
      }
    }
    for (int r = 0; r < ROWS; r += 2) {
      const V8 pair[8] = {acc[r][0], acc[r][1], acc[r][2], acc[r][3], r + 1 < ROWS ? acc[r + 1][0] : vzero(),
                          r + 1 < ROWS ? acc[r + 1][1] : vzero(), r + 1 < ROWS ? acc[r + 1][2] : vzero(),
                          r + 1 < ROWS ? acc[r + 1][3] : vzero()};
      float out[8];
      vstore(out, reduce8(pair));
      std::memcpy(s[r] + j, out, 4 * sizeof(float));
      if (r + 1 < ROWS) std::memcpy(s[r + 1] + j, out + 4, 4 * sizeof(float));
    }
  }
}

// acc_r += sum over j of P[r][j] * v_j for up to three rows over keys [jlo, jhi), each value's row at
// vrow[j] (as krow in tile_scores_rows): one fused multiply-add per key in key order (a key a row does not
// see has P = 0, which leaves its sums exactly as they were). `ahead`: rows to ask for into L2 on the way.
template <int ROWS, typename KV>
inline void tile_values_rows(const float* const* p, const KV* const* vrow, int64_t d8, int64_t jlo, int64_t jhi,
                             float* const* a, Ahead ahead) {
  int64_t i = 0;
  for (; i + 32 <= d8; i += 32) {
    V8 x[3][4];
    for (int r = 0; r < ROWS; ++r)
      for (int c = 0; c < 4; ++c) x[r][c] = vload(a[r] + i + 8 * c);
    for (int64_t j = jlo; j < jhi; ++j) {
      if (i == 0 && ahead.at != nullptr && ahead.at[j] != nullptr)
        for (int64_t l = 0; l < ahead.lines; ++l) __builtin_prefetch(ahead.at[j] + 64 * l, 0, 2);
      const KV* v = vrow[j] + i;
      const V8 v0 = vload_row(v), v1 = vload_row(v + 8), v2 = vload_row(v + 16), v3 = vload_row(v + 24);
      for (int r = 0; r < ROWS; ++r) {
        const V8 w = vset(p[r][j]);
        x[r][0] = vfma(w, v0, x[r][0]);
        x[r][1] = vfma(w, v1, x[r][1]);
        x[r][2] = vfma(w, v2, x[r][2]);
        x[r][3] = vfma(w, v3, x[r][3]);
      }
    }
    for (int r = 0; r < ROWS; ++r)
      for (int c = 0; c < 4; ++c) vstore(a[r] + i + 8 * c, x[r][c]);
  }
  for (; i < d8; i += 8) {
    V8 x[3];
    for (int r = 0; r < ROWS; ++r) x[r] = vload(a[r] + i);
    for (int64_t j = jlo; j < jhi; ++j) {
      const V8 v = vload_row(vrow[j] + i);
      for (int r = 0; r < ROWS; ++r) x[r] = vfma(vset(p[r][j]), v, x[r]);
    }
    for (int r = 0; r < ROWS; ++r) vstore(a[r] + i, x[r]);
  }
}

// Calls fn(std::integral_constant<int, n>, ins, outs) for rows [r, r + n) of R in groups of up to three, with
// ins[x] = in + (r + x) * in_stride and outs[x] = out + (r + x) * out_stride.
template <typename Fn>
inline void for_row_groups(int64_t R, const float* in, int64_t in_stride, float* out, int64_t out_stride, Fn&& fn) {
  for (int64_t r = 0; r < R; r += 3) {
    const float* ins[3];
    float* outs[3];
    for (int64_t x = 0; x < 3; ++x) {
      const int64_t row = std::min(r + x, R - 1);
      ins[x] = in + row * in_stride;
      outs[x] = out + row * out_stride;
    }
    switch (std::min<int64_t>(3, R - r)) {
      case 3: fn(std::integral_constant<int, 3>{}, ins, outs); break;
      case 2: fn(std::integral_constant<int, 2>{}, ins, outs); break;
      default: fn(std::integral_constant<int, 1>{}, ins, outs); break;
    }
  }
}

// Scratch of one thread, sized for the largest work item.
struct Scratch {
  std::vector<float> q, s, acc, m, l, kf, vf;
  Scratch(int64_t rows, int64_t d8)
      : q(rows * d8, 0.f), s(rows * KT, 0.f), acc(rows * d8), m(rows), l(rows), kf(KT * d8, 0.f), vf(KT * d8, 0.f) {}
};

// The calling thread's scratch, kept between calls (allocating and zeroing ~70 KB per call was most of a
// one-row decode's fixed cost). Rebuilt when a call needs more rows or another head size: rows' padding
// lanes [d, d8) are zero from construction and never written, which a change of d alone would break.
Scratch& thread_scratch(int64_t rows, int64_t d) {
  thread_local Scratch w(0, 0);
  thread_local int64_t have_rows = 0, have_d = -1;
  if (rows > have_rows || d != have_d) {
    w = Scratch(std::max(rows, have_rows), (d + 7) / 8 * 8);
    have_rows = std::max(rows, have_rows);
    have_d = d;
  }
  return w;
}

template <typename KV>
void attention_impl(const torch::Tensor& q, const torch::Tensor& k_cache, const torch::Tensor& v_cache,
                    const torch::Tensor& block_tables, const std::vector<Span>& spans, int64_t block_size, float scale,
                    int64_t window, const int64_t* tree, torch::Tensor& out) {
  const int64_t H = q.size(1), d = q.size(2), KVH = k_cache.size(1), width = k_cache.size(2);
  const int64_t group = H / KVH, MB = block_tables.size(1);
  const int64_t d8 = (d + 7) / 8 * 8;  // rows padded with zeros to whole lanes
  const float* qp = q.data_ptr<float>();
  const KV* kp = static_cast<const KV*>(k_cache.data_ptr());
  const KV* vp = static_cast<const KV*>(v_cache.data_ptr());
  const int32_t* btp = block_tables.data_ptr<int32_t>();
  float* op = out.data_ptr<float>();

  // An item is QT tokens of a span against KV heads [kh0, kh1). With enough items for the threads, an item
  // takes every KV head: its first head's pass asks for the keys' whole cache rows (all heads, contiguous
  // within a block), so the other heads read them from the core's own cache instead of from memory again
  // (same call as above: 641 us per call with an item per head, 569 with this).
  struct Item {
    int64_t span, kh0, kh1, t0, t1, cost;
  };
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  int64_t chunks = 0;
  for (const Span& span : spans) chunks += (span.rows + QT - 1) / QT;
  const int64_t heads_per_item = chunks >= 4 * threads ? KVH : 1;
  std::vector<Item> items;
  for (int64_t s = 0; s < static_cast<int64_t>(spans.size()); ++s) {
    for (int64_t t0 = 0; t0 < spans[s].rows; t0 += QT) {
      const int64_t t1 = std::min(spans[s].rows, t0 + QT);
      const int64_t last = spans[s].pos + t1;  // keys of the tile's last row
      const int64_t keys = window > 0 ? std::min(last, window + t1 - t0) : last;
      for (int64_t kh = 0; kh < KVH; kh += heads_per_item)
        items.push_back({s, kh, kh + heads_per_item, t0, t1, heads_per_item * (t1 - t0) * keys});
    }
  }
  // Longest first, handed out one at a time (each thread holds its next one too, see below): causal rows
  // differ widely in cost.
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.cost > b.cost; });
  const int64_t n_items = static_cast<int64_t>(items.size());
  const int64_t max_rows = QT * group;
  // Float32, bfloat16 and float16 rows of whole lanes are read in place, each key once per group of three
  // query rows, with nothing stored to be read back (32 decodes at 256 context: 260 us per call, 350 when
  // every tile was copied first). Int8 rows (their scale applied) and rows of a head size that is not whole
  // lanes are copied to float32 a tile at a time (widen) and read from the copy. Both give the same bits.
  constexpr bool kRowsCanBeRead = !std::is_same_v<KV, int8_t>;
  const bool in_place = kRowsCanBeRead && d % 8 == 0;
  // fn(rows) with a tile's rows in place, or with their float32 copies.
  auto with_rows = [&](const KV* const* cache_rows, const float* const* copies, auto&& fn) {
    if constexpr (kRowsCanBeRead) {
      if (in_place) return fn(cache_rows);
    }
    fn(copies);
  };

  // An item over every KV head reads its keys' whole rows from memory in its first head's pass; the passes
  // of its other heads read them from the thread's caches. During those, the thread asks for the first
  // kAheadKeys keys' whole rows of the item it runs next, one row per value slot, spread over the passes,
  // so that item's first pass finds them in L2 (bench/cpu_attention.py, 32 decodes at 256 context over 30
  // layers' caches: 505-512 us per call before, 351-353 with this; the same keys in the CPU's caches: 270,
  // 277). Items are handed out one ahead to make the next one known.
  const int64_t row_bytes = KVH * width * static_cast<int64_t>(sizeof(KV)), row_lines = (row_bytes + 63) / 64;
  // The next item's first keys (items of one call all take every KV head, or all one).
  auto rows_ahead = [&](const Item& next) {
    RowsAhead rows{reinterpret_cast<const char*>(kp), reinterpret_cast<const char*>(vp), btp + next.span * MB,
                   block_size, row_bytes};
    const Span& ns = spans[next.span];
    rows.key = window > 0 ? std::max<int64_t>(0, ns.pos + next.t0 + 1 - window) : 0;
    rows.end = std::min(ns.pos + next.t1, rows.key + kAheadKeys);
    rows.block = rows.key / block_size;
    rows.offset = rows.key % block_size;
    return rows;
  };
  std::atomic<int64_t> handed_out{0};
#pragma omp parallel num_threads(std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n_items)))
  {
    Scratch& w = thread_scratch(max_rows, d);
    int64_t next_it = handed_out.fetch_add(1);
    while (next_it < n_items) {
      const int64_t it = next_it;
      next_it = handed_out.fetch_add(1);
      const Item& item = items[it];
      const Span& sp = spans[item.span];
      RowsAhead next_rows;
      if (next_it < n_items && item.kh1 - item.kh0 > 1) next_rows = rows_ahead(items[next_it]);
      const int32_t* table = btp + item.span * MB;
      const int64_t R = (item.t1 - item.t0) * group;  // rows of one KV head: token-major, then the group's heads
      // Row r: token t0 + r / group at position pos + t0 + r / group, sees keys [first, pos + 1).
      auto row_hi = [&](int64_t r) { return sp.pos + item.t0 + r / group + 1; };
      auto row_lo = [&](int64_t r) { return window > 0 ? std::max<int64_t>(0, row_hi(r) - window) : int64_t(0); };
      // A draft tree's node (tree[2 t] = position of its first node, tree[2 t + 1] = bitmask of the nodes
      // it sees) sets `value` at the tile's keys in [a, b) that are nodes other than its ancestors and itself.
      auto mask_tree = [&](int64_t r, int64_t k0, int64_t a, int64_t b, float* s, float value) {
        if (tree == nullptr) return;
        const int64_t token = sp.row + item.t0 + r / group;
        const int64_t base = tree[2 * token];
        const uint64_t bits = static_cast<uint64_t>(tree[2 * token + 1]);
        for (int64_t j = std::max(a, base - k0); j < b; ++j)
          if (!((bits >> (k0 + j - base)) & 1u)) s[j] = value;
      };
      const int64_t lo = row_lo(0), hi = row_hi(R - 1);  // keys any row of the item sees
      const KV* krow[KT];  // the tile's keys' and values' rows: in place ...
      const KV* vrow[KT];
      const float* kcopy[KT];  // ... or their float32 copies
      const float* vcopy[KT];
      for (int64_t kh = item.kh0; kh < item.kh1; ++kh) {
        const bool whole_rows = kh == item.kh0 && item.kh1 - item.kh0 > 1;
        for (int64_t r = 0; r < R; ++r) {
          const float* src = qp + ((sp.row + item.t0 + r / group) * H + kh * group + r % group) * d;
          float* dst = w.q.data() + r * d8;
          for (int64_t i = 0; i < d; ++i) dst[i] = src[i] * scale;
        }
        std::fill(w.acc.begin(), w.acc.begin() + R * d8, 0.f);
        std::fill(w.m.begin(), w.m.begin() + R, NEG_INF);
        std::fill(w.l.begin(), w.l.begin() + R, 0.f);
        // The whole-row / own-row choice below is written out at both of its places: put in one lambda, the
        // build had no prefetch instructions left at all, and the from-memory decode case took 1.8x as long.
        if (whole_rows)  // the first keys, which the loop below does not ask for ahead
          for (int64_t key = lo; key < std::min(hi, lo + kPrefetchKeys); ++key)
            prefetch_rows(kp, vp, table, key, block_size, 1, 0, KVH * width);
        for (int64_t k0 = lo / KT * KT; k0 < hi; k0 += KT) {
          const int64_t jlo = std::max(lo, k0) - k0, jhi = std::min(hi, k0 + KT) - k0;
          // Only the keys some row sees are read (a decode's last tile may hold one); the others in the 4-key
          // steps of the scores are scored on a row that exists, masked below, and their values never read.
          for (int64_t j = jlo; j < jhi; ++j) {
            const int64_t key = k0 + j;
            const int64_t at = cache_row(table, key, block_size, KVH, kh, width);
            if (key + kPrefetchKeys < hi) {
              if (whole_rows)
                prefetch_rows(kp, vp, table, key + kPrefetchKeys, block_size, 1, 0, KVH * width);
              else
                prefetch_rows(kp, vp, table, key + kPrefetchKeys, block_size, KVH, kh, width);
            }
            if (in_place) {
              krow[j] = kp + at;
              vrow[j] = vp + at;
            } else {
              widen(kp + at, d, w.kf.data() + j * d8);
              widen(vp + at, d, w.vf.data() + j * d8);
              kcopy[j] = w.kf.data() + j * d8;
              vcopy[j] = w.vf.data() + j * d8;
            }
          }
          const int64_t slo = jlo / 4 * 4, shi = (jhi + 3) / 4 * 4;
          for (int64_t j = slo; j < shi; ++j) {  // keys no row sees are scored (then masked) on a row that exists
            if (j >= jlo && j < jhi) continue;
            if (in_place) krow[j] = krow[jlo];
            else kcopy[j] = kcopy[jlo];
          }
          with_rows(krow, kcopy, [&](const auto* const* rows) {
            for_row_groups(R, w.q.data(), d8, w.s.data(), KT, [&](auto n, const float* const* qs, float* const* ss) {
              tile_scores_rows<decltype(n)::value>(qs, rows, d8, slo, shi, ss);
            });
          });
          // Online softmax, row by row over the row's own keys in this tile; the scores become weights. The
          // max and the sum run over the 8-key chunks that hold the row's keys [a, b) only: the chunks left
          // out would add -inf to the max and +0 to each lane's sum, so the bits are those of all 64 keys.
          // Weights the value pass reads ([jlo, jhi)) outside [a, b) are 0.
          for (int64_t r = 0; r < R; ++r) {
            float* s = w.s.data() + r * KT;
            const int64_t a = std::max(row_lo(r), k0) - k0, b = std::min(row_hi(r), k0 + KT) - k0;
            if (a >= b) {  // this row sees none of the tile's keys
              std::fill(s + jlo, s + jhi, 0.f);
              continue;
            }
            const int64_t c0 = a / 8 * 8, c1 = (b + 7) / 8 * 8;
            std::fill(s + c0, s + a, NEG_INF);
            std::fill(s + b, s + c1, NEG_INF);
            mask_tree(r, k0, a, b, s, NEG_INF);
            V8 vmx = vload(s + c0);
            for (int64_t j = c0 + 8; j < c1; j += 8) vmx = vmax(vmx, vload(s + j));
            const float m_new = std::max(w.m[r], hmax(vmx));
            const V8 vm = vset(m_new);
            for (int64_t j = c0; j < c1; j += 8) vstore(s + j, vexp(vsub(vload(s + j), vm)));
            std::fill(s + std::min(jlo, c0), s + a, 0.f);
            std::fill(s + b, s + std::max(jhi, c1), 0.f);
            mask_tree(r, k0, a, b, s, 0.f);
            V8 sum = vload(s + c0);
            for (int64_t j = c0 + 8; j < c1; j += 8) sum = vadd(sum, vload(s + j));
            const float alpha = w.m[r] == NEG_INF ? 0.f : std::exp(w.m[r] - m_new);
            w.l[r] = w.l[r] * alpha + hsum(sum);
            w.m[r] = m_new;
            if (alpha != 1.f) {
              float* acc = w.acc.data() + r * d8;
              for (int64_t i = 0; i < d8; ++i) acc[i] *= alpha;
            }
          }
          // In the passes after the first, this tile's value slots take their share of the next item's rows.
          const char* ahead_at[KT];
          Ahead ahead{nullptr, row_lines};
          if (kh > item.kh0 && next_rows.left() > 0) {
            const int64_t tiles = (hi - lo / KT * KT + KT - 1) / KT;
            const int64_t passes_left = (hi - k0 + KT - 1) / KT + (item.kh1 - 1 - kh) * tiles;  // this tile's on
            const int64_t share = std::min(jhi - jlo, (next_rows.left() + passes_left - 1) / passes_left);
            std::fill(ahead_at + jlo, ahead_at + jhi, nullptr);
            for (int64_t j = jlo; j < jlo + share; ++j) ahead_at[j] = next_rows.next();
            ahead.at = ahead_at;
          }
          with_rows(vrow, vcopy, [&](const auto* const* rows) {
            for_row_groups(R, w.s.data(), KT, w.acc.data(), d8, [&](auto n, const float* const* ps, float* const* as) {
              tile_values_rows<decltype(n)::value>(ps, rows, d8, jlo, jhi, as, ahead);
            });
          });
        }
        for (int64_t r = 0; r < R; ++r) {
          const float inv = 1.f / w.l[r];
          const float* acc = w.acc.data() + r * d8;
          float* dst = op + ((sp.row + item.t0 + r / group) * H + kh * group + r % group) * d;
          for (int64_t i = 0; i < d; ++i) dst[i] = acc[i] * inv;
        }
      }
    }
  }
}

}  // namespace

// q [T, H, d] float32, rows in span order; k_cache/v_cache [S, KVH, d] float32, bfloat16 or float16, or
// [S, KVH, d + 2] int8 rows with their float16 scale (contiguous); block_tables [N, MB] int32, one per span;
// spans [N, 3] int32: (first row, rows, position of the first row); window > 0: a row at position p
// sees keys (p - window, p] only (blocks before them are never read), 0: its whole causal context.
// tree (optional) [T, 2] int64 per row: (first node position, node bitmask): keys at positions from the
// first node on are seen only where the row's bit is set (a draft tree's attention mask; rows outside a
// tree give a first node past every key). Returns [T, H, d] float32.
torch::Tensor paged_attention(torch::Tensor q, torch::Tensor k_cache, torch::Tensor v_cache, torch::Tensor block_tables,
                              torch::Tensor spans, int64_t block_size, double scale, int64_t window,
                              c10::optional<torch::Tensor> tree) {
  TORCH_CHECK(q.dtype() == torch::kFloat32 && q.dim() == 3, "queries must be [tokens, heads, head_dim] float32");
  TORCH_CHECK(k_cache.dtype() == v_cache.dtype(), "k and v caches must share a dtype");
  TORCH_CHECK(q.is_contiguous() && k_cache.is_contiguous() && v_cache.is_contiguous(), "contiguous inputs only");
  TORCH_CHECK(block_tables.dtype() == torch::kInt32 && block_tables.is_contiguous(), "block tables: contiguous int32");
  TORCH_CHECK(spans.dtype() == torch::kInt32 && spans.dim() == 2 && spans.size(1) == 3, "spans: [N, 3] int32");
  TORCH_CHECK(block_tables.size(0) == spans.size(0), "one block table per span");
  TORCH_CHECK(q.size(1) % k_cache.size(1) == 0, "query heads must be a multiple of kv heads");
  const bool int8 = k_cache.dtype() == torch::kInt8;
  TORCH_CHECK(k_cache.size(2) == kv_row_width(q.size(2), int8), "cache rows must be head_dim wide (+ ",
              kInt8RowScaleBytes, " scale bytes if int8)");
  auto sc = spans.contiguous();
  const int32_t* s = sc.data_ptr<int32_t>();
  std::vector<Span> list;
  int64_t covered = 0;
  for (int64_t i = 0; i < sc.size(0); ++i) {
    const Span span{s[3 * i], s[3 * i + 1], s[3 * i + 2]};
    TORCH_CHECK(span.row == covered && span.rows > 0 && span.pos >= 0, "spans must cover the rows in order");
    TORCH_CHECK((span.pos + span.rows + block_size - 1) / block_size <= block_tables.size(1), "a span outruns its block table");
    covered += span.rows;
    list.push_back(span);
  }
  TORCH_CHECK(covered == q.size(0), "spans cover ", covered, " rows; the queries have ", q.size(0));
  const int64_t* tp = nullptr;
  torch::Tensor tc;
  if (tree.has_value()) {
    tc = tree->contiguous();
    TORCH_CHECK(tc.dtype() == torch::kInt64 && tc.dim() == 2 && tc.size(0) == q.size(0) && tc.size(1) == 2,
                "tree: [tokens, 2] int64");
    tp = tc.data_ptr<int64_t>();
    for (int64_t t = 0; t < tc.size(0); ++t) TORCH_CHECK(tp[2 * t] >= 0, "tree: node positions must be >= 0");
  }
  auto out = torch::empty_like(q);
  const float fscale = static_cast<float>(scale);
  if (int8) {
    attention_impl<int8_t>(q, k_cache, v_cache, block_tables, list, block_size, fscale, window, tp, out);
  } else if (k_cache.dtype() == torch::kFloat32) {
    attention_impl<float>(q, k_cache, v_cache, block_tables, list, block_size, fscale, window, tp, out);
  } else if (k_cache.dtype() == torch::kBFloat16) {
    attention_impl<uint16_t>(q, k_cache, v_cache, block_tables, list, block_size, fscale, window, tp, out);
  } else if (k_cache.dtype() == torch::kHalf) {
    attention_impl<c10::Half>(q, k_cache, v_cache, block_tables, list, block_size, fscale, window, tp, out);
  } else {
    TORCH_CHECK(false, "KV cache dtype must be float32, bfloat16, float16 or int8");
  }
  return out;
}
