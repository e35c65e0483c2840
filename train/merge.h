// `loramux merge`: base + one adapter folded into the weights, as PEFT's merge_and_unload, written
// as a HuggingFace checkpoint (serving it adds no adapter latency).
//   LoRA  W' = W + s·B A
//   DoRA  W' = g ⊙_rows (W + s·B A),  g = m / ‖W + s·B A‖_row     (PEFT)
//   seed  W' = W + α (A B)ᵀ; seed DoRA W' = (W + α (A B)ᵀ) ⊙_cols g,  g = m / ‖·‖_col
// Biases are left as they are (DoRA does not rescale them). The sums run in float64 and are
// stored in `dtype`; every other tensor is copied.
#pragma once

#include <string>

#include <torch/types.h>

#include "absl/status/status.h"

namespace loramux {

struct MergeOptions {
  std::string model_dir;    // base checkpoint
  std::string adapter_dir;  // adapter_config.json + adapter_model.safetensors (PEFT or seed)
  std::string out;          // the merged checkpoint directory
  torch::ScalarType dtype = torch::kFloat32;
};

// NOT_FOUND for missing directories or files; the adapter's planning errors (INVALID_ARGUMENT,
// FAILED_PRECONDITION naming the module) when it does not fit the base.
absl::Status Merge(const MergeOptions& options);

}  // namespace loramux
