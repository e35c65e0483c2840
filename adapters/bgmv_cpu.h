// A fused CPU kernel for LoRA deltas of short token runs (decode): for each segment of a few
// tokens, y[t] += c · B (A x[t]) — or, for DoRA per output row, y[t] = g ⊙ (y[t] - b + c·B(A x[t])) + b
// — in one call for all segments, reading each adapter's A and B straight from its storage.
// It replaces ~5 LibTorch dispatches per segment and module, which dominate batch decode with
// many distinct adapters. Float32, contiguous, CPU only; the caller falls back otherwise.
#pragma once

#include <cstdint>
#include <vector>

namespace loramux {

struct BgmvSegment {
  const float* a = nullptr;     // [rank, in]
  const float* b_t = nullptr;   // B^T [rank, out]
  const float* gain = nullptr;  // [out] DoRA row gain, or null for LoRA
  int64_t rank = 0;
  float scale = 1.0f;           // c·s: request scale times the adapter's scale
  int64_t begin = 0, end = 0;   // token rows
};

// x [tokens, in], y [tokens, out] row-major float32; bias [out] or null (used by DoRA only).
void BgmvCpu(const float* x, float* y, const float* bias, int64_t in, int64_t out,
             const std::vector<BgmvSegment>& segments);

}  // namespace loramux
