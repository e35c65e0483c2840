#include "adapters/bgmv_cpu.h"

#include <algorithm>

#include <ATen/Parallel.h>

#include "adapters/half_float.h"
#include "common/isa_clones.h"

namespace loramux {
namespace {

// Rows of A and B^T are consumed four at a time: four independent streams keep more memory
// requests in flight (decode reads every factor once, so this path is memory-bound), and the
// output row is swept once per four ranks instead of once per rank.
constexpr int64_t kRowsPerPass = 4;

// Everything below the ISA-cloned entry points is forced inline so each clone gets its own vector
// code (an out-of-line helper would be compiled once, for the SSE2 baseline).

// 16-bit factors as stored (distinct types, so Widen picks the conversion).
struct BFloat16Bits {
  uint16_t bits;
};
struct Float16Bits {
  uint16_t bits;
};

LORAMUX_ALWAYS_INLINE float Widen(float v) { return v; }
LORAMUX_ALWAYS_INLINE float Widen(BFloat16Bits v) { return BFloat16ToFloat(v.bits); }
LORAMUX_ALWAYS_INLINE float Widen(Float16Bits v) { return HalfToFloat(v.bits); }

// u[k] = c · <A[k], x> for k in [0, rank).
template <typename T>
LORAMUX_ALWAYS_INLINE void ProjectDown(const T* a, const float* x, int64_t rank, int64_t in,
                                       float c, float* u) {
  int64_t k = 0;
  for (; k + kRowsPerPass <= rank; k += kRowsPerPass) {
    const T *a0 = a + k * in, *a1 = a0 + in, *a2 = a1 + in, *a3 = a2 + in;
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
    for (int64_t i = 0; i < in; ++i) {
      s0 += Widen(a0[i]) * x[i];
      s1 += Widen(a1[i]) * x[i];
      s2 += Widen(a2[i]) * x[i];
      s3 += Widen(a3[i]) * x[i];
    }
    u[k] = s0 * c;
    u[k + 1] = s1 * c;
    u[k + 2] = s2 * c;
    u[k + 3] = s3 * c;
  }
  for (; k < rank; ++k) {
    const T* ak = a + k * in;
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < in; ++i) s += Widen(ak[i]) * x[i];
    u[k] = s * c;
  }
}

// acc[o] += sum_k B^T[k][o] · u[k].
template <typename T>
LORAMUX_ALWAYS_INLINE void ProjectUp(const T* b_t, const float* u, int64_t rank, int64_t out,
                                     float* acc) {
  int64_t k = 0;
  for (; k + kRowsPerPass <= rank; k += kRowsPerPass) {
    const T *b0 = b_t + k * out, *b1 = b0 + out, *b2 = b1 + out, *b3 = b2 + out;
    const float u0 = u[k], u1 = u[k + 1], u2 = u[k + 2], u3 = u[k + 3];
#pragma omp simd
    for (int64_t o = 0; o < out; ++o) {
      acc[o] += Widen(b0[o]) * u0 + Widen(b1[o]) * u1 + Widen(b2[o]) * u2 + Widen(b3[o]) * u3;
    }
  }
  for (; k < rank; ++k) {
    const T* bk = b_t + k * out;
    const float uk = u[k];
#pragma omp simd
    for (int64_t o = 0; o < out; ++o) acc[o] += Widen(bk[o]) * uk;
  }
}

template <typename T>
LORAMUX_ALWAYS_INLINE void SegmentDeltaOf(const float* x, float* y, const float* bias, int64_t in,
                                          int64_t out, const BgmvSegment& s) {
  const T* a = static_cast<const T*>(s.a);
  const T* b_t = static_cast<const T*>(s.b_t);
  float u[kBgmvMaxRank];
  for (int64_t t = s.begin; t < s.end; ++t) {
    const float* xt = x + t * in;
    float* yt = y + t * out;
    ProjectDown(a, xt, s.rank, in, s.scale, u);
    if (s.gain == nullptr) {  // LoRA accumulates straight into y
      ProjectUp(b_t, u, s.rank, out, yt);
      continue;
    }
    // DoRA: y = g ⊙ (y - b + delta) + b, the delta accumulated into y between the two passes.
    const float* g = s.gain;
    if (bias == nullptr) {
      ProjectUp(b_t, u, s.rank, out, yt);
#pragma omp simd
      for (int64_t o = 0; o < out; ++o) yt[o] *= g[o];
      continue;
    }
#pragma omp simd
    for (int64_t o = 0; o < out; ++o) yt[o] -= bias[o];
    ProjectUp(b_t, u, s.rank, out, yt);
#pragma omp simd
    for (int64_t o = 0; o < out; ++o) yt[o] = g[o] * yt[o] + bias[o];
  }
}

// Cloned per ISA and picked at load time (common/isa_clones.h).

LORAMUX_ISA_CLONES void SegmentDeltaF32(const float* x, float* y, const float* bias, int64_t in,
                                        int64_t out, const BgmvSegment& s) {
  SegmentDeltaOf<float>(x, y, bias, in, out, s);
}
LORAMUX_ISA_CLONES void SegmentDeltaBF16(const float* x, float* y, const float* bias, int64_t in,
                                         int64_t out, const BgmvSegment& s) {
  SegmentDeltaOf<BFloat16Bits>(x, y, bias, in, out, s);
}
LORAMUX_ISA_CLONES void SegmentDeltaF16(const float* x, float* y, const float* bias, int64_t in,
                                        int64_t out, const BgmvSegment& s) {
  SegmentDeltaOf<Float16Bits>(x, y, bias, in, out, s);
}

void SegmentDelta(const float* x, float* y, const float* bias, int64_t in, int64_t out,
                  const BgmvSegment& s) {
  switch (s.type) {
    case FactorType::kFloat32: return SegmentDeltaF32(x, y, bias, in, out, s);
    case FactorType::kBFloat16: return SegmentDeltaBF16(x, y, bias, in, out, s);
    case FactorType::kFloat16: return SegmentDeltaF16(x, y, bias, in, out, s);
  }
}

// Long segments (many rows of one adapter) split into pieces of at most kPieceRows rows, so that
// every thread has work; rows are computed one by one either way, so the split changes no result.
constexpr int64_t kPieceRows = 4;

std::vector<BgmvSegment> Pieces(const std::vector<BgmvSegment>& segments) {
  std::vector<BgmvSegment> pieces;
  pieces.reserve(segments.size());
  for (const BgmvSegment& s : segments) {
    for (int64_t begin = s.begin; begin < s.end; begin += kPieceRows) {
      BgmvSegment piece = s;
      piece.begin = begin;
      piece.end = std::min(s.end, begin + kPieceRows);
      pieces.push_back(piece);
    }
  }
  return pieces;
}

}  // namespace

