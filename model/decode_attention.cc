#include "model/decode_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include <ATen/Parallel.h>

#include "model/float_elements.h"

namespace loramux {
namespace {

struct Shape {
  int64_t kv_heads, group, head_dim;
  float scale;
};

// How many positions ahead of its reads a task requests their keys (and values): a task reads one
// KV head's part of each slot, in 16-slot blocks that lie anywhere in the cache, a pattern the
// hardware prefetcher does not follow. (decode_attention_bench, batch 32, 8 layers, bfloat16, with
// and without these requests in turn: 1024 positions 37-39 against 94-102 ms with contiguous
// slots, 48-51 against 181-198 ms with scattered ones; 2048 positions 75-77 against 202-214 ms.)
constexpr int64_t kPrefetchPositions = 8;

LORAMUX_ALWAYS_INLINE void PrefetchBytes(const void* p, int64_t bytes) {
  for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(static_cast<const char*>(p) + b);
}

// 16 float lanes in GCC's vector extension: compiled for whatever ISA a clone targets (one zmm
// register on AVX-512, four xmm on the baseline), with no target-specific intrinsics.
using Lanes = float __attribute__((vector_size(64)));
using LaneIndex = int32_t __attribute__((vector_size(64)));
constexpr int64_t kLanes = 16;

// <a, b> over n floats: element i into lane i % 16, the lanes then added pairwise in registers (a
// `simd reduction` over the same loop was summed lane by lane through memory).
LORAMUX_ALWAYS_INLINE float Dot(const float* a, const float* b, int64_t n) {
  Lanes sum = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    Lanes x, y;
    std::memcpy(&x, a + i, sizeof(x));
    std::memcpy(&y, b + i, sizeof(y));
    sum += x * y;
  }
  sum += __builtin_shuffle(sum, LaneIndex{8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7});
  sum += __builtin_shuffle(sum, LaneIndex{4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3});
  sum += __builtin_shuffle(sum, LaneIndex{2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1});
  float total = sum[0] + sum[1];
  for (; i < n; ++i) total += a[i] * b[i];
  return total;
}

// One thread's working memory: scores [group, longest context]; query and acc [group, head_dim];
// row [head_dim]; inverse [group].
struct Scratch {
  Scratch(const Shape& s, int64_t longest)
      : scores(s.group * longest),
        query(s.group * s.head_dim),
        acc(s.group * s.head_dim),
        row(s.head_dim),
        inverse(s.group) {}
  std::vector<float> scores, query, acc, row, inverse;
};

// One (decode row, KV head): its `group` query heads against the row's visible keys and values.
// Each key and value is read once for all of them (widened into scratch.row), requested
// kPrefetchPositions positions ahead; each head's sums are as if it were alone.
template <typename T>
LORAMUX_ALWAYS_INLINE void AttendOne(const T* q, const T* keys, const T* values, T* out,
                                     const DecodeContext& c, int64_t kv_head, const Shape& s,
                                     Scratch& scratch) {
  const int64_t hd = s.head_dim, group = s.group, n = c.end - c.begin;
  const int64_t slot_stride = s.kv_heads * hd, row_bytes = hd * static_cast<int64_t>(sizeof(T));
  float* scores = scratch.scores.data();
  float* query = scratch.query.data();
  float* acc = scratch.acc.data();
  float* row = scratch.row.data();
  float* inverse = scratch.inverse.data();
  const auto at = [&](const T* cache, int64_t j) {
    return cache + c.slots[c.begin + j] * slot_stride + kv_head * hd;
  };
  // The group's query heads are adjacent in q and out: [group, hd] from `first`.
  const int64_t first = (c.row * s.kv_heads + kv_head) * group * hd;
#pragma omp simd
  for (int64_t i = 0; i < group * hd; ++i) query[i] = Widen(q[first + i]);

  for (int64_t j = 0; j < std::min(n, kPrefetchPositions); ++j) {
    PrefetchBytes(at(keys, j), row_bytes);
  }
  for (int64_t j = 0; j < n; ++j) {
    if (j + kPrefetchPositions < n) PrefetchBytes(at(keys, j + kPrefetchPositions), row_bytes);
    const T* k = at(keys, j);
#pragma omp simd
    for (int64_t i = 0; i < hd; ++i) row[i] = Widen(k[i]);
    for (int64_t g = 0; g < group; ++g) scores[g * n + j] = Dot(query + g * hd, row, hd) * s.scale;
  }

  for (int64_t j = 0; j < std::min(n, kPrefetchPositions); ++j) {
    PrefetchBytes(at(values, j), row_bytes);
  }
  for (int64_t g = 0; g < group; ++g) {
    float* sg = scores + g * n;
    float max = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < n; ++j) max = std::max(max, sg[j]);
    float total = 0;
#pragma omp simd reduction(+ : total)
    for (int64_t j = 0; j < n; ++j) total += sg[j] = FastExp(sg[j] - max);
    inverse[g] = 1.0f / total;
  }

#pragma omp simd
  for (int64_t i = 0; i < group * hd; ++i) acc[i] = 0;
  for (int64_t j = 0; j < n; ++j) {
    if (j + kPrefetchPositions < n) PrefetchBytes(at(values, j + kPrefetchPositions), row_bytes);
    const T* v = at(values, j);
#pragma omp simd
    for (int64_t i = 0; i < hd; ++i) row[i] = Widen(v[i]);
    for (int64_t g = 0; g < group; ++g) {
      const float p = scores[g * n + j];
      float* ag = acc + g * hd;
#pragma omp simd
      for (int64_t i = 0; i < hd; ++i) ag[i] += p * row[i];
    }
  }
  for (int64_t g = 0; g < group; ++g) {
    const float* ag = acc + g * hd;
    T* og = out + first + g * hd;
#pragma omp simd
    for (int64_t i = 0; i < hd; ++i) og[i] = Narrow<T>(ag[i] * inverse[g]);
  }
}

