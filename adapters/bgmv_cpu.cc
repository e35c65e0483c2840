#include "adapters/bgmv_cpu.h"

#include <algorithm>

#include <ATen/Parallel.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "common/isa_clones.h"
#include "tensor/half_float.h"
#include "tensor/panel_gemm.h"

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

// Sums of products are kept in kLanes partial sums, input i in lane i % kLanes, added up in a fixed
// order at the end: a plain loop the compiler vectorizes at any width with the same bits. (A
// `simd reduction` lets it pick the order by the vector width, which follows the factors' type:
// 16-bit factors then summed in another order than the same values in float32.)
constexpr int64_t kLanes = 16;

LORAMUX_ALWAYS_INLINE float SumLanes(const float* lanes) {
  float s = 0;
  for (int64_t l = 0; l < kLanes; ++l) s += lanes[l];
  return s;
}

// u[r] = c · <A[r], x> for kRows rows of A.
template <int kRows, typename T>
LORAMUX_ALWAYS_INLINE void DotRows(const T* a, const float* x, int64_t in, float c, float* u) {
  const int64_t whole = in - in % kLanes;
  float lanes[kRows][kLanes] = {};
  for (int64_t i = 0; i < whole; i += kLanes) {
    for (int r = 0; r < kRows; ++r) {
      for (int64_t l = 0; l < kLanes; ++l) lanes[r][l] += Widen(a[r * in + i + l]) * x[i + l];
    }
  }
  for (int r = 0; r < kRows; ++r) {
    for (int64_t i = whole; i < in; ++i) lanes[r][i - whole] += Widen(a[r * in + i]) * x[i];
    u[r] = SumLanes(lanes[r]) * c;
  }
}