void BgmvCpu(const float* x, float* y, const float* bias, int64_t in, int64_t out,
             const std::vector<BgmvSegment>& segments) {
  const std::vector<BgmvSegment> pieces = Pieces(segments);
  at::parallel_for(0, static_cast<int64_t>(pieces.size()), 1, [&](int64_t first, int64_t last) {
    for (int64_t i = first; i < last; ++i) SegmentDelta(x, y, bias, in, out, pieces[i]);
  });
}

void BgmvCpuBFloat16(const uint16_t* x, uint16_t* y, const float* bias, int64_t in, int64_t out,
                     const std::vector<BgmvSegment>& segments) {
  const std::vector<BgmvSegment> pieces = Pieces(segments);
  at::parallel_for(0, static_cast<int64_t>(pieces.size()), 1, [&](int64_t first, int64_t last) {
    std::vector<float> xs(kPieceRows * in), ys(kPieceRows * out);
    for (int64_t i = first; i < last; ++i) {
      BgmvSegment local = pieces[i];
      const int64_t rows = local.end - local.begin;
      const uint16_t* xp = x + local.begin * in;
      uint16_t* yp = y + local.begin * out;
      for (int64_t k = 0; k < rows * in; ++k) xs[k] = BFloat16ToFloat(xp[k]);
      for (int64_t k = 0; k < rows * out; ++k) ys[k] = BFloat16ToFloat(yp[k]);
      local.begin = 0;
      local.end = rows;
      SegmentDelta(xs.data(), ys.data(), bias, in, out, local);
      for (int64_t k = 0; k < rows * out; ++k) yp[k] = FloatToBFloat16(ys[k]);
    }
  });
}

}  // namespace loramux
