// A fused CPU kernel for LoRA deltas of short token runs (decode): for each segment of a few
// tokens, y[t] += c · B (A x[t]) — or, for DoRA per output row, y[t] = g ⊙ (y[t] - b + c·B(A x[t]))
// + b — in one call for all segments, reading each adapter's A and B straight from its storage. It
// replaces ~5 LibTorch dispatches per segment and module, which dominate batch decode with many
// distinct adapters. Activations, gains and sums are float32; the factors may be stored in float32,
// bfloat16 or float16 (widened exactly as they are read, which halves the bytes decode streams).
// CPU only; the caller falls back otherwise.
#pragma once

#include <cstdint>
#include <vector>

namespace loramux {

enum class FactorType { kFloat32, kBFloat16, kFloat16 };

struct BgmvSegment {
  const void* a = nullptr;    // [rank, in] of `type`
  const void* b_t = nullptr;  // B^T [rank, out] of `type`
  FactorType type = FactorType::kFloat32;
  const float* gain = nullptr;  // [out] DoRA row gain, or null for LoRA
  int64_t rank = 0;             // <= kBgmvMaxRank
  float scale = 1.0f;           // c·s: request scale times the adapter's scale
  int64_t begin = 0, end = 0;   // token rows
};

constexpr int64_t kBgmvMaxRank = 512;

// x [tokens, in], y [tokens, out] row-major float32; bias [out] or null (used by DoRA only).
// Segments must cover disjoint rows; they are split over LibTorch's intra-op threads. On CPUs with
// AVX-512 an explicit kernel computes rows of one adapter up to 4 at a time and prefetches the
// factors a thread reads next; others take a portable one. Either way each row's sums are its own
// in a fixed order (a row's bits do not depend on the other rows or on how segments are cut), and
// 16-bit factors give the same bits as the same values stored in float32.
void BgmvCpu(const float* x, float* y, const float* bias, int64_t in, int64_t out,
             const std::vector<BgmvSegment>& segments);

// The portable kernel BgmvCpu takes on CPUs without AVX-512, here on any CPU (tests compare them).
void BgmvCpuPortable(const float* x, float* y, const float* bias, int64_t in, int64_t out,
                     const std::vector<BgmvSegment>& segments);

// The same for bfloat16 activations x [tokens, in] and y [tokens, out] (bit patterns), with no
// float32 copies of whole tensors: each row's sums are float32 and round once to nearest even.
// With bfloat16 factors on a CPU with AVX512-BF16 (BgmvCpuMultipliesBFloat16Natively), both
// projections multiply 16-bit pairs natively (vdpbf16ps: exact products, float32 sums in its own
// order, subnormal inputs read as zero): the down projection x by A, the up projection B^T by the
// rank-sized u = c·A x rounded to bfloat16 (as PEFT's bfloat16 layers round it); otherwise each row
// widens exactly to float32 and takes BgmvCpu's sums, bit for bit. Either way a row's bits do not
// depend on the other rows.
bool BgmvCpuMultipliesBFloat16Natively();
void BgmvCpuBFloat16(const uint16_t* x, uint16_t* y, const float* bias, int64_t in, int64_t out,
                     const std::vector<BgmvSegment>& segments);

}  // namespace loramux