// u[k] = c · <A[k], x> for k in [0, rank), kRowsPerPass rows of A at a time.
template <typename T>
LORAMUX_ALWAYS_INLINE void ProjectDown(const T* a, const float* x, int64_t rank, int64_t in,
                                       float c, float* u) {
  int64_t k = 0;
  for (; k + kRowsPerPass <= rank; k += kRowsPerPass) {
    DotRows<kRowsPerPass>(a + k * in, x, in, c, u + k);
  }
  for (; k < rank; ++k) DotRows<1>(a + k * in, x, in, c, u + k);
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

// Rows are computed in pieces of at most kPieceRows rows of one adapter: adjacent segments that
// read the same factors with the same scale and gain (decode rows of one adapter) join, and long
// ones split, so that every thread has work and rows of one adapter share the factors' reads.
// Each row's arithmetic is its own either way, so the pieces change no result.
constexpr int64_t kPieceRows = 4;

bool SameFactors(const BgmvSegment& a, const BgmvSegment& b) {
  return a.a == b.a && a.b_t == b.b_t && a.type == b.type && a.gain == b.gain && a.rank == b.rank &&
         a.scale == b.scale;
}

std::vector<BgmvSegment> Pieces(const std::vector<BgmvSegment>& segments) {
  std::vector<BgmvSegment> runs;
  runs.reserve(segments.size());
  for (const BgmvSegment& s : segments) {
    if (!runs.empty() && runs.back().end == s.begin && SameFactors(runs.back(), s)) {
      runs.back().end = s.end;
    } else {
      runs.push_back(s);
    }
  }
  std::vector<BgmvSegment> pieces;
  pieces.reserve(runs.size());
  for (const BgmvSegment& s : runs) {
    for (int64_t begin = s.begin; begin < s.end; begin += kPieceRows) {
      BgmvSegment piece = s;
      piece.begin = begin;
      piece.end = std::min(s.end, begin + kPieceRows);
      pieces.push_back(piece);
    }
  }
  return pieces;
}

// Fetching a piece's factors from memory costs about as much as computing this many rows from
// cache (float32, 2 threads: decode rows stream ~14 GB/s a thread; rows of a prefill run compute at
// ~54 GFLOP/s a thread, 2 flops per 4 bytes of factors).
constexpr int64_t kFetchCostInRows = 8;

// Bounds of `parts` contiguous runs of pieces of about equal cost: piece indices bounds[p] ..
// bounds[p + 1]. A piece costs rank · (in + out) for each of its rows, and kFetchCostInRows times
// that again unless the piece before it read the same factors (then they are in cache): a step's
// decode rows of distinct adapters are memory-bound and a prefill run's rows are not, and counting
// them alike gave one thread all the decode rows.
std::vector<int64_t> SplitByCost(const std::vector<BgmvSegment>& pieces, int64_t width,
                                 int64_t parts) {
  std::vector<int64_t> cost(pieces.size() + 1, 0);
  for (size_t i = 0; i < pieces.size(); ++i) {
    const BgmvSegment& s = pieces[i];
    const bool fetched = i == 0 || !SameFactors(pieces[i - 1], s);
    cost[i + 1] = cost[i] + (s.end - s.begin + (fetched ? kFetchCostInRows : 0)) * s.rank * width;
  }
  std::vector<int64_t> bounds = {0};
  for (int64_t p = 1; p < parts; ++p) {
    const int64_t target = cost.back() * p / parts;
    bounds.push_back(std::lower_bound(cost.begin(), cost.end(), target) - cost.begin());
  }
  bounds.push_back(static_cast<int64_t>(pieces.size()));
  return bounds;
}

// A run of contiguous factor bytes [begin, end) that the kernel reads.
struct FactorSpan {
  const char* begin = nullptr;
  const char* end = nullptr;
};

// The factors (A, a DoRA gain, B^T) that pieces [first, last) read, in the order the kernel reads
// them; a piece that reads the same factors as the one before it adds none (they are in cache).
std::vector<FactorSpan> FactorSpans(const std::vector<BgmvSegment>& pieces, int64_t first,
                                    int64_t last, int64_t in, int64_t out) {
  std::vector<FactorSpan> spans;
  const auto add = [&](const void* begin, int64_t bytes) {
    spans.push_back({static_cast<const char*>(begin), static_cast<const char*>(begin) + bytes});
  };
  for (int64_t i = first; i < last; ++i) {
    const BgmvSegment& s = pieces[i];
    if (i > first && SameFactors(pieces[i - 1], s)) continue;
    const int64_t bytes = s.type == FactorType::kFloat32 ? 4 : 2;
    add(s.a, s.rank * in * bytes);
    if (s.gain != nullptr) add(s.gain, out * static_cast<int64_t>(sizeof(float)));
    add(s.b_t, s.rank * out * bytes);
  }
  return spans;
}

// How far ahead of the kernel a thread requests its factors: 32 KiB. (Decode's factors are many
// short runs, too short for the hardware prefetcher to catch up: without the requests the side path
// of 32 distinct bfloat16 LoRA took 10-12 ms a step against 6-7 ms, one thread. 256 to 2048 lines
// ahead measured alike.)
constexpr int kLeadLines = 512;

// Where PrefetchCursor requests lines. The bfloat16 kernel takes them into L1 and L2 (prefetcht0),
// the float32 ones into L2 (prefetcht1). (adapter_bench 8 30|40 64 on the issue-17 model, the two
// levels taking turns as cases of one run, 32 distinct rank-16 adapters, throughput against the
// base, (c) LoRA, (d) DoRA and (e) mixed ranks at hidden 1024 and 2048: bfloat16 ahead or equal
// with prefetcht0 in 31 of 33 comparisons over 8 runs, +1.2 points on average (-3.1 to +3.8), e.g.
// (c) 77.3% -> 79.5%; float32 -0.4 on average over 12 (-1.3 to +1.5).)
enum class PrefetchLevel { kL1, kL2 };

// Walks the factor spans a thread reads (FactorSpans), each in memory order, a cache line at a time
// into the cache at `level`, kLeadLines ahead of the kernel: the kernel advances it by the lines it
// consumes. A few instructions a line. (The walk it replaced followed the kernel's order within
// each factor, ranks side by side, through row, group and chunk counters: it cost as much as the
// kernel's own arithmetic when the factors were in cache. 56 modules of the issue-17 model, 32
// rank-16 adapters, the side path alone, 2 threads, the two builds taking turns 4-5 times, median
// ms: bfloat16 LoRA 4.33 -> 3.73, DoRA 4.98 -> 4.50, factors in cache 3.05 -> 1.64; float32 LoRA
// 8.58 -> 7.65, DoRA 9.45 -> 8.08. Requesting B^T's ranks side by side in 2 KiB bands measured the
// same as memory order.)
class PrefetchCursor {
 public:
  PrefetchCursor() = default;  // walks nothing
  // Over `spans` (which must outlive the cursor), with its first kLeadLines lines requested now.
  PrefetchCursor(const std::vector<FactorSpan>& spans, PrefetchLevel level)
      : next_(spans.data()), last_(spans.data() + spans.size()), level_(level) {
    Advance(kLeadLines);
  }

  LORAMUX_ALWAYS_INLINE void Advance(int lines) {
    while (lines > 0) {
      if (at_ >= end_) {
        if (next_ == last_) return;
        at_ = next_->begin;
        end_ = next_->end;
        ++next_;
      }
      const int64_t n = std::min<int64_t>(lines, static_cast<uint64_t>(end_ - at_ + 63) >> 6);
      if (level_ == PrefetchLevel::kL1) {
        for (int64_t k = 0; k < n; ++k) __builtin_prefetch(at_ + 64 * k, 0, 3);  // prefetcht0
      } else {
        for (int64_t k = 0; k < n; ++k) __builtin_prefetch(at_ + 64 * k, 0, 2);  // prefetcht1
      }
      at_ += 64 * n;
      lines -= static_cast<int>(n);
    }
  }

 private:
  const FactorSpan* next_ = nullptr;
  const FactorSpan* last_ = nullptr;
  PrefetchLevel level_ = PrefetchLevel::kL2;
  const char* at_ = nullptr;  // the next line to request in the current span, which ends at end_
  const char* end_ = nullptr;
};

// ---- AVX-512 kernels: float32, and bfloat16 on CPUs with AVX512-BF16 ----
// The served cases: activations and factors both float32, or both bfloat16. Each thread requests
// its factors kLeadLines ahead of its reads (PrefetchCursor, advanced as lines are consumed).
// The down projection takes four ranks of A at a time (four streams in flight) for one token row
// (float32: FMAs; bfloat16: vdpbf16ps on 16-bit pairs, products exact, float32 sums); the up
// projection computes the rows of a piece (up to kPieceRows rows of one adapter: a prefill run, or
// decode rows of one adapter side by side) together, 64 outputs at a time, reading (and for 16-bit
// factors under float32 activations widening) each vector of B^T once for all of them, their sums
// in registers (bfloat16 activations: vdpbf16ps on pairs of ranks, UpBlockPairs). Each row's
// sums are its own, in a fixed order, so a row's bits do not depend on the rows beside it; bfloat16
// rows round once to nearest even into y. The small fixed loops carry `#pragma GCC unroll`: without
// it GCC kept their accumulator arrays in memory (bfloat16, one adapter, 32 rows, 1024 -> 2816: 57
// us a call; unrolled, 25 us).

#if defined(__x86_64__)
#define LORAMUX_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))
#define LORAMUX_AVX512_INLINE LORAMUX_AVX512 inline __attribute__((always_inline))
#define LORAMUX_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#define LORAMUX_AVX512_BF16_INLINE LORAMUX_AVX512_BF16 inline __attribute__((always_inline))

// 16 lanes at p under `mask` (others 0) as float32: float32 as is, bfloat16 (uint16_t) and float16
// bit patterns widened exactly.
LORAMUX_AVX512_INLINE __m512 LoadLanes(const float* p, __mmask16 mask) {
  return _mm512_maskz_loadu_ps(mask, p);
}
LORAMUX_AVX512_INLINE __m512 LoadLanes(const uint16_t* p, __mmask16 mask) {
  const __m256i bits = _mm256_maskz_loadu_epi16(mask, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}
LORAMUX_AVX512_INLINE __m512 LoadLanes(const Float16Bits* p, __mmask16 mask) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, p));  // exact, subnormals included
}

