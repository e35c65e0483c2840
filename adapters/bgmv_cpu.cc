#include "adapters/bgmv_cpu.h"

#include <vector>

#include <ATen/Parallel.h>

namespace loramux {
namespace {

// Both passes run along contiguous memory so they vectorize: u = c·(A x) is `rank` dot products
// over `in`; B u is `rank` axpys over `out` rows of B^T.
void SegmentDelta(const float* x, float* y, const float* bias, int64_t in, int64_t out,
                  const BgmvSegment& s, std::vector<float>& delta) {
  float u[512];  // rank <= 512, checked by the caller
  for (int64_t t = s.begin; t < s.end; ++t) {
    const float* xt = x + t * in;
    float* yt = y + t * out;
    for (int64_t k = 0; k < s.rank; ++k) {
      const float* ak = s.a + k * in;
      float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
      for (int64_t i = 0; i < in; ++i) sum += ak[i] * xt[i];
      u[k] = sum * s.scale;
    }
    // LoRA accumulates straight into y; DoRA needs the whole delta before applying its gain.
    float* acc = yt;
    if (s.gain != nullptr) {
      delta.assign(out, 0.0f);
      acc = delta.data();
    }
    for (int64_t k = 0; k < s.rank; ++k) {
      const float* bk = s.b_t + k * out;
      const float uk = u[k];
#pragma omp simd
      for (int64_t o = 0; o < out; ++o) acc[o] += bk[o] * uk;
    }
    if (s.gain != nullptr) {
      for (int64_t o = 0; o < out; ++o) {
        const float b = bias ? bias[o] : 0.0f;
        yt[o] = s.gain[o] * (yt[o] - b + acc[o]) + b;
      }
    }
  }
}

}  // namespace

void BgmvCpu(const float* x, float* y, const float* bias, int64_t in, int64_t out,
             const std::vector<BgmvSegment>& segments) {
  at::parallel_for(0, static_cast<int64_t>(segments.size()), 1, [&](int64_t first, int64_t last) {
    std::vector<float> delta;
    for (int64_t i = first; i < last; ++i) SegmentDelta(x, y, bias, in, out, segments[i], delta);
  });
}

}  // namespace loramux
