#include "tensor/panel_gemm.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "tensor/half_float.h"

namespace loramux {

#if defined(__x86_64__)
namespace {

#define LORAMUX_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))
#define LORAMUX_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#define LORAMUX_INLINE inline __attribute__((always_inline))

// Rows per tile: 6 rows x 4 vectors of 16 outputs = 24 accumulators, 4 registers for the panel's
// weights and 1 for the broadcast input.
constexpr int kTileRows = 6;
constexpr int kVectors = kPanelWidth / 16;

// Lanes of vector j (outputs 16j .. 16j + 15 of the panel) below `width`.
LORAMUX_AVX512 LORAMUX_INLINE __mmask16 LaneMask(int64_t width, int j) {
  const int64_t lanes = width - 16 * j;
  return lanes >= 16 ? __mmask16(0xFFFF) : lanes <= 0 ? __mmask16(0) : __mmask16((1u << lanes) - 1);
}

// Walks bytes [begin, end) a cache line per step of a tile, prefetching them into L1 and L2.
class Prefetcher {
 public:
  Prefetcher() = default;  // prefetches nothing
  Prefetcher(const char* begin, const char* end) : at_(begin), end_(end) {}

  LORAMUX_INLINE void Step() {
    if (at_ < end_) {
      _mm_prefetch(at_, _MM_HINT_T0);
      at_ += 64;
    }
  }

