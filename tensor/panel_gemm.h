// y = x·Wᵀ (+ bias) for a frozen weight stored in column panels: the CPU kernels behind
// PackedLinear (packed_linear.h) on x86-64 CPUs with AVX-512, or with AVX2 and FMA.
//
// Layout. For W [n, k] (row-major, `n` outputs of `k` inputs), ceil(n / 64) panels, one after
// another; panel p holds outputs 64p .. 64p + 63, zero-padded past n:
//   float32:  [k][64]              (input i's 64 weights side by side)
//   bfloat16: [ceil(k / 2)][64][2] (inputs 2i and 2i + 1 of each output side by side, as
//                                   vdpbf16ps reads them; a zero past an odd k)
// so one panel is one sequential stream of k·64 weights: decode (1 to a few rows) reads each
// weight once at the memory's streaming rate, and larger batches reuse a panel from L2 for every
// 6 rows (24 float32 accumulators of 16 lanes) while prefetching the next one, so that past the
// first 6 rows the memory works while the arithmetic does.
//
// Order of arithmetic, the same for any row count and any split of panels between threads: each
// output sums its k products one input (bfloat16: one pair) at a time into one float32 lane
// starting from zero, adds the bias, and rounds once to the output type (bfloat16: to nearest
// even). (AVX2 takes a bfloat16 pair's two inputs one after the other: other bits than AVX-512's,
// the same contract.) So a row's result depends on that row alone: batching is bit-exact, and a row
// holding NaN or infinity leaves the others untouched.
//
// Thread-safety: pure functions; callers split panels [first, last) between threads.
#pragma once

#include <cstdint>

namespace loramux {

enum class PanelType { kFloat32, kBFloat16 };

constexpr int64_t kPanelWidth = 64;

// The instructions the kernels for `type` use on this CPU: AVX-512 (float32: AVX-512F; bfloat16:
// AVX-512 BF16, vdpbf16ps), else AVX2 with FMA (bfloat16 widened exactly to float32), else none.
enum class PanelIsa { kNone, kAvx2, kAvx512 };
PanelIsa PanelGemmIsa(PanelType type);

// Whether this CPU runs the kernels for `type`.
inline bool PanelGemmRuns(PanelType type) { return PanelGemmIsa(type) != PanelIsa::kNone; }

// Panels for n outputs.
inline int64_t PanelCount(int64_t n) { return (n + kPanelWidth - 1) / kPanelWidth; }

// Inputs a panel row holds side by side (see the layout above): 1 (float32) or a pair (bfloat16).
inline int64_t PanelGroup(PanelType type) { return type == PanelType::kBFloat16 ? 2 : 1; }

// y [m, n] (row-major, leading dimension n) for panels [first_panel, last_panel) of the packed
// weight, from x [m, k] (row-major, contiguous); elements are float (kFloat32) or bfloat16 bit
// patterns (kBFloat16). `bias` is float32 [n] or null. Requires PanelGemmRuns(type).
void PanelGemm(PanelType type, const void* x, int64_t m, int64_t k, const void* panels, int64_t n,
               const float* bias, void* y, int64_t first_panel, int64_t last_panel);

// The same through the kernels for `isa`: PanelGemmIsa(type), or kAvx2 where that is kAvx512
// (tests compare the two on CPUs with AVX-512).
void PanelGemmWith(PanelIsa isa, PanelType type, const void* x, int64_t m, int64_t k,
                   const void* panels, int64_t n, const float* bias, void* y, int64_t first_panel,
                   int64_t last_panel);

}  // namespace loramux
