// The LibTorch side of the CUDA gather-BGMV kernels (bgmv_cuda.h): decode deltas of the short
// token runs of one module, all adapters in one pair of launches on the current CUDA stream, with
// no host synchronisation (the segment table and token map go up from pinned memory
// asynchronously, ordered on that stream). Built only with LORAMUX_WITH_CUDA (CMake option
// LORAMUX_CUDA); lora_linear.cc takes it for CUDA tensors where it applies, and the gathered
// batched GEMMs (bgmv_gather.h) otherwise.
//
// Same contract as AddGatheredDeltas: x [T, in] and y [T, out] (x W^T + b, updated in place),
// bias [out] or undefined; per-row DoRA and LoRA runs only.
#pragma once

#include <vector>

#include <torch/types.h>

#include "adapters/bgmv_gather.h"  // ModuleRun

namespace loramux {

// Whether the kernels take these runs: CUDA, contiguous float32 or bfloat16 activations, at most
// 65535 tokens, factors of float32/bfloat16/float16 with rank <= kBgmvCudaMaxRank, no per-column
// DoRA.
bool CudaBgmvApplies(const torch::Tensor& x, const torch::Tensor& y,
                     const std::vector<ModuleRun>& runs);

// Adds the runs' deltas to y. Throws (c10::Error) when a launch fails.
void AddCudaBgmvDeltas(const torch::Tensor& x, torch::Tensor& y, const torch::Tensor& bias,
                       const std::vector<ModuleRun>& runs);

}  // namespace loramux