 private:
  const char* at_ = nullptr;
  const char* end_ = nullptr;
};

// Every accumulator of a tile to 0.
template <int Rows>
LORAMUX_AVX512 LORAMUX_INLINE void ZeroAccumulators(__m512 (&acc)[Rows][kVectors]) {
#pragma GCC unroll 8
  for (int r = 0; r < Rows; ++r) {
#pragma GCC unroll 8
    for (int j = 0; j < kVectors; ++j) acc[r][j] = _mm512_setzero_ps();
  }
}

// The panel's `width` outputs of one row: acc + bias, rounded to the output type, stored at y.
LORAMUX_AVX512 LORAMUX_INLINE void StoreFloat(const __m512 (&acc)[kVectors], const float* bias,
                                              float* y, int64_t width) {
#pragma GCC unroll 8
  for (int j = 0; j < kVectors; ++j) {
    const __mmask16 mask = LaneMask(width, j);
    const __m512 b =
        bias != nullptr ? _mm512_maskz_loadu_ps(mask, bias + 16 * j) : _mm512_setzero_ps();
    _mm512_mask_storeu_ps(y + 16 * j, mask, _mm512_add_ps(acc[j], b));
  }
}

LORAMUX_AVX512_BF16 LORAMUX_INLINE void StoreBFloat16(const __m512 (&acc)[kVectors],
                                                      const float* bias, uint16_t* y,
                                                      int64_t width) {
#pragma GCC unroll 8
  for (int j = 0; j < kVectors; ++j) {
    const __mmask16 mask = LaneMask(width, j);
    const __m512 b =
        bias != nullptr ? _mm512_maskz_loadu_ps(mask, bias + 16 * j) : _mm512_setzero_ps();
    const __m256i rounded = (__m256i)_mm512_cvtneps_pbh(_mm512_add_ps(acc[j], b));
    _mm256_mask_storeu_epi16(y + 16 * j, mask, rounded);
  }
}

// Rows x .. x + Rows·k of one float32 panel [k][64] -> y (leading dimension ldy).
template <int Rows>
LORAMUX_AVX512 LORAMUX_INLINE void FloatTile(const float* x, int64_t k, const float* panel,
                                             const float* bias, float* y, int64_t ldy,
                                             int64_t width, Prefetcher& prefetch) {
  __m512 acc[Rows][kVectors];
  ZeroAccumulators(acc);
  for (int64_t i = 0; i < k; ++i) {
    prefetch.Step();
    const float* w = panel + i * kPanelWidth;
    const __m512 w0 = _mm512_loadu_ps(w), w1 = _mm512_loadu_ps(w + 16),
                 w2 = _mm512_loadu_ps(w + 32), w3 = _mm512_loadu_ps(w + 48);
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r) {
      const __m512 v = _mm512_set1_ps(x[r * k + i]);
      acc[r][0] = _mm512_fmadd_ps(w0, v, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(w1, v, acc[r][1]);
      acc[r][2] = _mm512_fmadd_ps(w2, v, acc[r][2]);
      acc[r][3] = _mm512_fmadd_ps(w3, v, acc[r][3]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < Rows; ++r) StoreFloat(acc[r], bias, y + r * ldy, width);
}

// One step of a bfloat16 tile: the panel's 64 outputs' weights for inputs 2p and 2p + 1, and each
// row's two inputs broadcast as one 32-bit pair (Lone: an odd k's last input, paired with 0, as
// its weight is).
template <int Rows, bool Lone>
LORAMUX_AVX512_BF16 LORAMUX_INLINE void PairStep(__m512 (&acc)[Rows][kVectors], const uint16_t* x,
                                                 int64_t k, const uint16_t* panel, int64_t p,
                                                 Prefetcher& prefetch) {
  prefetch.Step();
  const uint16_t* w = panel + p * 2 * kPanelWidth;
  const __m512bh w0 = (__m512bh)_mm512_loadu_si512(w), w1 = (__m512bh)_mm512_loadu_si512(w + 32),
                 w2 = (__m512bh)_mm512_loadu_si512(w + 64),
                 w3 = (__m512bh)_mm512_loadu_si512(w + 96);
#pragma GCC unroll 8
  for (int r = 0; r < Rows; ++r) {
    int32_t pair = 0;
    std::memcpy(&pair, x + r * k + 2 * p, Lone ? 2 : 4);
    const __m512bh v = (__m512bh)_mm512_set1_epi32(pair);
    acc[r][0] = _mm512_dpbf16_ps(acc[r][0], w0, v);
    acc[r][1] = _mm512_dpbf16_ps(acc[r][1], w1, v);
    acc[r][2] = _mm512_dpbf16_ps(acc[r][2], w2, v);
    acc[r][3] = _mm512_dpbf16_ps(acc[r][3], w3, v);
  }
}

// Rows of bfloat16 x against one bfloat16 panel [ceil(k/2)][64][2].
template <int Rows>
LORAMUX_AVX512_BF16 LORAMUX_INLINE void BFloat16Tile(const uint16_t* x, int64_t k,
                                                     const uint16_t* panel, const float* bias,
                                                     uint16_t* y, int64_t ldy, int64_t width,
                                                     Prefetcher& prefetch) {
  __m512 acc[Rows][kVectors];
  ZeroAccumulators(acc);
  for (int64_t p = 0; p < k / 2; ++p) PairStep<Rows, false>(acc, x, k, panel, p, prefetch);
  if (k % 2 == 1) PairStep<Rows, true>(acc, x, k, panel, k / 2, prefetch);
#pragma GCC unroll 8
  for (int r = 0; r < Rows; ++r) StoreBFloat16(acc[r], bias, y + r * ldy, width);
}

// A single row (decode at batch 1) is bound by how fast the memory streams the weights, and a core
// reads kStreams far-apart streams faster than one (~7% measured): it takes kStreams panels at
// once, from kStreams slices of its range. Each output's arithmetic is a tile's, so the row gets
// the same bits as in a tile of any size.
constexpr int kStreams = 3;

template <typename T>
struct Streams {
  const T* panel[kStreams];
  const float* bias[kStreams];
  T* y[kStreams];
  int64_t width[kStreams];
};

LORAMUX_AVX512 LORAMUX_INLINE void FloatRowStreams(const float* x, int64_t k,
                                                   const Streams<float>& s) {
  __m512 acc[kStreams][kVectors];
  ZeroAccumulators(acc);
  for (int64_t i = 0; i < k; ++i) {
    const __m512 v = _mm512_set1_ps(x[i]);
#pragma GCC unroll 8
    for (int t = 0; t < kStreams; ++t) {
      const float* w = s.panel[t] + i * kPanelWidth;
#pragma GCC unroll 8
      for (int j = 0; j < kVectors; ++j) {
        acc[t][j] = _mm512_fmadd_ps(_mm512_loadu_ps(w + 16 * j), v, acc[t][j]);
      }
    }
  }
#pragma GCC unroll 8
  for (int t = 0; t < kStreams; ++t) StoreFloat(acc[t], s.bias[t], s.y[t], s.width[t]);
}

template <bool Lone>
LORAMUX_AVX512_BF16 LORAMUX_INLINE void PairStreamsStep(__m512 (&acc)[kStreams][kVectors],
                                                        const uint16_t* x,
                                                        const Streams<uint16_t>& s, int64_t p) {
  int32_t pair = 0;
  std::memcpy(&pair, x + 2 * p, Lone ? 2 : 4);
  const __m512bh v = (__m512bh)_mm512_set1_epi32(pair);
#pragma GCC unroll 8
  for (int t = 0; t < kStreams; ++t) {
    const uint16_t* w = s.panel[t] + p * 2 * kPanelWidth;
#pragma GCC unroll 8
    for (int j = 0; j < kVectors; ++j) {
      acc[t][j] = _mm512_dpbf16_ps(acc[t][j], (__m512bh)_mm512_loadu_si512(w + 32 * j), v);
    }
  }
}

LORAMUX_AVX512_BF16 LORAMUX_INLINE void BFloat16RowStreams(const uint16_t* x, int64_t k,
                                                           const Streams<uint16_t>& s) {
  __m512 acc[kStreams][kVectors];
  ZeroAccumulators(acc);
  for (int64_t p = 0; p < k / 2; ++p) PairStreamsStep<false>(acc, x, s, p);
  if (k % 2 == 1) PairStreamsStep<true>(acc, x, s, k / 2);
#pragma GCC unroll 8
  for (int t = 0; t < kStreams; ++t) StoreBFloat16(acc[t], s.bias[t], s.y[t], s.width[t]);
}

// Every row of x against panels [first, last), a tile of rows at a time.
// (Inlined into FloatPanels and BFloat16Panels by their `flatten`, so the tiles inline under the
// callers' target options.)
template <typename T, template <int> class Tile, class RowStreams>
void Panels(const T* x, int64_t m, int64_t k, const T* panels, int64_t n, const float* bias, T* y,
            int64_t first, int64_t last) {
  const int64_t group =
      PanelGroup(std::is_same_v<T, float> ? PanelType::kFloat32 : PanelType::kBFloat16);
  const int64_t steps_per_tile = (k + group - 1) / group;  // a panel row per step
  const int64_t panel_elements = steps_per_tile * group * kPanelWidth;
  const int64_t tiles = (m + kTileRows - 1) / kTileRows;
  if (m == 1) {
    const int64_t per = (last - first) / kStreams;
    for (int64_t i = 0; i < per; ++i) {
      Streams<T> streams;
      for (int t = 0; t < kStreams; ++t) {
        const int64_t p = first + t * per + i, column = p * kPanelWidth;
        streams.panel[t] = panels + p * panel_elements;
        streams.bias[t] = bias != nullptr ? bias + column : nullptr;
        streams.y[t] = y + column;
        streams.width[t] = std::min(kPanelWidth, n - column);
      }
      RowStreams::Run(x, k, streams);
    }
    first += kStreams * per;  // the rest one by one
  }
  Prefetcher idle;
  for (int64_t p = first; p < last; ++p) {
    const T* panel = panels + p * panel_elements;
    const int64_t column = p * kPanelWidth, width = std::min(kPanelWidth, n - column);
    const float* b = bias != nullptr ? bias + column : nullptr;
    // The first tile streams the panel from memory (the hardware prefetcher follows it); the
    // others reuse it from L2 and leave the memory idle: they fetch the thread's next panel, a
    // line a step, where they take enough steps (from 25 rows; prefetching faster slows the
    // tiles more than it saves, measured at 13 to 24 rows).
    const char* next = reinterpret_cast<const char*>(panel + panel_elements);
    const int64_t panel_bytes = panel_elements * static_cast<int64_t>(sizeof(T));
    Prefetcher ahead = p + 1 < last && (tiles - 1) * steps_per_tile * 64 >= panel_bytes
                           ? Prefetcher(next, next + panel_bytes)
                           : Prefetcher();
    int64_t r = 0;
    for (; r + kTileRows <= m; r += kTileRows) {
      Prefetcher& prefetch = r == 0 && tiles > 1 ? idle : ahead;
      Tile<kTileRows>::Run(x + r * k, k, panel, b, y + r * n + column, n, width, prefetch);
    }
    Prefetcher& prefetch = r == 0 && tiles > 1 ? idle : ahead;
    const T* xr = x + r * k;
    T* yr = y + r * n + column;
    switch (m - r) {
      case 1: Tile<1>::Run(xr, k, panel, b, yr, n, width, prefetch); break;
      case 2: Tile<2>::Run(xr, k, panel, b, yr, n, width, prefetch); break;
      case 3: Tile<3>::Run(xr, k, panel, b, yr, n, width, prefetch); break;
      case 4: Tile<4>::Run(xr, k, panel, b, yr, n, width, prefetch); break;
      case 5: Tile<5>::Run(xr, k, panel, b, yr, n, width, prefetch); break;
      default: break;
    }
  }
}

template <int Rows>
struct FloatTileOf {
  LORAMUX_AVX512 static void Run(const float* x, int64_t k, const float* panel, const float* bias,
                                 float* y, int64_t ldy, int64_t width, Prefetcher& prefetch) {
    FloatTile<Rows>(x, k, panel, bias, y, ldy, width, prefetch);
  }
};

template <int Rows>
struct BFloat16TileOf {
  LORAMUX_AVX512_BF16 static void Run(const uint16_t* x, int64_t k, const uint16_t* panel,
                                      const float* bias, uint16_t* y, int64_t ldy, int64_t width,
                                      Prefetcher& prefetch) {
    BFloat16Tile<Rows>(x, k, panel, bias, y, ldy, width, prefetch);
  }
};

struct FloatRowStreamsOf {
  LORAMUX_AVX512 static void Run(const float* x, int64_t k, const Streams<float>& s) {
    FloatRowStreams(x, k, s);
  }
};

struct BFloat16RowStreamsOf {
  LORAMUX_AVX512_BF16 static void Run(const uint16_t* x, int64_t k, const Streams<uint16_t>& s) {
    BFloat16RowStreams(x, k, s);
  }
};

LORAMUX_AVX512 __attribute__((flatten)) void FloatPanels(const float* x, int64_t m, int64_t k,
                                                         const float* panels, int64_t n,
                                                         const float* bias, float* y, int64_t first,
                                                         int64_t last) {
  Panels<float, FloatTileOf, FloatRowStreamsOf>(x, m, k, panels, n, bias, y, first, last);
}

LORAMUX_AVX512_BF16 __attribute__((flatten)) void BFloat16Panels(const uint16_t* x, int64_t m,
                                                                 int64_t k, const uint16_t* panels,
                                                                 int64_t n, const float* bias,
                                                                 uint16_t* y, int64_t first,
                                                                 int64_t last) {
  Panels<uint16_t, BFloat16TileOf, BFloat16RowStreamsOf>(x, m, k, panels, n, bias, y, first, last);
}

// ---- AVX2 + FMA: the same layouts and the same order of arithmetic on CPUs without AVX-512 ----
// Each output still sums its products one input at a time into one float32 lane from zero (a
// bfloat16 pair's two inputs in turn: each product is exact in float32), so a row's bits do not
// depend on the rows beside it here either; float32 gives the AVX-512 kernel's bits. With 16
// registers of 8 lanes, a tile is a few rows by half a panel (32 outputs), and a single row takes
// the whole panel.

#define LORAMUX_AVX2 __attribute__((target("avx2,fma")))

LORAMUX_AVX2 LORAMUX_INLINE __m256 BFloat16Broadcast(uint16_t bits) {
  return _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int32_t>(uint32_t{bits} << 16)));
}

LORAMUX_INLINE void StoreLane(float v, float* y) { *y = v; }
LORAMUX_INLINE void StoreLane(float v, uint16_t* y) { *y = FloatToBFloat16(v); }

// Rows x Vectors·8 outputs (from `offset` in the panel) of rows of x against one panel.
template <int Rows, int Vectors, typename T>
LORAMUX_AVX2 LORAMUX_INLINE void Avx2Tile(const T* x, int64_t k, const T* panel, int64_t offset,
                                          const float* bias, T* y, int64_t ldy, int64_t width) {
  __m256 acc[Rows][Vectors];
#pragma GCC unroll 8
  for (int r = 0; r < Rows; ++r) {
#pragma GCC unroll 8
    for (int j = 0; j < Vectors; ++j) acc[r][j] = _mm256_setzero_ps();
  }
  if constexpr (std::is_same_v<T, float>) {
    for (int64_t i = 0; i < k; ++i) {
      const float* w = panel + i * kPanelWidth + offset;
      __m256 v[Rows];
#pragma GCC unroll 8
      for (int r = 0; r < Rows; ++r) v[r] = _mm256_set1_ps(x[r * k + i]);
#pragma GCC unroll 8
      for (int j = 0; j < Vectors; ++j) {
        const __m256 wj = _mm256_loadu_ps(w + 8 * j);
#pragma GCC unroll 8
        for (int r = 0; r < Rows; ++r) acc[r][j] = _mm256_fmadd_ps(wj, v[r], acc[r][j]);
      }
    }
  } else {
    const __m256i high = _mm256_set1_epi32(static_cast<int32_t>(0xFFFF0000u));
    for (int64_t p = 0; 2 * p < k; ++p) {
      const bool pair = 2 * p + 1 < k;  // else an odd k's last input, alone
      const uint16_t* w = panel + p * 2 * kPanelWidth + 2 * offset;
      __m256 v0[Rows], v1[Rows];
#pragma GCC unroll 8
      for (int r = 0; r < Rows; ++r) {
        v0[r] = BFloat16Broadcast(x[r * k + 2 * p]);
        v1[r] = pair ? BFloat16Broadcast(x[r * k + 2 * p + 1]) : _mm256_setzero_ps();
      }
#pragma GCC unroll 8
      for (int j = 0; j < Vectors; ++j) {
        const __m256i wj = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 16 * j));
        const __m256 even = _mm256_castsi256_ps(_mm256_slli_epi32(wj, 16));
        const __m256 odd = _mm256_castsi256_ps(_mm256_and_si256(wj, high));
#pragma GCC unroll 8
        for (int r = 0; r < Rows; ++r) {
          acc[r][j] = _mm256_fmadd_ps(even, v0[r], acc[r][j]);
          if (pair) acc[r][j] = _mm256_fmadd_ps(odd, v1[r], acc[r][j]);
        }
      }
    }
  }
  const int64_t lanes = std::min<int64_t>(8 * Vectors, width - offset);
#pragma GCC unroll 8
  for (int r = 0; r < Rows; ++r) {
    alignas(32) float sums[8 * Vectors];
#pragma GCC unroll 8
    for (int j = 0; j < Vectors; ++j) _mm256_store_ps(sums + 8 * j, acc[r][j]);
    for (int64_t l = 0; l < lanes; ++l) {
      StoreLane(sums[l] + (bias != nullptr ? bias[offset + l] : 0.0f), y + r * ldy + offset + l);
    }
  }
}

