// y = x W^T + b for the few rows of a decode step on the CPU in float32, streaming W once at the
// memory's speed. At batch 1 the BLAS's matrix-vector path read W at ~12 GB/s on this project's
// 2-core machines (bench/model_bench), a third of what the memory gives; this kernel splits W's
// rows over LibTorch's intra-op threads and reads each W row once for all (up to 4) x rows.
#pragma once

#include <cstdint>

#include <torch/types.h>

namespace loramux {

constexpr int64_t kDecodeLinearMaxRows = 4;

// True when DecodeLinear serves x [T, in] against w [out, in] (and b [out] if defined): CPU,
// float32, contiguous, T <= kDecodeLinearMaxRows.
bool DecodeLinearApplies(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b);

// torch::linear(x, w, b) for the inputs DecodeLinearApplies accepts (each output sums in float32,
// four partial sums per vector lane, so it may differ from the BLAS in the last bits).
torch::Tensor DecodeLinear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b);

// DecodeLinear where it applies, torch::linear elsewhere: what the model's projections call.
torch::Tensor Linear(const torch::Tensor& x, const torch::Tensor& w,
                     const torch::Tensor& b = torch::Tensor());

}  // namespace loramux
