#include "model/decode_attention.h"

#include <cmath>
#include <limits>

#include <ATen/Parallel.h>

#include "model/float_elements.h"

namespace loramux {
namespace {

struct Shape {
  int64_t kv_heads, group, head_dim;
  float scale;
};

// One (decode row, KV head): its `group` query heads against the row's visible keys and values.
// `scores` holds at least end - begin floats, `acc` head_dim.
template <typename T>
LORAMUX_ALWAYS_INLINE void AttendOne(const T* q, const T* keys, const T* values, T* out,
                                     const DecodeContext& c, int64_t kv_head, const Shape& s,
                                     float* scores, float* query, float* acc) {
  const int64_t hd = s.head_dim, slot_stride = s.kv_heads * hd;
  const int64_t n = c.end - c.begin;
  for (int64_t g = 0; g < s.group; ++g) {
    const int64_t head = kv_head * s.group + g;
    const T* qh = q + (c.row * s.kv_heads * s.group + head) * hd;
#pragma omp simd
    for (int64_t i = 0; i < hd; ++i) query[i] = Widen(qh[i]);
    float max = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < n; ++j) {
      const T* k = keys + c.slots[c.begin + j] * slot_stride + kv_head * hd;
      float dot = 0;
#pragma omp simd reduction(+ : dot)
      for (int64_t i = 0; i < hd; ++i) dot += query[i] * Widen(k[i]);
      scores[j] = dot * s.scale;
      max = std::max(max, scores[j]);
    }
    float total = 0;
#pragma omp simd reduction(+ : total)
    for (int64_t j = 0; j < n; ++j) total += scores[j] = FastExp(scores[j] - max);
#pragma omp simd
    for (int64_t i = 0; i < hd; ++i) acc[i] = 0;
    for (int64_t j = 0; j < n; ++j) {
      const T* v = values + c.slots[c.begin + j] * slot_stride + kv_head * hd;
      const float p = scores[j];
#pragma omp simd
      for (int64_t i = 0; i < hd; ++i) acc[i] += p * Widen(v[i]);
    }
    T* oh = out + (c.row * s.kv_heads * s.group + head) * hd;
    const float inv = 1.0f / total;
#pragma omp simd
    for (int64_t i = 0; i < hd; ++i) oh[i] = Narrow<T>(acc[i] * inv);
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
  std::vector<float> scores(longest), query(s.head_dim), acc(s.head_dim);
  for (int64_t t = first; t < last; ++t) {
    AttendOne(q, keys, values, out, contexts[t / s.kv_heads], t % s.kv_heads, s, scores.data(),
              query.data(), acc.data());
  }
}

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
