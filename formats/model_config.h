// The base model's architecture, read from a HuggingFace `config.json`.
// Supports LlamaForCausalLM, MistralForCausalLM and Qwen2ForCausalLM.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace loramux {

// RoPE frequency scaling (`rope_scaling` in config.json).
struct RopeScaling {
  enum class Type { kNone, kLinear, kLlama3 };
  Type type = Type::kNone;
  double factor = 1.0;
  double low_freq_factor = 1.0;                     // llama3 only
  double high_freq_factor = 4.0;                    // llama3 only
  int64_t original_max_position_embeddings = 8192;  // llama3 only
};

struct ModelConfig {
  std::string architecture;  // e.g. "LlamaForCausalLM"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // Qwen2: q/k/v projections carry a bias
  bool o_bias = false;    // Llama `attention_bias: true` also biases o_proj
  bool mlp_bias = false;
  int64_t sliding_window = 0;  // 0 = full attention (Mistral may set one)
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;

  // Parses and validates config.json text. INVALID_ARGUMENT names `label` and the bad field;
  // UNIMPLEMENTED for an architecture or activation that is not supported.
  static absl::StatusOr<ModelConfig> FromJson(absl::string_view json, absl::string_view label);
  // Reads `<model_dir>/config.json`.
  static absl::StatusOr<ModelConfig> FromDirectory(const std::string& model_dir);
};

}  // namespace loramux
