// A differentiable Llama-family forward for training: the frozen base (a loaded LlamaModel's
// tensors, read and never written or copied when the dtypes agree) with LoRA / DoRA side paths
// whose factors are autograd parameters, or, for full fine-tuning, every base tensor cloned into
// a parameter (what the memory benchmark and the demo's base pretraining use).
//
//   h = embed(tokens)
//   for each layer:  h = h + o(attn(rope(q(n1(h))), rope(k(n1(h))), v(n1(h))))     causal, GQA
//                    h = h + down(silu(gate(n2(h))) * up(n2(h)))
//   logits = lm_head(norm(h))
//
// Each adapted projection (PEFT's maths, DESIGN.md):
//   LoRA  y = W x + b + s·B(A x)
//   DoRA  y = g ⊙ (W x + s·B(A x)) + b,   g = m / ‖W + s·B A‖_row
// DoRA's row norm is DETACHED from the graph by default, as PEFT does (and the DoRA paper, sec.
// 4.3, recommends to save memory): gradients flow into m, A and B through g's numerator and the
// side path but not through the norm. DoraNorm::kDifferentiable keeps the norm in the graph (the
// gradient test checks both against finite differences).
//
// Initialisation as PEFT's: A ~ Kaiming-uniform(a=√5) = U(-1/√in, 1/√in), B = 0, m = ‖W‖_row.
//
// Thread-safety: not thread-safe (parameters are updated in place by the optimizer). The base
// LlamaModel must outlive this object.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "adapters/adapter_config.h"
#include "formats/safetensors.h"
#include "model/llama_model.h"

namespace loramux {

enum class DoraNorm { kDetached, kDifferentiable };

// One adapted projection and its trainable factors.
struct TrainableModule {
  int64_t index = 0;  // module index (layer * kNumProjections + projection)
  std::string path;   // "model.layers.<l>.self_attn.q_proj"
  int64_t rank = 0;
  double scale = 1.0;
  bool dora = false;
  torch::Tensor lora_a;     // [r, in]
  torch::Tensor lora_b;     // [out, r]
  torch::Tensor magnitude;  // [out] (DoRA only)
  // DoRA: when defined [out], used as the row norm ‖W + s·B A‖ instead of computing it (gradient
  // checks hold the norm at a value to compare PEFT's detached gradient with finite differences).
  torch::Tensor norm_override;
};

class TrainableModel {
 public:
  // LoRA / DoRA on the modules `config` targets, factors in `dtype` initialised as PEFT does
  // from `seed`. Base tensors are used as they are when `dtype` is the base's, else cast once.
  // INVALID_ARGUMENT when the config targets no module of the base (or a scale is out of range).
  static absl::StatusOr<std::unique_ptr<TrainableModel>> ForAdapter(
      const LlamaModel& base, const PeftAdapterConfig& config, torch::ScalarType dtype,
      uint64_t seed, DoraNorm dora_norm = DoraNorm::kDetached);
  // Every base tensor cloned into a trainable parameter (full fine-tuning).
  static std::unique_ptr<TrainableModel> ForFullFineTune(const LlamaModel& base,
                                                         torch::ScalarType dtype);

  // tokens [B, T] int64 (positions 0..T-1 in every row; right padding needs no mask because
  // attention is causal) -> logits [B, T, vocab] in the model's dtype.
  torch::Tensor Forward(const torch::Tensor& tokens) const;

  // The tensors the optimizer updates: adapter factors (A, B, m), or every weight when full.
  std::vector<torch::Tensor> parameters() const;
  int64_t num_parameters() const;
  bool full() const { return full_; }
  std::vector<TrainableModule>& modules() { return modules_; }
  const std::vector<TrainableModule>& modules() const { return modules_; }

  // The parameters under their file names: PEFT's adapter keys
  // ("base_model.model.<path>.lora_A.weight", ".lora_B.weight", ".lora_magnitude_vector"), or
  // the HuggingFace checkpoint's names when full. Views of the live tensors (detached).
  std::vector<std::pair<std::string, torch::Tensor>> NamedTensors() const;
  // Copies tensors saved by NamedTensors (a checkpoint being resumed, or a PEFT adapter file into
  // an adapter model of the same targets) into the parameters. INVALID_ARGUMENT naming a tensor
  // that is missing, unexpected or of another shape.
  absl::Status LoadTensors(const SafetensorsFile& file);

  const ModelConfig& config() const { return config_; }
  torch::ScalarType dtype() const { return dtype_; }

 private:
  TrainableModel(const LlamaModel& base, torch::ScalarType dtype, bool full, DoraNorm dora_norm);
  torch::Tensor Linear(const torch::Tensor& x, int64_t layer, Projection p) const;

  ModelConfig config_;
  ModelWeights weights_;  // the base's tensors (frozen), or their trainable clones when full_
  torch::ScalarType dtype_;
  bool full_ = false;
  DoraNorm dora_norm_ = DoraNorm::kDetached;
  std::vector<TrainableModule> modules_;
  std::vector<int64_t> module_slot_;   // module index -> position in modules_, or -1
  torch::Tensor rope_cos_, rope_sin_;  // [max_positions, head_dim] in dtype_
};

// Mean cross-entropy of logits [B, T, V] predicting tokens[:, t+1] at every position t where
// loss_mask[:, t+1] is true (completion tokens). Returns {sum of token losses, token count}.
std::pair<torch::Tensor, int64_t> CompletionLoss(const torch::Tensor& logits,
                                                 const torch::Tensor& tokens,
                                                 const torch::Tensor& loss_mask);

}  // namespace loramux
