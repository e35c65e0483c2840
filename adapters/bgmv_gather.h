// Device-agnostic batched decode deltas: the short token runs of one module, grouped by rank and
// kind, each group served by one gather and two batched GEMMs. A module costs a handful of kernel
// launches however many adapters the batch mixes, instead of ~5 per segment: what matters on a
// GPU, where each launch costs microseconds. (On the CPU, LibTorch's batched matrix-vector
// products are slow and the fused kernel bgmv_cpu serves decode instead.)
//
// For each token t of a run with module m and request scale c:
//   LoRA:      y[t] += c·s · B (A x[t])
//   DoRA rows: y[t]  = g_c ⊙ (y[t] - b + c·s · B (A x[t])) + b
// x [T, in] and y [T, out] (holds x W^T + b; updated in place) share device and dtype with the
// factors; bias [out] or undefined. Per-column DoRA (seed) is not taken: callers route it
// elsewhere. The scale c·s multiplies the rank-sized intermediate in float32 (float64 for float64
// inputs).
#pragma once

#include <cstdint>
#include <vector>

#include <torch/types.h>

namespace loramux {

struct ModuleAdapter;

// Tokens [begin, end) of the packed batch through `module` at request scale `scale`.
struct ModuleRun {
  const ModuleAdapter* module = nullptr;
  double scale = 1.0;
  int64_t begin = 0;
  int64_t end = 0;
};

void AddGatheredDeltas(const torch::Tensor& x, torch::Tensor& y, const torch::Tensor& bias,
                       const std::vector<ModuleRun>& runs);

}  // namespace loramux
