#include "adapters/adapter_weights.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <set>

#include <torch/torch.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "adapters/adapter_config.h"
#include "adapters/safetensors.h"
#include "common/status_macros.h"
#include "server/llama_model.h"
#include "server/tensor_util.h"

namespace loramux {
namespace {

// The raw factors of one module as found in the file, in PEFT orientation.
struct RawModule {
  const TensorView* a = nullptr;  // PEFT [r, in]; seed [in, r]
  const TensorView* b = nullptr;  // PEFT [out, r]; seed [r, out]
  const TensorView* m = nullptr;  // PEFT [out]; seed [1, in] or [in]
};

constexpr char kPeftPrefix[] = "base_model.model.";

// Context shared by the loading steps: names for error messages and the base's module table.
class AdapterBuilder {
 public:
  AdapterBuilder(std::string name, const LlamaModel& model, const AdapterLimits& limits)
      : name_(std::move(name)), model_(model), limits_(limits) {
    for (int64_t l = 0; l < model.config().num_layers; ++l) {
      for (int64_t p = 0; p < kNumProjections; ++p) {
        module_index_[ModulePath(l, static_cast<Projection>(p))] = ModuleIndex(l, static_cast<Projection>(p));
      }
    }
  }

  absl::Status Precondition(absl::string_view what) const {
    return absl::FailedPreconditionError(absl::StrCat("adapter \"", name_, "\": ", what));
  }
  absl::Status Invalid(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("adapter \"", name_, "\": ", what));
  }

  absl::StatusOr<int64_t> IndexOf(const std::string& path) const {
    auto it = module_index_.find(path);
    if (it == module_index_.end()) {
      return Precondition(absl::StrCat(
          "module \"", path, "\" does not exist in the base model or is not a served linear "
          "projection (hint: maybe the adapter was trained for another base model?)"));
    }
    return it->second;
  }
  const std::map<std::string, int64_t>& modules() const { return module_index_; }

  absl::Status CheckShape(const TensorView& view, const std::string& role,
                          const std::string& path, std::vector<int64_t> expected) const {
    if (view.shape == expected) return absl::OkStatus();
    return Precondition(absl::StrCat(role, " for ", path, " has shape ", ShapeString(view.shape),
                                     ", base expects ", ShapeString(expected)));
  }

  // A factor as float32 on the device, checked finite.
  absl::StatusOr<torch::Tensor> Factor(const TensorView& view) const {
    absl::StatusOr<torch::Tensor> t = ToTorch(view, model_.device(), torch::kFloat32);
    if (!t.ok()) return Invalid(t.status().message());
    // A float64 sum cannot overflow for float32 inputs, so it is finite exactly when every
    // element is: one vectorized pass instead of isfinite + all.
    if (!std::isfinite(t->sum(torch::kFloat64).item<double>())) {
      return Invalid(absl::StrCat("tensor \"", view.name, "\" holds NaN or infinite values"));
    }
    return t;
  }

  // Turns A [r,in], B [out,r] (float32) and s into a served module for base module `index`.
  // DoRA's norm terms are computed in float64.
  absl::StatusOr<std::unique_ptr<ModuleAdapter>> Build(int64_t index, ModuleAdapter::Kind kind,
                                                       torch::Tensor a, torch::Tensor b,
                                                       double s, torch::Tensor m) const {
    const LinearWeights& base =
        model_.linear(index / kNumProjections, static_cast<Projection>(index % kNumProjections));
    auto module = std::make_unique<ModuleAdapter>();
    module->kind = kind;
    module->rank = a.size(0);
    module->scale = s;
    if (kind != ModuleAdapter::Kind::kLora) {
      const torch::Tensor w = base.weight.to(torch::kFloat64);
      const torch::Tensor bs = b.to(torch::kFloat64) * s;
      a = a.to(torch::kFloat64);
      if (kind == ModuleAdapter::Kind::kDoraRow) {
        module->norm_terms = torch::stack({w.pow(2).sum(1), (torch::matmul(w, a.t()) * bs).sum(1),
                                           (torch::matmul(bs, torch::matmul(a, a.t())) * bs).sum(1)});
      } else {
        module->norm_terms = torch::stack({w.pow(2).sum(0), (torch::matmul(bs.t(), w) * a).sum(0),
                                           (torch::matmul(torch::matmul(bs.t(), bs), a) * a).sum(0)});
      }
      module->magnitude = m.reshape({-1}).to(torch::kFloat64);
      const torch::Tensor& t = module->norm_terms;
      module->gain = (module->magnitude / (t[0] + 2 * t[1] + t[2]).sqrt()).to(model_.dtype());
      if (!torch::isfinite(module->gain).all().item<bool>()) {
        return Invalid(absl::StrCat("DoRA magnitude for module ", index,
                                    " gives a non-finite gain (a zero-norm weight row?)"));
      }
    }
    module->a = a.to(model_.dtype()).contiguous();
    module->b_t = b.t().to(model_.dtype()).contiguous();
    return module;
  }

