// Writing what training produces: a PEFT adapter directory (adapter_config.json with the fields
// PEFT's save_pretrained writes, and adapter_model.safetensors under PEFT's keys), or a
// HuggingFace checkpoint directory (config.json and tokenizer files copied from the base,
// model.safetensors) for full fine-tuning and merges. Files are written durably (fsync, rename).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace loramux {

// What an adapter is trained on; the source of adapter_config.json.
struct AdapterSpec {
  int64_t rank = 8;
  double alpha = 16;
  bool use_rslora = false;
  bool use_dora = false;
  // target_modules: names (matched as PEFT does: exact or dotted suffix), or one regex (full
  // match) in target_regex. "all-linear" is expanded to the base's projection names, as PEFT's
  // save_pretrained writes it.
  std::vector<std::string> target_names = {"q_proj", "v_proj"};
  std::string target_regex;
  std::vector<int64_t> layers_to_transform;  // empty = all
  std::string base_model_name_or_path;
};

// adapter_config.json text for `spec` (peft_type LORA, task_type CAUSAL_LM).
std::string PeftConfigJson(const AdapterSpec& spec);

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// The tensors as a safetensors file, each converted to `dtype` (float32 / bfloat16 / float16 /
// float64), with `metadata`.
std::string SerializeTensors(const NamedTensors& tensors, torch::ScalarType dtype,
                             const std::map<std::string, std::string>& metadata = {});

// Writes `path` whole or not at all (a temporary file, fsync'ed, renamed over it).
absl::Status ReplaceFile(const std::string& path, std::string_view data);
// mkdir -p; FAILED_PRECONDITION naming the directory when it cannot be made.
absl::Status MakeDirs(const std::string& dir);

// DIR/adapter_config.json and DIR/adapter_model.safetensors (float32), creating DIR.
absl::Status WriteAdapterDirectory(const std::string& dir, const std::string& config_json,
                                   const NamedTensors& tensors);

// A HuggingFace checkpoint in DIR: model.safetensors (tensors in `dtype`), and config.json,
// generation_config.json, tokenizer.json, tokenizer_config.json, special_tokens_map.json copied
// from `base_dir` where present (config.json's torch_dtype set to `dtype`).
absl::Status WriteCheckpointDirectory(const std::string& dir, const std::string& base_dir,
                                      const NamedTensors& tensors, torch::ScalarType dtype);

}  // namespace loramux