// Rows per AVX2 tile over half a panel: 4 vectors each, plus their broadcast inputs, in 16
// registers (bfloat16 broadcasts two inputs a row).
template <typename T>
constexpr int kAvx2TileRows = std::is_same_v<T, float> ? 3 : 2;

template <typename T>
LORAMUX_AVX2 __attribute__((flatten)) void Avx2Panels(const T* x, int64_t m, int64_t k,
                                                      const T* panels, int64_t n, const float* bias,
                                                      T* y, int64_t first, int64_t last) {
  constexpr int kRows = kAvx2TileRows<T>;
  constexpr int64_t kHalf = kPanelWidth / 2;
  const int64_t group =
      PanelGroup(std::is_same_v<T, float> ? PanelType::kFloat32 : PanelType::kBFloat16);
  const int64_t panel_elements = (k + group - 1) / group * group * kPanelWidth;
  for (int64_t p = first; p < last; ++p) {
    const T* panel = panels + p * panel_elements;
    const int64_t column = p * kPanelWidth, width = std::min(kPanelWidth, n - column);
    const float* b = bias != nullptr ? bias + column : nullptr;
    T* yp = y + column;
    if (m == 1) {
      Avx2Tile<1, 8>(x, k, panel, 0, b, yp, n, width);
      continue;
    }
    for (int64_t offset = 0; offset < width; offset += kHalf) {
      int64_t r = 0;
      for (; r + kRows <= m; r += kRows) {
        Avx2Tile<kRows, 4>(x + r * k, k, panel, offset, b, yp + r * n, n, width);
      }
      if (m - r == 2) {
        Avx2Tile<2, 4>(x + r * k, k, panel, offset, b, yp + r * n, n, width);
      } else if (m - r == 1) {
        Avx2Tile<1, 4>(x + r * k, k, panel, offset, b, yp + r * n, n, width);
      }
    }
  }
}