  // Builds a module from shape-checked raw factors: LoRA, or `dora_kind` when a magnitude is
  // present. Seed-layout factors (A [in,r], B [r,out]) are transposed to A [r,in], B [out,r].
  absl::StatusOr<std::unique_ptr<ModuleAdapter>> BuildChecked(int64_t index, const RawModule& r,
                                                              ModuleAdapter::Kind dora_kind,
                                                              bool seed_layout, double s) const {
    ASSIGN_OR_RETURN(torch::Tensor a, Factor(*r.a));
    ASSIGN_OR_RETURN(torch::Tensor b, Factor(*r.b));
    torch::Tensor m;
    if (r.m) {
      ASSIGN_OR_RETURN(m, Factor(*r.m));
    }
    if (seed_layout) {
      a = a.t();
      b = b.t();
    }
    return Build(index, r.m ? dora_kind : ModuleAdapter::Kind::kLora, a, b, s, m);
  }

  const LlamaModel& model() const { return model_; }
  const AdapterLimits& limits() const { return limits_; }
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  const LlamaModel& model_;
  const AdapterLimits& limits_;
  std::map<std::string, int64_t> module_index_;
};

std::vector<int64_t> BaseShape(const LlamaModel& model, int64_t index) {
  const torch::Tensor& w =
      model.linear(index / kNumProjections, static_cast<Projection>(index % kNumProjections)).weight;
  return {w.size(0), w.size(1)};
}

// Splits a PEFT tensor key into module path and role ("lora_A", "lora_B", "m").
absl::Status ParsePeftKey(const AdapterBuilder& builder, const std::string& key,
                          std::string& path, std::string& role) {
  if (!absl::StartsWith(key, kPeftPrefix)) {
    return builder.Invalid(absl::StrCat("tensor \"", key, "\" does not start with \"", kPeftPrefix,
                                        "\" (is this a PEFT adapter_model.safetensors?)"));
  }
  const std::string rest = key.substr(sizeof(kPeftPrefix) - 1);
  struct Suffix {
    const char* text;
    const char* role;
  };
  static const Suffix kSuffixes[] = {{".lora_A.weight", "lora_A"},
                                     {".lora_B.weight", "lora_B"},
                                     {".lora_magnitude_vector.weight", "m"},
                                     {".lora_magnitude_vector", "m"}};
  for (const Suffix& s : kSuffixes) {
    if (absl::EndsWith(rest, s.text)) {
      path = rest.substr(0, rest.size() - strlen(s.text));
      role = s.role;
      return absl::OkStatus();
    }
  }
  if (absl::StrContains(rest, "lora_embedding_")) {
    return absl::UnimplementedError(absl::StrCat("adapter \"", builder.name(), "\": tensor \"", key,
                                                 "\" is an embedding adapter, which is not served yet"));
  }
  if (absl::StrContains(rest, ".lora_B.bias") || absl::StrContains(rest, ".lora_A.bias")) {
    return absl::UnimplementedError(absl::StrCat("adapter \"", builder.name(), "\": tensor \"", key,
                                                 "\" is a LoRA bias (lora_bias), not served yet"));
  }
  return absl::UnimplementedError(absl::StrCat(
      "adapter \"", builder.name(), "\": tensor \"", key,
      "\" is not a LoRA factor (modules_to_save and other PEFT extras are not served)"));
}

using ModuleList = std::vector<std::unique_ptr<ModuleAdapter>>;

absl::StatusOr<ModuleList> LoadPeft(const AdapterBuilder& builder, const std::string& config_json,
                                    const SafetensorsFile& file) {
  ASSIGN_OR_RETURN(PeftAdapterConfig config,
                   PeftAdapterConfig::FromJson(config_json, absl::StrCat("adapter \"", builder.name(),
                                                                         "\": adapter_config.json")));
  std::map<std::string, RawModule> raw;
  for (const TensorView& view : file.tensors()) {
    std::string path, role;
    RETURN_IF_ERROR(ParsePeftKey(builder, view.name, path, role));
    RawModule& r = raw[path];
    (role == "lora_A" ? r.a : role == "lora_B" ? r.b : r.m) = &view;
  }
  for (const auto& [path, r] : raw) {
    RETURN_IF_ERROR(builder.IndexOf(path).status());
    if (!config.Targets(path)) {
      return builder.Invalid(absl::StrCat("the weights hold factors for ", path,
                                          ", which adapter_config.json does not target"));
    }
  }
  ModuleList modules(builder.model().config().num_layers * kNumProjections);
  for (const auto& [path, index] : builder.modules()) {
    if (!config.Targets(path)) continue;
    auto it = raw.find(path);
    if (it == raw.end() || it->second.a == nullptr || it->second.b == nullptr) {
      return builder.Invalid(absl::StrCat("adapter_config.json targets ", path,
                                          " but the weights lack its lora_A/lora_B"));
    }
    const RawModule& r = it->second;
    if (config.use_dora != (r.m != nullptr)) {
      return builder.Invalid(absl::StrCat(
          path, config.use_dora ? " lacks lora_magnitude_vector although use_dora is set"
                                : " has lora_magnitude_vector but use_dora is not set"));
    }
    const int64_t rank = config.RankFor(path);
    if (rank > builder.limits().max_rank) {
      return builder.Precondition(absl::StrCat("rank ", rank, " of ", path,
                                               " exceeds the server's maximum ",
                                               builder.limits().max_rank));
    }
    const auto shape = BaseShape(builder.model(), index);
    RETURN_IF_ERROR(builder.CheckShape(*r.a, "lora_A", path, {rank, shape[1]}));
    RETURN_IF_ERROR(builder.CheckShape(*r.b, "lora_B", path, {shape[0], rank}));
    if (r.m) RETURN_IF_ERROR(builder.CheckShape(*r.m, "lora_magnitude_vector", path, {shape[0]}));
    ASSIGN_OR_RETURN(modules[index], builder.BuildChecked(index, r, ModuleAdapter::Kind::kDoraRow,
                                                          /*seed_layout=*/false, config.ScaleFor(path)));
  }
  return modules;
}

absl::StatusOr<ModuleList> LoadSeed(const AdapterBuilder& builder, const std::string& config_json,
                                    const SafetensorsFile& file) {
  ASSIGN_OR_RETURN(SeedAdapterConfig config,
                   SeedAdapterConfig::FromJson(config_json, absl::StrCat("adapter \"", builder.name(),
                                                                         "\": seed config")));
  std::map<std::string, RawModule> raw;
  for (const TensorView& view : file.tensors()) {
    const size_t dot = view.name.rfind('.');
    const std::string role = dot == std::string::npos ? "" : view.name.substr(dot + 1);
    if (role != "A" && role != "B" && role != "m") {
      return builder.Invalid(absl::StrCat("seed tensor \"", view.name,
                                          "\" must be named <module path>.A, .B or .m"));
    }
    RawModule& r = raw[view.name.substr(0, dot)];
    (role == "A" ? r.a : role == "B" ? r.b : r.m) = &view;
  }
  if (raw.empty()) return builder.Invalid("the seed weights hold no tensors");
  ModuleList modules(builder.model().config().num_layers * kNumProjections);
  for (const auto& [path, r] : raw) {
    ASSIGN_OR_RETURN(const int64_t index, builder.IndexOf(path));
    if (r.a == nullptr || r.b == nullptr) {
      return builder.Invalid(absl::StrCat(path, " needs both .A and .B"));
    }
    if (r.a->shape.size() != 2) return builder.Invalid(absl::StrCat(path, ".A must be 2-D [in, r]"));
    const int64_t rank = r.a->shape[1];
    if (rank <= 0 || rank > builder.limits().max_rank) {
      return builder.Precondition(absl::StrCat("rank ", rank, " of ", path,
                                               " is outside 1..", builder.limits().max_rank));
    }
    const auto shape = BaseShape(builder.model(), index);
    RETURN_IF_ERROR(builder.CheckShape(*r.a, "A", path, {shape[1], rank}));
    RETURN_IF_ERROR(builder.CheckShape(*r.b, "B", path, {rank, shape[0]}));
    if (r.m && r.m->shape != std::vector<int64_t>{shape[1]}) {
      RETURN_IF_ERROR(builder.CheckShape(*r.m, "m", path, {1, shape[1]}));
    }
    ASSIGN_OR_RETURN(modules[index], builder.BuildChecked(index, r, ModuleAdapter::Kind::kDoraCol,
                                                          /*seed_layout=*/true, config.alpha));
  }
  return modules;
}

absl::StatusOr<ModuleList> LoadModules(const AdapterBuilder& builder, AdapterFormat format,
                                       const std::string& config_json,
                                       const SafetensorsFile* file) {
  torch::NoGradGuard no_grad;
  absl::StatusOr<ModuleList> modules = absl::InternalError("unset");
  RETURN_IF_ERROR(CatchTorch(absl::StrCat("adapter \"", builder.name(), "\""), [&] {
    modules = format == AdapterFormat::kPeft ? LoadPeft(builder, config_json, *file)
                                             : LoadSeed(builder, config_json, *file);
  }));
  return modules;
}

}  // namespace

