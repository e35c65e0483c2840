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
#include <vector>

#include <torch/types.h>

namespace loramux {

// HF's LlamaRMSNorm: weight ⊙ round(x · rsqrt(mean(x²) + eps)), x [T, hidden], weight [hidden].
torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& weight, double eps);

// Rotates x [T, heads, head_dim] in place by each token's position: x·cos + rotate_half(x)·sin in
// float32, rounded once; cos/sin are float32 tables [max_positions, head_dim] and `positions` [T]
// (host) index them, `positions_on_device` is the same as a tensor on x's device.
void ApplyRope(torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
               const std::vector<int64_t>& positions, const torch::Tensor& positions_on_device);

// SwiGLU's gate: silu(gate) ⊙ up (each rounded to the dtype, as HF), gate and up [T, inter].
torch::Tensor SiluMul(const torch::Tensor& gate, const torch::Tensor& up);

}  // namespace loramux
