#include "train/merge.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "adapters/adapter_plan.h"
#include "common/durable_file.h"
#include "common/status_macros.h"
#include "formats/checkpoint.h"
#include "model/llama_model.h"
#include "nlohmann/json.hpp"
#include "tensor/tensor_util.h"
#include "train/peft_export.h"

namespace loramux {

namespace {

// A PEFT directory has a config with "peft_type"; the seed layout's config is {"alpha": ...}.
AdapterFormat FormatOf(const std::string& config_json) {
  const auto j = nlohmann::json::parse(config_json, nullptr, false);
  return j.is_object() && !j.contains("peft_type") && j.contains("alpha") ? AdapterFormat::kSeed
                                                                          : AdapterFormat::kPeft;
}

absl::StatusOr<torch::Tensor> F64(const TensorView* view) {
  return ToTorch(*view, torch::kCPU, torch::kFloat64);
}

absl::StatusOr<torch::Tensor> MergedWeight(const PlannedModule& m, const torch::Tensor& w) {
  ASSIGN_OR_RETURN(torch::Tensor a, F64(m.a));
  ASSIGN_OR_RETURN(torch::Tensor b, F64(m.b));
  const torch::Tensor delta = m.seed_layout ? a.mm(b).t() : b.mm(a);  // [out, in]
  const torch::Tensor sum = w + m.scale * delta;
  if (m.kind == FactorKind::kLora) return sum;
  ASSIGN_OR_RETURN(torch::Tensor mag, F64(m.m));
  mag = mag.reshape({-1});
  if (m.kind == FactorKind::kDoraRow) return (mag / sum.norm(2, {1})).unsqueeze(1) * sum;
  return sum * (mag / sum.norm(2, {0})).unsqueeze(0);
}

}  // namespace

absl::Status Merge(const MergeOptions& o) {
  if (o.model_dir.empty() || o.adapter_dir.empty() || o.out.empty()) {
    return absl::InvalidArgumentError(
        "merge needs --model_dir, --adapter (an adapter directory) and --out");
  }
  ASSIGN_OR_RETURN(auto base, LlamaModel::Load(o.model_dir, torch::kCPU, torch::kFloat32));
  ASSIGN_OR_RETURN(auto checkpoint, Checkpoint::Open(o.model_dir));
  ASSIGN_OR_RETURN(std::string config,
                   ReadSmallFile(o.adapter_dir + "/adapter_config.json", 16 << 20));
  ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(o.adapter_dir + "/adapter_model.safetensors"));
  ASSIGN_OR_RETURN(AdapterPlan plan, PlanAdapter(o.adapter_dir, FormatOf(config), config, *file,
                                                 *base, AdapterLimits{}));

  // Every base tensor under its checkpoint name (the weights as read, in float64), then the
  // adapted projections replaced.
  NamedTensors tensors;
  std::map<std::string, size_t> position;
  auto add = [&](const std::string& name) -> absl::Status {
    const TensorView* view = checkpoint->Find(name);
    if (view == nullptr) return absl::OkStatus();
    ASSIGN_OR_RETURN(torch::Tensor t, F64(view));
    position[name] = tensors.size();
    tensors.emplace_back(name, t);
    return absl::OkStatus();
  };
  const ModelConfig& c = base->config();
  RETURN_IF_ERROR(add("model.embed_tokens.weight"));
  for (int64_t l = 0; l < c.num_layers; ++l) {
    RETURN_IF_ERROR(add(absl::StrCat("model.layers.", l, ".input_layernorm.weight")));
    RETURN_IF_ERROR(add(absl::StrCat("model.layers.", l, ".post_attention_layernorm.weight")));
    for (int64_t p = 0; p < kNumProjections; ++p) {
      const std::string path = ModulePath(l, static_cast<Projection>(p));
      RETURN_IF_ERROR(add(path + ".weight"));
      RETURN_IF_ERROR(add(path + ".bias"));
    }
  }
  RETURN_IF_ERROR(add("model.norm.weight"));
  RETURN_IF_ERROR(add("lm_head.weight"));
  for (const PlannedModule& m : plan) {
    auto& slot = tensors[position.at(base->module_paths()[m.index] + ".weight")].second;
    ASSIGN_OR_RETURN(slot, MergedWeight(m, slot));
  }
  return WriteCheckpointDirectory(o.out, o.model_dir, tensors, o.dtype);
}

}  // namespace loramux