torch::Tensor ModuleAdapter::GainAt(double c) const {
  if (c == 1.0) return gain;
  const torch::Tensor norm = (norm_terms[0] + 2 * c * norm_terms[1] + c * c * norm_terms[2]).sqrt();
  return (magnitude / norm).to(gain.scalar_type());
}

int64_t ModuleAdapter::bytes() const {
  int64_t total = 0;
  for (const torch::Tensor* t : {&a, &b_t, &gain, &magnitude, &norm_terms}) {
    if (t->defined()) total += t->numel() * t->element_size();
  }
  return total;
}

std::shared_ptr<AdapterWeights> AdapterWeights::FromModules(std::string name, ModuleList modules) {
  auto weights = std::make_shared<AdapterWeights>();
  weights->name_ = std::move(name);
  for (const auto& m : modules) {
    if (!m) continue;
    weights->max_rank_ = std::max(weights->max_rank_, m->rank);
    weights->use_dora_ |= m->kind != ModuleAdapter::Kind::kLora;
    weights->bytes_ += m->bytes();
  }
  weights->modules_ = std::move(modules);
  return weights;
}

// PyTorch checkpoints (adapter_model.bin) are zip archives or bare pickles; name them rather than
// report a corrupt safetensors header.
absl::Status RefusePickle(const StoredAdapter& adapter) {
  std::ifstream in(adapter.weights_path, std::ios::binary);
  char magic[4] = {};
  in.read(magic, sizeof(magic));
  const bool zip = std::memcmp(magic, "PK\x03\x04", 4) == 0;
  const bool pickle = static_cast<unsigned char>(magic[0]) == 0x80 && magic[1] >= 2 && magic[1] <= 5;
  if (!zip && !pickle) return absl::OkStatus();
  return absl::UnimplementedError(absl::StrCat(
      "adapter \"", adapter.name, "\": the weights are a PyTorch pickle (adapter_model.bin), "
      "which is not loaded for safety; save the adapter with safe_serialization=True "
      "(adapter_model.safetensors)"));
}