LORAMUX_AVX512_INLINE __mmask32 Mask32(int64_t left) {
  return left >= 32 ? ~__mmask32{0} : (__mmask32{1} << left) - 1;
}
LORAMUX_AVX512_INLINE __mmask16 Mask16(int64_t left) {
  return left >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << left) - 1);
}

// u[r] = c · <A[r], x> for kRows rows of A (of type F, widened) and float32 x: FMAs, 16 lanes at
// a time.
template <int kRows, typename F>
LORAMUX_AVX512_INLINE void DownRows(const F* a, const float* x, int64_t in, PrefetchCursor& next,
                                    float c, float* u) {
  constexpr int64_t kStepsPerLine = 4 / sizeof(F);  // 16 lanes of F are 64 / kStepsPerLine bytes
  __m512 sum[kRows];
#pragma GCC unroll 16
  for (int r = 0; r < kRows; ++r) sum[r] = _mm512_setzero_ps();
  for (int64_t i = 0; i < in; i += 16) {
    const __mmask16 mask = Mask16(in - i);
    const __m512 xv = _mm512_maskz_loadu_ps(mask, x + i);
#pragma GCC unroll 16
    for (int r = 0; r < kRows; ++r) {
      sum[r] = _mm512_fmadd_ps(LoadLanes(a + r * in + i, mask), xv, sum[r]);
    }
    if ((i / 16) % kStepsPerLine == 0) next.Advance(kRows);
  }
#pragma GCC unroll 16
  for (int r = 0; r < kRows; ++r) u[r] = _mm512_reduce_add_ps(sum[r]) * c;
}

