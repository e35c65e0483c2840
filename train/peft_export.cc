#include "train/peft_export.h"

#include <filesystem>
#include <map>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/durable_file.h"
#include "common/status_macros.h"
#include "formats/safetensors.h"
#include "nlohmann/json.hpp"

namespace loramux {

namespace {

using Json = nlohmann::ordered_json;

DType FileDType(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat64: return DType::kF64;
    case torch::kBFloat16: return DType::kBF16;
    case torch::kFloat16: return DType::kF16;
    default: return DType::kF32;
  }
}

std::string TorchDTypeName(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat64: return "float64";
    case torch::kBFloat16: return "bfloat16";
    case torch::kFloat16: return "float16";
    default: return "float32";
  }
}

absl::Status CopyIfPresent(const std::string& from, const std::string& to, bool set_dtype,
                           torch::ScalarType dtype) {
  auto text = ReadSmallFile(from, 64 << 20);
  if (!text.ok()) return absl::IsNotFound(text.status()) ? absl::OkStatus() : text.status();
  if (!set_dtype) return ReplaceFile(to, *text);
  Json config = Json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded())
    return absl::InvalidArgumentError(absl::StrCat(from, " is not valid JSON"));
  config["torch_dtype"] = TorchDTypeName(dtype);
  return ReplaceFile(to, config.dump(2) + "\n");
}

}  // namespace

// Writes `path` whole or not at all: a temporary file, fsync'ed, renamed over it.
absl::Status ReplaceFile(const std::string& path, std::string_view data) {
  const std::string tmp = absl::StrCat(path, ".tmp-", UniqueToken());
  RETURN_IF_ERROR(WriteFileDurably(tmp, data));
  std::error_code error;
  std::filesystem::rename(tmp, path, error);
  if (error) {
    std::filesystem::remove(tmp, error);
    return absl::InternalError(absl::StrCat("renaming ", tmp, " to ", path, " failed"));
  }
  return FsyncDir(std::filesystem::path(path).parent_path().string());
}

absl::Status MakeDirs(const std::string& dir) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error)
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create ", dir, ": ", error.message()));
  return absl::OkStatus();
}

std::string PeftConfigJson(const AdapterSpec& spec) {
  Json c;
  c["alpha_pattern"] = Json::object();
  c["auto_mapping"] = nullptr;
  c["base_model_name_or_path"] = spec.base_model_name_or_path;
  c["bias"] = "none";
  c["fan_in_fan_out"] = false;
  c["inference_mode"] = true;
  c["init_lora_weights"] = true;
  c["layer_replication"] = nullptr;
  c["layers_pattern"] = nullptr;
  c["layers_to_transform"] =
      spec.layers_to_transform.empty() ? Json(nullptr) : Json(spec.layers_to_transform);
  c["loftq_config"] = Json::object();
  c["lora_alpha"] = spec.alpha;
  c["lora_dropout"] = 0.0;
  c["megatron_config"] = nullptr;
  c["megatron_core"] = "megatron.core";
  c["modules_to_save"] = nullptr;
  c["peft_type"] = "LORA";
  c["r"] = spec.rank;
  c["rank_pattern"] = Json::object();
  c["revision"] = nullptr;
  c["target_modules"] =
      spec.target_regex.empty() ? Json(spec.target_names) : Json(spec.target_regex);
  c["task_type"] = "CAUSAL_LM";
  c["use_dora"] = spec.use_dora;
  c["use_rslora"] = spec.use_rslora;
  return c.dump(2) + "\n";
}

std::string SerializeTensors(const NamedTensors& tensors, torch::ScalarType dtype,
                             const std::map<std::string, std::string>& metadata) {
  std::vector<torch::Tensor> owned;
  std::vector<TensorView> views;
  for (const auto& [name, tensor] : tensors) {
    owned.push_back(tensor.detach().to(torch::kCPU, dtype).contiguous());
    TensorView v;
    v.name = name;
    v.dtype = FileDType(dtype);
    v.shape = owned.back().sizes().vec();
    v.data = static_cast<const uint8_t*>(owned.back().data_ptr());
    v.nbytes = owned.back().numel() * owned.back().element_size();
    views.push_back(std::move(v));
  }
  return SerializeSafetensors(views, metadata);
}

absl::Status WriteAdapterDirectory(const std::string& dir, const std::string& config_json,
                                   const NamedTensors& tensors) {
  RETURN_IF_ERROR(MakeDirs(dir));
  RETURN_IF_ERROR(ReplaceFile(dir + "/adapter_model.safetensors",
                              SerializeTensors(tensors, torch::kFloat32, {{"format", "pt"}})));
  return ReplaceFile(dir + "/adapter_config.json", config_json);
}

absl::Status WriteCheckpointDirectory(const std::string& dir, const std::string& base_dir,
                                      const NamedTensors& tensors, torch::ScalarType dtype) {
  RETURN_IF_ERROR(MakeDirs(dir));
  RETURN_IF_ERROR(ReplaceFile(dir + "/model.safetensors",
                              SerializeTensors(tensors, dtype, {{"format", "pt"}})));
  RETURN_IF_ERROR(CopyIfPresent(base_dir + "/config.json", dir + "/config.json", true, dtype));
  for (const char* name : {"generation_config.json", "tokenizer.json", "tokenizer_config.json",
                           "special_tokens_map.json"}) {
    RETURN_IF_ERROR(CopyIfPresent(base_dir + "/" + name, dir + "/" + name, false, dtype));
  }
  return absl::OkStatus();
}

}  // namespace loramux
