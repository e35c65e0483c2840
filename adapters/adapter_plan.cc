#include "adapters/adapter_plan.h"

#include <cstring>
#include <map>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "adapters/adapter_config.h"
#include "common/status_macros.h"

namespace loramux {
namespace {

constexpr char kPeftPrefix[] = "base_model.model.";

// The raw tensors of one module as named in the file.
struct RawModule {
  const TensorView* a = nullptr;
  const TensorView* b = nullptr;
  const TensorView* m = nullptr;
};

std::string ShapeText(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

// What the planning steps share: the adapter's name for messages, the base's module table, limits.
class Planner {
 public:
  Planner(const std::string& name, const ModuleTable& base, const AdapterLimits& limits)
      : name_(name), base_(base), limits_(limits) {}

  absl::Status Precondition(absl::string_view what) const {
    return absl::FailedPreconditionError(absl::StrCat("adapter \"", name_, "\": ", what));
  }
  absl::Status Invalid(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("adapter \"", name_, "\": ", what));
  }

  absl::StatusOr<int64_t> IndexOf(const std::string& path) const {
    const int64_t index = base_.ModuleIndexOf(path);
    if (index < 0) {
      return Precondition(
          absl::StrCat("module \"", path,
                       "\" does not exist in the base model or is not a served linear "
                       "projection (hint: maybe the adapter was trained for another base model?)"));
    }
    return index;
  }

  // A factor must be floating point and of the expected shape.
  absl::Status CheckFactor(const TensorView& view, const std::string& role, const std::string& path,
                           std::vector<int64_t> expected) const {
    if (!IsFloatingDType(view.dtype)) {
      return Invalid(absl::StrCat("tensor \"", view.name, "\" has dtype ",
                                  std::string(DTypeName(view.dtype)),
                                  "; expected a floating point type (F32, F16, BF16, F64)"));
    }
    if (view.shape == expected) return absl::OkStatus();
    return Precondition(absl::StrCat(role, " for ", path, " has shape ", ShapeText(view.shape),
                                     ", base expects ", ShapeText(expected)));
  }

  const std::string& name() const { return name_; }
  const ModuleTable& base() const { return base_; }
  const AdapterLimits& limits() const { return limits_; }

 private:
  const std::string& name_;
  const ModuleTable& base_;
  const AdapterLimits& limits_;
};

// Splits a PEFT tensor key into module path and role ("lora_A", "lora_B", "m").
absl::Status ParsePeftKey(const Planner& builder, const std::string& key, std::string& path,
                          std::string& role) {
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
    return absl::UnimplementedError(
        absl::StrCat("adapter \"", builder.name(), "\": tensor \"", key,
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

absl::StatusOr<AdapterPlan> PlanPeft(const Planner& builder, const std::string& config_json,
                                     const SafetensorsFile& file) {
  ASSIGN_OR_RETURN(
      PeftAdapterConfig config,
      PeftAdapterConfig::FromJson(
          config_json, absl::StrCat("adapter \"", builder.name(), "\": adapter_config.json")));
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
  AdapterPlan plan;
  const std::vector<std::string>& paths = builder.base().module_paths();
  for (int64_t index = 0; index < static_cast<int64_t>(paths.size()); ++index) {
    const std::string& path = paths[index];
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
    ASSIGN_OR_RETURN(const PeftAdapterConfig::ModuleScale scale, config.ScaleOf(path));
    const int64_t rank = scale.rank;
    if (rank > builder.limits().max_rank) {
      return builder.Precondition(absl::StrCat("rank ", rank, " of ", path,
                                               " exceeds the server's maximum ",
                                               builder.limits().max_rank));
    }
    const auto shape = builder.base().module_shape(index);
    RETURN_IF_ERROR(builder.CheckFactor(*r.a, "lora_A", path, {rank, shape[1]}));
    RETURN_IF_ERROR(builder.CheckFactor(*r.b, "lora_B", path, {shape[0], rank}));
    if (r.m) RETURN_IF_ERROR(builder.CheckFactor(*r.m, "lora_magnitude_vector", path, {shape[0]}));
    plan.push_back({index, r.m ? FactorKind::kDoraRow : FactorKind::kLora, scale.scale, rank,
                    shape[1], shape[0], r.a, r.b, r.m,
                    /*seed_layout=*/false});
  }
  return plan;
}

absl::StatusOr<AdapterPlan> PlanSeed(const Planner& builder, const std::string& config_json,
                                     const SafetensorsFile& file) {
  ASSIGN_OR_RETURN(SeedAdapterConfig config,
                   SeedAdapterConfig::FromJson(
                       config_json, absl::StrCat("adapter \"", builder.name(), "\": seed config")));
  std::map<std::string, RawModule> raw;
  for (const TensorView& view : file.tensors()) {
    const size_t dot = view.name.rfind('.');
    const std::string role = dot == std::string::npos ? "" : view.name.substr(dot + 1);
    if (role != "A" && role != "B" && role != "m") {
      return builder.Invalid(
          absl::StrCat("seed tensor \"", view.name, "\" must be named <module path>.A, .B or .m"));
    }
    RawModule& r = raw[view.name.substr(0, dot)];
    (role == "A" ? r.a : role == "B" ? r.b : r.m) = &view;
  }
  if (raw.empty()) return builder.Invalid("the seed weights hold no tensors");
  AdapterPlan plan;
  for (const auto& [path, r] : raw) {
    ASSIGN_OR_RETURN(const int64_t index, builder.IndexOf(path));
    if (r.a == nullptr || r.b == nullptr) {
      return builder.Invalid(absl::StrCat(path, " needs both .A and .B"));
    }
    if (r.a->shape.size() != 2)
      return builder.Invalid(absl::StrCat(path, ".A must be 2-D [in, r]"));
    const int64_t rank = r.a->shape[1];
    if (rank <= 0 || rank > builder.limits().max_rank) {
      return builder.Precondition(
          absl::StrCat("rank ", rank, " of ", path, " is outside 1..", builder.limits().max_rank));
    }
    const auto shape = builder.base().module_shape(index);
    RETURN_IF_ERROR(builder.CheckFactor(*r.a, "A", path, {shape[1], rank}));
    RETURN_IF_ERROR(builder.CheckFactor(*r.b, "B", path, {rank, shape[0]}));
    if (r.m) {
      const bool flat = r.m->shape.size() == 1;  // [in] or [1, in]
      RETURN_IF_ERROR(builder.CheckFactor(
          *r.m, "m", path,
          flat ? std::vector<int64_t>{shape[1]} : std::vector<int64_t>{1, shape[1]}));
    }
    plan.push_back({index, r.m ? FactorKind::kDoraCol : FactorKind::kLora, config.alpha, rank,
                    shape[1], shape[0], r.a, r.b, r.m, /*seed_layout=*/true});
  }
  return plan;
}

}  // namespace

absl::StatusOr<AdapterPlan> PlanAdapter(const std::string& name, AdapterFormat format,
                                        const std::string& config_json, const SafetensorsFile& file,
                                        const ModuleTable& base, const AdapterLimits& limits) {
  const Planner planner(name, base, limits);
  return format == AdapterFormat::kPeft ? PlanPeft(planner, config_json, file)
                                        : PlanSeed(planner, config_json, file);
}

}  // namespace loramux