// The same for bfloat16: pairs through vdpbf16ps, 32 lanes a line.
template <int kRows>
LORAMUX_AVX512_BF16_INLINE void DownRows(const uint16_t* a, const uint16_t* x, int64_t in,
                                         PrefetchCursor& next, float c, float* u) {
  __m512 sum[kRows];
#pragma GCC unroll 16
  for (int r = 0; r < kRows; ++r) sum[r] = _mm512_setzero_ps();
  for (int64_t i = 0; i < in; i += 32) {
    const __mmask32 mask = Mask32(in - i);
    const __m512i xv = _mm512_maskz_loadu_epi16(mask, x + i);
#pragma GCC unroll 16
    for (int r = 0; r < kRows; ++r) {
      const __m512i av = _mm512_maskz_loadu_epi16(mask, a + r * in + i);
      sum[r] =
          _mm512_dpbf16_ps(sum[r], reinterpret_cast<__m512bh>(av), reinterpret_cast<__m512bh>(xv));
    }
    next.Advance(kRows);
  }
#pragma GCC unroll 16
  for (int r = 0; r < kRows; ++r) u[r] = _mm512_reduce_add_ps(sum[r]) * c;
}

// Outputs [o, o + 64) of kRows rows of y sharing the factors: each output's sum starts from its y
// (less the bias for DoRA) and adds B^T[k][o] · u[r][k] for k = 0, 1, ... in turn, one FMA each, so
// a row's bits do not depend on the rows beside it; each 16 outputs of B^T are loaded once for all
// the rows, and the 4·kRows sums stay in registers (independent FMA chains). DoRA then applies
// g ⊙ (·) + b; each sum is stored once into y.
template <int kRows, typename F>
LORAMUX_AVX512_INLINE void UpBlock(const F* b_t, int64_t out, int64_t rank,
                                   const float (*u)[kBgmvMaxRank], float* const* y,
                                   const float* bias, const float* gain, int64_t o) {
  constexpr int kVectors = 4;
  const bool dora = gain != nullptr;
  __mmask16 mask[kVectors];
#pragma GCC unroll 16
  for (int j = 0; j < kVectors; ++j) mask[j] = Mask16(std::max<int64_t>(out - o - 16 * j, 0));
  __m512 sum[kRows][kVectors];
#pragma GCC unroll 16
  for (int r = 0; r < kRows; ++r) {
#pragma GCC unroll 16
    for (int j = 0; j < kVectors; ++j) {
      sum[r][j] = LoadLanes(y[r] + o + 16 * j, mask[j]);
      if (dora && bias != nullptr) {
        sum[r][j] = _mm512_sub_ps(sum[r][j], _mm512_maskz_loadu_ps(mask[j], bias + o + 16 * j));
      }
    }
  }
  for (int64_t k = 0; k < rank; ++k) {
    __m512 b[kVectors];
#pragma GCC unroll 16
    for (int j = 0; j < kVectors; ++j) b[j] = LoadLanes(b_t + k * out + o + 16 * j, mask[j]);
#pragma GCC unroll 16
    for (int r = 0; r < kRows; ++r) {
      const __m512 uk = _mm512_set1_ps(u[r][k]);
#pragma GCC unroll 16
      for (int j = 0; j < kVectors; ++j) sum[r][j] = _mm512_fmadd_ps(b[j], uk, sum[r][j]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < kRows; ++r) {
#pragma GCC unroll 16
    for (int j = 0; j < kVectors; ++j) {
      __m512 v = sum[r][j];
      if (dora) {
        const __m512 g = _mm512_maskz_loadu_ps(mask[j], gain + o + 16 * j);
        v = bias != nullptr
                ? _mm512_fmadd_ps(g, v, _mm512_maskz_loadu_ps(mask[j], bias + o + 16 * j))
                : _mm512_mul_ps(v, g);
      }
      _mm512_mask_storeu_ps(y[r] + o + 16 * j, mask[j], v);
    }
  }
}

// The up projection for kRows rows sharing the factors, 64 outputs at a time.
template <int kRows, typename F>
LORAMUX_AVX512_INLINE void UpRows(const F* b_t, int64_t out, int64_t rank,
                                  const float (*u)[kBgmvMaxRank], float* const* y,
                                  const float* bias, const float* gain, PrefetchCursor& next) {
  // The lines 64 outputs consume: B^T's (rank rows of 64 elements of F) and DoRA's gain (64
  // floats).
  const int lines = static_cast<int>(rank * sizeof(F)) + (gain != nullptr ? 4 : 0);
  for (int64_t o = 0; o < out; o += 64) {
    UpBlock<kRows>(b_t, out, rank, u, y, bias, gain, o);
    next.Advance(lines);
  }
}

// ---- The bfloat16 up projection through vdpbf16ps ----
// Ranks k and k + 1 of B^T are taken as pairs: two rows of 32 outputs, interleaved by
// vpunpck{l,h}wd into (B^T[k][o], B^T[k+1][o]) per 32-bit lane, multiplied by the row's
// (u[k], u[k+1]) rounded to bfloat16 (as PEFT's bfloat16 A x is) in one vdpbf16ps: a third of the
// instructions of widening every factor and one FMA per rank. The interleave permutes outputs
// within each 128-bit lane: the "low" accumulator holds outputs {0-3, 8-11, 16-19, 24-27} of 32,
// the "high" one {4-7, 12-15, 20-23, 28-31}; y, bias and gain are read in that order and the
// rounded results packed back (vpackusdw) into the natural one.

// u[r] rounded to bfloat16, ranks 2p and 2p + 1 as the low and high halves of pairs[p] (an odd
// rank's last pair holds 0 above it).
LORAMUX_ALWAYS_INLINE void RankPairs(const float* u, int64_t rank, uint32_t* pairs) {
  for (int64_t k = 0; k < rank; k += 2) {
    const uint32_t high = k + 1 < rank ? FloatToBFloat16(u[k + 1]) : 0;
    pairs[k / 2] = FloatToBFloat16(u[k]) | (high << 16);
  }
}

// Float32 values at p [32] (under `mask`) in the low and high accumulators' output order.
LORAMUX_AVX512_INLINE void LoadPermuted(const float* p, __mmask32 mask, __m512& low, __m512& high) {
  const __m512 first = _mm512_maskz_loadu_ps(static_cast<__mmask16>(mask), p);
  const __m512 second = _mm512_maskz_loadu_ps(static_cast<__mmask16>(mask >> 16), p + 16);
  const __m512i low_index =
      _mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27);
  const __m512i high_index = _mm512_add_epi32(low_index, _mm512_set1_epi32(4));
  low = _mm512_permutex2var_ps(first, low_index, second);
  high = _mm512_permutex2var_ps(first, high_index, second);
}

// FloatToBFloat16's bits of each lane (nearest even; NaN -> quiet NaN, sign kept; subnormals
// kept), in the low 16 bits of its 32-bit lane.
LORAMUX_AVX512_INLINE __m512i RoundToBFloat16Lanes(__m512 v) {
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i high = _mm512_srli_epi32(bits, 16);
  const __m512i lsb = _mm512_and_si512(high, _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_srli_epi32(
      _mm512_add_epi32(_mm512_add_epi32(bits, _mm512_set1_epi32(0x7fff)), lsb), 16);
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  return _mm512_mask_mov_epi32(rounded, nan, _mm512_or_si512(high, _mm512_set1_epi32(0x40)));
}

// Outputs [o, o + 64) of kRows rows of y sharing the factors (as UpBlock): per rank pair, each
// 32 outputs of B^T are loaded and interleaved once for all the rows; each row's sums start from
// zero and add one vdpbf16ps per pair in turn, then are added to its y (less the bias for DoRA:
// vdpbf16ps would flush a subnormal y it started from); DoRA then applies g ⊙ (·) + b, and each
// sum rounds once into y.
template <int kRows>
LORAMUX_AVX512_BF16_INLINE void UpBlockPairs(const uint16_t* b_t, int64_t out, int64_t rank,
                                             const uint32_t (*pairs)[kBgmvMaxRank / 2],
                                             uint16_t* const* y, const float* bias,
                                             const float* gain, int64_t o) {
  constexpr int kHalves = 2;  // 32 outputs each: a low and a high accumulator
  const bool dora = gain != nullptr;
  __mmask32 mask[kHalves];
#pragma GCC unroll 4
  for (int h = 0; h < kHalves; ++h) mask[h] = Mask32(std::max<int64_t>(out - o - 32 * h, 0));
  __m512 sum[kRows][2 * kHalves];
#pragma GCC unroll 16
  for (int r = 0; r < kRows; ++r) {
#pragma GCC unroll 4
    for (int j = 0; j < 2 * kHalves; ++j) sum[r][j] = _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < rank; k += 2) {
    __m512i b[2 * kHalves];
#pragma GCC unroll 4
    for (int h = 0; h < kHalves; ++h) {
      const uint16_t* row = b_t + k * out + o + 32 * h;
      const __m512i first = _mm512_maskz_loadu_epi16(mask[h], row);
      const __m512i second =
          k + 1 < rank ? _mm512_maskz_loadu_epi16(mask[h], row + out) : _mm512_setzero_si512();
      b[2 * h] = _mm512_unpacklo_epi16(first, second);
      b[2 * h + 1] = _mm512_unpackhi_epi16(first, second);
    }
#pragma GCC unroll 16
    for (int r = 0; r < kRows; ++r) {
      const __m512bh uk = reinterpret_cast<__m512bh>(_mm512_set1_epi32(pairs[r][k / 2]));
#pragma GCC unroll 4
      for (int j = 0; j < 2 * kHalves; ++j) {
        sum[r][j] = _mm512_dpbf16_ps(sum[r][j], reinterpret_cast<__m512bh>(b[j]), uk);
      }
    }
  }
#pragma GCC unroll 4
  for (int h = 0; h < kHalves; ++h) {
    __m512 gain_low, gain_high, bias_low = _mm512_setzero_ps(), bias_high = _mm512_setzero_ps();
    if (dora) {
      LoadPermuted(gain + o + 32 * h, mask[h], gain_low, gain_high);
      if (bias != nullptr) LoadPermuted(bias + o + 32 * h, mask[h], bias_low, bias_high);
    }
#pragma GCC unroll 16
    for (int r = 0; r < kRows; ++r) {
      // A bfloat16 in the high half of a zero 32-bit lane is its float32 value.
      const __m512i yv = _mm512_maskz_loadu_epi16(mask[h], y[r] + o + 32 * h);
      const __m512i zero = _mm512_setzero_si512();
      __m512 low = _mm512_castsi512_ps(_mm512_unpacklo_epi16(zero, yv));
      __m512 high = _mm512_castsi512_ps(_mm512_unpackhi_epi16(zero, yv));
      if (dora) {
        low = _mm512_sub_ps(low, bias_low);
        high = _mm512_sub_ps(high, bias_high);
      }
      low = _mm512_add_ps(low, sum[r][2 * h]);
      high = _mm512_add_ps(high, sum[r][2 * h + 1]);
      if (dora) {
        low = _mm512_fmadd_ps(gain_low, low, bias_low);
        high = _mm512_fmadd_ps(gain_high, high, bias_high);
      }
      const __m512i packed =
          _mm512_packus_epi32(RoundToBFloat16Lanes(low), RoundToBFloat16Lanes(high));
      _mm512_mask_storeu_epi16(y[r] + o + 32 * h, mask[h], packed);
    }
  }
}

// The bfloat16 up projection of a piece's `rows` rows (at most kPieceRows) given their u.
template <int kRows>
LORAMUX_AVX512_BF16_INLINE void UpRowsPairs(const uint16_t* b_t, int64_t out, int64_t rank,
                                            const float (*u)[kBgmvMaxRank], uint16_t* const* y,
                                            const float* bias, const float* gain,
                                            PrefetchCursor& next) {
  uint32_t pairs[kRows][kBgmvMaxRank / 2];
  for (int r = 0; r < kRows; ++r) RankPairs(u[r], rank, pairs[r]);
  const int lines = static_cast<int>(rank * 2) + (gain != nullptr ? 4 : 0);
  for (int64_t o = 0; o < out; o += 64) {
    UpBlockPairs<kRows>(b_t, out, rank, pairs, y, bias, gain, o);
    next.Advance(lines);
  }
}

LORAMUX_AVX512_BF16_INLINE void UpPiecePairs(const uint16_t* b_t, int64_t out, int64_t rank,
                                             int64_t rows, const float (*u)[kBgmvMaxRank],
                                             uint16_t* const* y, const float* bias,
                                             const float* gain, PrefetchCursor& next) {
  switch (rows) {
    case 1: UpRowsPairs<1>(b_t, out, rank, u, y, bias, gain, next); break;
    case 2: UpRowsPairs<2>(b_t, out, rank, u, y, bias, gain, next); break;
    case 3: UpRowsPairs<3>(b_t, out, rank, u, y, bias, gain, next); break;
    case 4: UpRowsPairs<4>(b_t, out, rank, u, y, bias, gain, next); break;
    default: break;
  }
}

// The up projection of a piece's `rows` rows (at most kPieceRows) given their u.
template <typename F>
LORAMUX_AVX512_INLINE void UpPiece(const F* b_t, int64_t out, int64_t rank, int64_t rows,
                                   const float (*u)[kBgmvMaxRank], float* const* y,
                                   const float* bias, const float* gain, PrefetchCursor& next) {
  switch (rows) {
    case 1: UpRows<1>(b_t, out, rank, u, y, bias, gain, next); break;
    case 2: UpRows<2>(b_t, out, rank, u, y, bias, gain, next); break;
    case 3: UpRows<3>(b_t, out, rank, u, y, bias, gain, next); break;
    case 4: UpRows<4>(b_t, out, rank, u, y, bias, gain, next); break;
    default: break;
  }
}

// One piece's rows of y [tokens, out] given x [tokens, in] (at most kPieceRows rows, all of one
// adapter), advancing `next` (the thread's PrefetchCursor) by the lines it consumes. Activations
// float32 and factors of type F (widened exactly: the same values stored in float32 give the same
// bits), or all bfloat16. (Not one template: the bfloat16 one's target has instructions the float32
// one's must not assume.)
template <typename F>
LORAMUX_AVX512 void PieceNative(const float* x, float* y, const float* bias, int64_t in,
                                int64_t out, const BgmvSegment& s, PrefetchCursor& next) {
  const F* a = static_cast<const F*>(s.a);
  const int64_t rows = s.end - s.begin;
  float u[kPieceRows][kBgmvMaxRank];
  float* yr[kPieceRows];
  for (int64_t r = 0; r < rows; ++r) {
    const float* xt = x + (s.begin + r) * in;
    yr[r] = y + (s.begin + r) * out;
    int64_t k = 0;
    for (; k + kRowsPerPass <= s.rank; k += kRowsPerPass) {
      DownRows<kRowsPerPass>(a + k * in, xt, in, next, s.scale, u[r] + k);
    }
    for (; k < s.rank; ++k) DownRows<1>(a + k * in, xt, in, next, s.scale, u[r] + k);
  }
  UpPiece(static_cast<const F*>(s.b_t), out, s.rank, rows, u, yr, bias, s.gain, next);
}

LORAMUX_AVX512_BF16 void PieceNative(const uint16_t* x, uint16_t* y, const float* bias, int64_t in,
                                     int64_t out, const BgmvSegment& s, PrefetchCursor& next) {
  const uint16_t* a = static_cast<const uint16_t*>(s.a);
  const int64_t rows = s.end - s.begin;
  float u[kPieceRows][kBgmvMaxRank];
  uint16_t* yr[kPieceRows];
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t* xt = x + (s.begin + r) * in;
    yr[r] = y + (s.begin + r) * out;
    int64_t k = 0;
    for (; k + kRowsPerPass <= s.rank; k += kRowsPerPass) {
      DownRows<kRowsPerPass>(a + k * in, xt, in, next, s.scale, u[r] + k);
    }
    for (; k < s.rank; ++k) DownRows<1>(a + k * in, xt, in, next, s.scale, u[r] + k);
  }
  UpPiecePairs(static_cast<const uint16_t*>(s.b_t), out, s.rank, rows, u, yr, bias, s.gain, next);
}

#endif

bool CpuHasAvx512() { return PanelGemmIsa(PanelType::kFloat32) == PanelIsa::kAvx512; }
// The bfloat16 kernel needs the instructions the panel GEMM's AVX-512 bfloat16 kernel does.
bool CpuHasNativeBFloat16() { return PanelGemmIsa(PanelType::kBFloat16) == PanelIsa::kAvx512; }

// One piece of float32 activations: through the AVX-512 kernel where the CPU has it, else the
// portable one.
void PieceFloat32(const float* x, float* y, const float* bias, int64_t in, int64_t out,
                  const BgmvSegment& s, PrefetchCursor& next) {
#if defined(__x86_64__)
  if (CpuHasAvx512()) {
    switch (s.type) {
      case FactorType::kFloat32: return PieceNative<float>(x, y, bias, in, out, s, next);
      case FactorType::kBFloat16: return PieceNative<uint16_t>(x, y, bias, in, out, s, next);
      case FactorType::kFloat16: return PieceNative<Float16Bits>(x, y, bias, in, out, s, next);
    }
  }
#endif
  SegmentDelta(x, y, bias, in, out, s);
}

// Computes `pieces` over LibTorch's threads: each thread takes a contiguous run of pieces of about
// equal cost (SplitByCost) and calls compute(piece, cursor) for each in order, the cursor walking
// that run's factors (FactorSpans) ahead of the kernel into the cache at `level`. (Claiming pieces
// from a shared counter instead moves the counter's cache line between the cores twice a piece:
// measured slower.)
template <typename Compute>
void ComputePieces(const std::vector<BgmvSegment>& pieces, int64_t in, int64_t out,
                   PrefetchLevel level, Compute compute) {
  const int64_t count = static_cast<int64_t>(pieces.size());
  const int64_t threads = std::min<int64_t>(count, at::get_num_threads());
  if (threads == 0) return;
  const std::vector<int64_t> bounds = SplitByCost(pieces, in + out, threads);
  at::parallel_for(0, threads, 1, [&](int64_t first, int64_t last) {
    for (int64_t part = first; part < last; ++part) {
      const std::vector<FactorSpan> spans =
          FactorSpans(pieces, bounds[part], bounds[part + 1], in, out);
      PrefetchCursor cursor(spans, level);
      for (int64_t i = bounds[part]; i < bounds[part + 1]; ++i) compute(pieces[i], cursor);
    }
  });
}

}  // namespace