bool CpuHasAvx512() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl");
}

}  // namespace

PanelIsa PanelGemmIsa(PanelType type) {
  static const bool avx512 = CpuHasAvx512();
  static const bool avx512_bf16 = avx512 && __builtin_cpu_supports("avx512bf16");
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (type == PanelType::kFloat32 ? avx512 : avx512_bf16) return PanelIsa::kAvx512;
  return avx2 ? PanelIsa::kAvx2 : PanelIsa::kNone;
}

void PanelGemm(PanelType type, const void* x, int64_t m, int64_t k, const void* panels, int64_t n,
               const float* bias, void* y, int64_t first_panel, int64_t last_panel) {
  PanelGemmWith(PanelGemmIsa(type), type, x, m, k, panels, n, bias, y, first_panel, last_panel);
}

void PanelGemmWith(PanelIsa isa, PanelType type, const void* x, int64_t m, int64_t k,
                   const void* panels, int64_t n, const float* bias, void* y, int64_t first_panel,
                   int64_t last_panel) {
  // A caller's bug (see PanelGemmIsa): AVX2 runs wherever AVX-512 does.
  const PanelIsa runs = PanelGemmIsa(type);
  if (isa == PanelIsa::kNone || runs == PanelIsa::kNone ||
      (isa == PanelIsa::kAvx512 && runs != PanelIsa::kAvx512)) {
    std::abort();
  }
  const bool avx2 = isa == PanelIsa::kAvx2;
  if (type == PanelType::kFloat32) {
    (avx2 ? Avx2Panels<float> : FloatPanels)(static_cast<const float*>(x), m, k,
                                             static_cast<const float*>(panels), n, bias,
                                             static_cast<float*>(y), first_panel, last_panel);
  } else {
    (avx2 ? Avx2Panels<uint16_t> : BFloat16Panels)(
        static_cast<const uint16_t*>(x), m, k, static_cast<const uint16_t*>(panels), n, bias,
        static_cast<uint16_t*>(y), first_panel, last_panel);
  }
}

#else  // not x86-64: no panel kernels.

PanelIsa PanelGemmIsa(PanelType) { return PanelIsa::kNone; }
void PanelGemm(PanelType, const void*, int64_t, int64_t, const void*, int64_t, const float*, void*,
               int64_t, int64_t) {
  std::abort();
}
void PanelGemmWith(PanelIsa, PanelType, const void*, int64_t, int64_t, const void*, int64_t,
                   const float*, void*, int64_t, int64_t) {
  std::abort();
}

#endif

}  // namespace loramux
