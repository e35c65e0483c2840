#include "adapters/bgmv_cpu.h"

#include <ATen/Parallel.h>

namespace loramux {
namespace {

// Rows of A and B^T are consumed four at a time: four independent streams keep more memory
// requests in flight (decode reads every factor once, so this path is memory-bound), and the
// output row is swept once per four ranks instead of once per rank.
constexpr int64_t kRowsPerPass = 4;

// Both projections are forced inline so each ISA clone of SegmentDelta gets its own vector code
// (an out-of-line helper would be compiled once, for the SSE2 baseline).
#define LORAMUX_INLINE inline __attribute__((always_inline))

// u[k] = c · <A[k], x> for k in [0, rank).
LORAMUX_INLINE void ProjectDown(const float* a, const float* x, int64_t rank, int64_t in, float c,
                        float* u) {
  int64_t k = 0;
  for (; k + kRowsPerPass <= rank; k += kRowsPerPass) {
    const float *a0 = a + k * in, *a1 = a0 + in, *a2 = a1 + in, *a3 = a2 + in;
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
    for (int64_t i = 0; i < in; ++i) {
      s0 += a0[i] * x[i];
      s1 += a1[i] * x[i];
      s2 += a2[i] * x[i];
      s3 += a3[i] * x[i];
    }
    u[k] = s0 * c;
    u[k + 1] = s1 * c;
    u[k + 2] = s2 * c;
    u[k + 3] = s3 * c;
  }
  for (; k < rank; ++k) {
    const float* ak = a + k * in;
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < in; ++i) s += ak[i] * x[i];
    u[k] = s * c;
  }
}

// acc[o] += sum_k B^T[k][o] · u[k].
LORAMUX_INLINE void ProjectUp(const float* b_t, const float* u, int64_t rank, int64_t out, float* acc) {
  int64_t k = 0;
  for (; k + kRowsPerPass <= rank; k += kRowsPerPass) {
    const float *b0 = b_t + k * out, *b1 = b0 + out, *b2 = b1 + out, *b3 = b2 + out;
    const float u0 = u[k], u1 = u[k + 1], u2 = u[k + 2], u3 = u[k + 3];
#pragma omp simd
    for (int64_t o = 0; o < out; ++o) acc[o] += b0[o] * u0 + b1[o] * u1 + b2[o] * u2 + b3[o] * u3;
  }
  for (; k < rank; ++k) {
    const float* bk = b_t + k * out;
    const float uk = u[k];
#pragma omp simd
    for (int64_t o = 0; o < out; ++o) acc[o] += bk[o] * uk;
  }
}

// Cloned per ISA and picked at load time: the project builds for baseline x86-64 (SSE2), which
// would leave most of an AVX2/AVX-512 unit idle.
__attribute__((target_clones("avx512f", "avx2", "default")))
void SegmentDelta(const float* x, float* y, const float* bias, int64_t in, int64_t out,
                  const BgmvSegment& s) {
  float u[512];  // rank <= 512, checked by the caller
  for (int64_t t = s.begin; t < s.end; ++t) {
    const float* xt = x + t * in;
    float* yt = y + t * out;
    ProjectDown(s.a, xt, s.rank, in, s.scale, u);
    if (s.gain == nullptr) {  // LoRA accumulates straight into y
      ProjectUp(s.b_t, u, s.rank, out, yt);
      continue;
    }
    // DoRA: y = g ⊙ (y - b + delta) + b, the delta accumulated into y between the two passes.
    const float* g = s.gain;
    if (bias == nullptr) {
      ProjectUp(s.b_t, u, s.rank, out, yt);
#pragma omp simd
      for (int64_t o = 0; o < out; ++o) yt[o] *= g[o];
      continue;
    }
#pragma omp simd
    for (int64_t o = 0; o < out; ++o) yt[o] -= bias[o];
    ProjectUp(s.b_t, u, s.rank, out, yt);
#pragma omp simd
    for (int64_t o = 0; o < out; ++o) yt[o] = g[o] * yt[o] + bias[o];
  }
}

}  // namespace

void BgmvCpu(const float* x, float* y, const float* bias, int64_t in, int64_t out,
             const std::vector<BgmvSegment>& segments) {
  at::parallel_for(0, static_cast<int64_t>(segments.size()), 1, [&](int64_t first, int64_t last) {
    for (int64_t i = first; i < last; ++i) SegmentDelta(x, y, bias, in, out, segments[i]);
  });
}

}  // namespace loramux