void BgmvCpu(const float* x, float* y, const float* bias, int64_t in, int64_t out,
             const std::vector<BgmvSegment>& segments) {
  ComputePieces(Pieces(segments), in, out, PrefetchLevel::kL2,
                [&](const BgmvSegment& s, PrefetchCursor& next) {
                  PieceFloat32(x, y, bias, in, out, s, next);
                });
}

void BgmvCpuPortable(const float* x, float* y, const float* bias, int64_t in, int64_t out,
                     const std::vector<BgmvSegment>& segments) {
  ComputePieces(
      Pieces(segments), in, out, PrefetchLevel::kL2,
      [&](const BgmvSegment& s, PrefetchCursor&) { SegmentDelta(x, y, bias, in, out, s); });
}

bool BgmvCpuMultipliesBFloat16Natively() { return CpuHasNativeBFloat16(); }

void BgmvCpuBFloat16(const uint16_t* x, uint16_t* y, const float* bias, int64_t in, int64_t out,
                     const std::vector<BgmvSegment>& segments) {
  const std::vector<BgmvSegment> pieces = Pieces(segments);
#if defined(__x86_64__)
  const bool native = CpuHasNativeBFloat16() &&
                      std::all_of(segments.begin(), segments.end(), [](const BgmvSegment& s) {
                        return s.type == FactorType::kBFloat16;
                      });
  if (native) {
    ComputePieces(pieces, in, out, PrefetchLevel::kL1,
                  [&](const BgmvSegment& s, PrefetchCursor& next) {
                    PieceNative(x, y, bias, in, out, s, next);
                  });
    return;
  }
#endif
  // Each row widened to float32, through BgmvCpu's kernel, and rounded.
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
      PrefetchCursor none;
      PieceFloat32(xs.data(), ys.data(), bias, in, out, local, none);
      for (int64_t k = 0; k < rows * out; ++k) yp[k] = FloatToBFloat16(ys[k]);
    }
  });
}

}  // namespace loramux
