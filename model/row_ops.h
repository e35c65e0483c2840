// The decoder layer's per-token elementwise steps: RMS norm, rotary embedding, SwiGLU's gate.
//
// On the CPU in float32 and bfloat16 each is one fused pass per token row (LibTorch's composition
// costs 5-10 tensor operations and temporaries each, which dominate small batches); elsewhere
// (other devices and dtypes) they are LibTorch compositions. Both compute in float32 and round to
// the model's dtype where HF's eager Llama does: a row's result depends on that row alone.
//
// Thread-safety: pure functions of their inputs; run on LibTorch's intra-op threads.
#pragma once

#include <cstdint>
#include <utility>

#include <torch/types.h>

#include "formats/model_config.h"

namespace loramux {

// HF's LlamaRMSNorm: weight ⊙ round(x · rsqrt(mean(x²) + eps)), x [T, hidden], weight [hidden].
torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& weight, double eps);

// HF's rotary tables cos, sin [max_positions, head_dim], with linear or llama3 frequency scaling,
// computed in `dtype` (HF's model: float32; the trainer's float64 gradient checks: float64), on
// the CPU.
std::pair<torch::Tensor, torch::Tensor> RopeTables(const ModelConfig& config,
                                                   torch::ScalarType dtype);

// Rotates x [T, heads, head_dim] in place by each token's position: x·cos + rotate_half(x)·sin in
// float32, rounded once; cos/sin are float32 tables [max_positions, head_dim] on x's device and
// `positions` [T] (int64, on x's device) index them.
void ApplyRope(torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
               const torch::Tensor& positions);

// SwiGLU's gate: silu(gate) ⊙ up (each rounded to the dtype, as HF), gate and up [T, inter].
torch::Tensor SiluMul(const torch::Tensor& gate, const torch::Tensor& up);

}  // namespace loramux