template <typename T>
LORAMUX_ALWAYS_INLINE void AttendRange(const T* q, const T* keys, const T* values, T* out,
                                       const std::vector<DecodeContext>& contexts, const Shape& s,
                                       int64_t first, int64_t last) {
  int64_t longest = 0;
  for (int64_t t = first; t < last; ++t) {
    const DecodeContext& c = contexts[t / s.kv_heads];
    longest = std::max(longest, c.end - c.begin);
  }
  Scratch scratch(s, longest);
  for (int64_t t = first; t < last; ++t) {
    AttendOne(q, keys, values, out, contexts[t / s.kv_heads], t % s.kv_heads, s, scratch);
  }
}

// Cloned per ISA and picked at load time (common/isa_clones.h).
LORAMUX_ISA_CLONES void AttendRangeF32(const float* q, const float* keys, const float* values,
                                       float* out, const std::vector<DecodeContext>& contexts,
                                       const Shape& s, int64_t first, int64_t last) {
  AttendRange(q, keys, values, out, contexts, s, first, last);
}
LORAMUX_ISA_CLONES void AttendRangeBF16(const c10::BFloat16* q, const c10::BFloat16* keys,
                                        const c10::BFloat16* values, c10::BFloat16* out,
                                        const std::vector<DecodeContext>& contexts, const Shape& s,
                                        int64_t first, int64_t last) {
  AttendRange(q, keys, values, out, contexts, s, first, last);
}

}  // namespace

bool DecodeAttentionApplies(torch::Device device, torch::ScalarType dtype) {
  return device.is_cpu() && (dtype == torch::kFloat32 || dtype == torch::kBFloat16);
}

void DecodeAttention(const torch::Tensor& q, const torch::Tensor& key_cache,
                     const torch::Tensor& value_cache, const std::vector<DecodeContext>& contexts,
                     double scale, torch::Tensor& out) {
  const torch::ScalarType t = q.scalar_type();
  TORCH_CHECK(DecodeAttentionApplies(q.device(), t) && q.is_contiguous() &&
                  key_cache.is_contiguous() && value_cache.is_contiguous() && out.is_contiguous() &&
                  key_cache.scalar_type() == t && value_cache.scalar_type() == t &&
                  out.scalar_type() == t,
              "DecodeAttention: contiguous float32 or bfloat16 CPU tensors of one dtype expected");
  const int64_t kv_heads = key_cache.size(1);
  const Shape shape{kv_heads, q.size(1) / kv_heads, q.size(2), static_cast<float>(scale)};
  const int64_t tasks = static_cast<int64_t>(contexts.size()) * kv_heads;
  at::parallel_for(0, tasks, 1, [&](int64_t first, int64_t last) {
    if (q.scalar_type() == torch::kFloat32) {
      AttendRangeF32(q.data_ptr<float>(), key_cache.data_ptr<float>(),
                     value_cache.data_ptr<float>(), out.data_ptr<float>(), contexts, shape, first,
                     last);
    } else {
      AttendRangeBF16(q.data_ptr<c10::BFloat16>(), key_cache.data_ptr<c10::BFloat16>(),
                      value_cache.data_ptr<c10::BFloat16>(), out.data_ptr<c10::BFloat16>(),
                      contexts, shape, first, last);
    }
  });
}

}  // namespace loramux