absl::StatusOr<std::shared_ptr<const AdapterWeights>> AdapterWeights::Load(
    const StoredAdapter& adapter, const LlamaModel& model, const AdapterLimits& limits) {
  RETURN_IF_ERROR(RefusePickle(adapter));
  ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(adapter.weights_path));
  return FromFile(adapter, *file, model, limits);
}

absl::StatusOr<std::shared_ptr<const AdapterWeights>> AdapterWeights::FromFile(
    const StoredAdapter& adapter, const SafetensorsFile& file, const LlamaModel& model,
    const AdapterLimits& limits) {
  AdapterBuilder builder(adapter.name, model, limits);
  ASSIGN_OR_RETURN(ModuleList modules,
                   LoadModules(builder, adapter.format, adapter.config_json, &file));
  std::shared_ptr<AdapterWeights> weights = FromModules(adapter.name, std::move(modules));
  if (weights->bytes_ == 0) return builder.Invalid("it adapts no module of the base model");
  weights->version_ = adapter.version;
  return weights;
}

absl::Status AdapterWeights::Validate(const AdapterManifest& manifest,
                                      const std::string& weights_path, const LlamaModel& model,
                                      const AdapterLimits& limits) {
  StoredAdapter staged;
  staged.name = manifest.name;
  staged.format = manifest.format;
  staged.config_json = manifest.config_json;
  staged.weights_path = weights_path;
  return Load(staged, model, limits).status();
}

std::vector<std::string> AdapterWeights::target_kinds() const {
  std::set<int64_t> kinds;
  for (size_t i = 0; i < modules_.size(); ++i) {
    if (modules_[i]) kinds.insert(static_cast<int64_t>(i) % kNumProjections);
  }
  std::vector<std::string> names;
  for (int64_t k : kinds) names.push_back(kProjectionNames[k]);
  return names;
}

}  // namespace loramux
