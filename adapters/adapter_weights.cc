#include "adapters/adapter_weights.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <set>

#include <torch/torch.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "adapters/adapter_config.h"
#include "adapters/adapter_plan.h"
#include "adapters/base_modules.h"
#include "adapters/factor_arena.h"
#include "common/status_macros.h"
#include "formats/safetensors.h"
#include "tensor/tensor_util.h"

namespace loramux {
namespace {

using ModuleList = std::vector<std::unique_ptr<ModuleAdapter>>;

// A 1-D tensor of `elements` of `options`' dtype and device. On the CPU its memory is a
// FactorArena (huge pages when large: decode streams it), which the tensor keeps alive.
torch::Tensor NewArena(size_t elements, const torch::TensorOptions& options) {
  if (!options.device().is_cpu()) return torch::empty({static_cast<int64_t>(elements)}, options);
  const size_t bytes = elements * options.dtype().itemsize();
  auto arena = std::make_shared<FactorArena>((bytes + sizeof(float) - 1) / sizeof(float));
  void* data = arena->data();  // before the deleter takes the arena
  return torch::from_blob(
      data, {static_cast<int64_t>(elements)}, [keep = std::move(arena)](void*) {}, options);
}

// A view of `arena` (1-D) of `sizes` at element `offset`, sharing (and keeping alive) its memory.
torch::Tensor Slice(const torch::Tensor& arena, size_t offset, c10::IntArrayRef sizes) {
  char* data = static_cast<char*>(arena.data_ptr()) + offset * arena.element_size();
  return torch::from_blob(
      data, sizes, [keep = arena](void*) {}, arena.options());
}

// Context shared by the loading steps: names for error messages and the base's module table.
class AdapterBuilder {
 public:
  AdapterBuilder(std::string name, const BaseModules& model, const AdapterLimits& limits)
      : name_(std::move(name)), model_(model), limits_(limits) {}

  absl::Status Precondition(absl::string_view what) const {
    return absl::FailedPreconditionError(absl::StrCat("adapter \"", name_, "\": ", what));
  }
  absl::Status Invalid(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("adapter \"", name_, "\": ", what));
  }

  // Copies every planned factor into one arena in serving layout (A [r,in], B^T [r,out], then
  // DoRA's gain), converting to float32 and checking finiteness in the same pass, then moves the
  // arena to the model's device and the factor dtype (FactorDtype; in place for float32 on the
  // CPU). Returns the modules, which view `arena`.
  absl::StatusOr<ModuleList> Pack(AdapterPlan plan, torch::Tensor& arena) const {
    if (plan.empty()) return Invalid("it adapts no module of the base model");
    // Layer by layer, projection by projection: the order a forward pass reads them.
    std::sort(plan.begin(), plan.end(),
              [](const PlannedModule& x, const PlannedModule& y) { return x.index < y.index; });
    size_t floats = 0;
    for (const PlannedModule& p : plan) floats += p.floats();
    const torch::Tensor host = NewArena(floats, torch::kFloat32);
    float* data = host.data_ptr<float>();
    size_t offset = 0;
    for (const PlannedModule& p : plan) {
      // Serving layout is A [r,in] and B^T [r,out]: PEFT's B [out,r] and seed's A [in,r] flip.
      if (!CopyFactor(*p.a, /*transpose=*/p.seed_layout, data + offset)) {
        return NonFinite(*p.a);
      }
      if (!CopyFactor(*p.b, /*transpose=*/!p.seed_layout, data + offset + p.a_floats())) {
        return NonFinite(*p.b);
      }
      offset += p.floats();
    }
    const torch::ScalarType factor_dtype = FactorDtype(plan);
    const bool in_place = model_.device().is_cpu() && factor_dtype == torch::kFloat32;
    if (in_place) {
      arena = host;
    } else {
      arena = NewArena(host.numel(), host.options().device(model_.device()).dtype(factor_dtype));
      arena.copy_(host);
    }
    // DoRA gains stay in the compute dtype, whatever the factors' (float32 when they are 16-bit).
    const bool gain_in_arena = factor_dtype == model_.dtype();
    ModuleList modules(model_.num_layers() * kNumProjections);
    offset = 0;
    for (const PlannedModule& p : plan) {
      auto module = std::make_unique<ModuleAdapter>();
      module->kind = p.kind;
      module->rank = p.rank;
      module->scale = p.scale;
      module->a = Slice(arena, offset, {p.rank, p.in});
      module->b_t = Slice(arena, offset + p.a_floats(), {p.rank, p.out});
      // Finite in float32 (checked while copying), but maybe not in float16. Only the factors
      // are checked: the arena's alignment gaps hold whatever the memory held.
      if (factor_dtype == torch::kFloat16 && !(torch::isfinite(module->a).all().item<bool>() &&
                                               torch::isfinite(module->b_t).all().item<bool>())) {
        return Precondition(absl::StrCat(
            "the factors of ", model_.module_paths()[p.index],
            " exceed float16's range (±65504) and the server keeps them in float16; use "
            "--dtype and --adapter_dtype float32 or bfloat16"));
      }
      if (p.kind != ModuleAdapter::Kind::kLora) {
        module->gain =
            gain_in_arena
                ? Slice(arena, offset + p.a_floats() + p.b_floats(), {p.gain_size()})
                : torch::empty(
                      {p.gain_size()},
                      torch::TensorOptions().device(model_.device()).dtype(model_.dtype()));
        // The norm is of the factors as served (rounded, when kept in fewer bits).
        RETURN_IF_ERROR(AddDora(p, module->a, module->b_t, *module));
      }
      modules[p.index] = std::move(module);
      offset += p.floats();
    }
    return modules;
  }

 private:
  absl::Status NonFinite(const TensorView& view) const {
    return Invalid(absl::StrCat("tensor \"", view.name,
                                "\" holds NaN or infinite values (or values beyond float32)"));
  }

  // DoRA's magnitude, its squared-norm terms of W + sBA (in float64, from the served factors `a`
  // [r,in] and `b_t` [r,out]) and the gain at request scale 1, written into `module.gain`.
  absl::Status AddDora(const PlannedModule& p, const torch::Tensor& a, const torch::Tensor& b_t,
                       ModuleAdapter& module) const {
    const torch::Device device = model_.device();
    const torch::Tensor w = model_.module_weight(p.index).to(torch::kFloat64);
    const torch::Tensor a64 = a.to(device, torch::kFloat64);
    const torch::Tensor bs = b_t.t().to(device, torch::kFloat64) * p.scale;  // [out, r]
    if (p.kind == ModuleAdapter::Kind::kDoraRow) {
      module.norm_terms =
          torch::stack({w.pow(2).sum(1), (torch::matmul(w, a64.t()) * bs).sum(1),
                        (torch::matmul(bs, torch::matmul(a64, a64.t())) * bs).sum(1)});
    } else {
      module.norm_terms =
          torch::stack({w.pow(2).sum(0), (torch::matmul(bs.t(), w) * a64).sum(0),
                        (torch::matmul(torch::matmul(bs.t(), bs), a64) * a64).sum(0)});
    }
    std::vector<float> m(static_cast<size_t>(p.m->numel()));
    if (!CopyFactor(*p.m, /*transpose=*/false, m.data())) return NonFinite(*p.m);
    module.magnitude =
        torch::from_blob(m.data(), {p.m->numel()}, torch::kFloat32).to(device, torch::kFloat64);
    const torch::Tensor& t = module.norm_terms;
    const torch::Tensor gain = module.magnitude / (t[0] + 2 * t[1] + t[2]).sqrt();
    module.gain.copy_(gain);
    if (!torch::isfinite(module.gain).all().item<bool>()) {
      return Invalid(absl::StrCat("DoRA magnitude for module ", p.index,
                                  " gives a non-finite gain (a zero-norm weight row?)"));
    }
    return absl::OkStatus();
  }

 public:
  const BaseModules& model() const { return model_; }
  // The dtype the factors are kept in: the model's, except on a float32 CPU server, where
  // limits_.factors decides (kAsStored keeps a file stored wholly in bfloat16 or in float16 so).
  torch::ScalarType FactorDtype(const AdapterPlan& plan) const {
    if (!model_.device().is_cpu() || model_.dtype() != torch::kFloat32) return model_.dtype();
    switch (limits_.factors) {
      case FactorPrecision::kFloat32: return torch::kFloat32;
      case FactorPrecision::kBFloat16: return torch::kBFloat16;
      case FactorPrecision::kFloat16: return torch::kFloat16;
      case FactorPrecision::kAsStored: break;
    }
    const DType stored = plan.front().a->dtype;
    if (stored != DType::kBF16 && stored != DType::kF16) return torch::kFloat32;
    for (const PlannedModule& p : plan) {
      if (p.a->dtype != stored || p.b->dtype != stored) return torch::kFloat32;
    }
    return stored == DType::kBF16 ? torch::kBFloat16 : torch::kFloat16;
  }

  const AdapterLimits& limits() const { return limits_; }
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  const BaseModules& model_;
  const AdapterLimits& limits_;
};

// Plans, validates and packs the modules of a PEFT or seed adapter into `arena`.
absl::StatusOr<ModuleList> LoadModules(const AdapterBuilder& builder, AdapterFormat format,
                                       const std::string& config_json, const SafetensorsFile& file,
                                       torch::Tensor& arena) {
  torch::NoGradGuard no_grad;
  absl::StatusOr<ModuleList> modules = absl::InternalError("unset");
  RETURN_IF_ERROR(CatchTorch(absl::StrCat("adapter \"", builder.name(), "\""), [&] {
    absl::StatusOr<AdapterPlan> plan =
        PlanAdapter(builder.name(), format, config_json, file, builder.model(), builder.limits());
    modules = plan.ok() ? builder.Pack(*std::move(plan), arena) : plan.status();
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
  for (const torch::Tensor* t : {&a, &b_t, &gain, &gain_f32, &magnitude, &norm_terms}) {
    if (t->defined()) total += t->numel() * t->element_size();
  }
  return total;
}

std::shared_ptr<AdapterWeights> AdapterWeights::FromModules(std::string name, ModuleList modules) {
  torch::NoGradGuard no_grad;
  // Repack the factors (and DoRA gains of the factors' dtype) into one arena, the layout loaded
  // adapters have.
  torch::TensorOptions options;
  for (const auto& m : modules) {
    if (m) options = m->a.options();
  }
  auto packed = [&](const torch::Tensor& t) {
    return t.defined() && t.scalar_type() == options.dtype().toScalarType();
  };
  size_t floats = 0;
  for (const auto& m : modules) {
    if (!m) continue;
    for (const torch::Tensor* t : {&m->a, &m->b_t, &m->gain}) {
      if (packed(*t)) floats += FactorArena::Aligned(t->numel());
    }
  }
  torch::Tensor arena = NewArena(floats, options);
  size_t offset = 0;
  for (const auto& m : modules) {
    if (!m) continue;
    for (torch::Tensor* factor : {&m->a, &m->b_t, &m->gain}) {
      if (!packed(*factor)) continue;
      torch::Tensor slice = Slice(arena, offset, factor->sizes());
      slice.copy_(*factor);
      *factor = slice;
      offset += FactorArena::Aligned(slice.numel());
    }
  }
  auto weights = std::make_shared<AdapterWeights>();
  weights->name_ = std::move(name);
  weights->arena_ = std::move(arena);
  weights->SetModules(std::move(modules));
  return weights;
}

void AdapterWeights::SetModules(ModuleList modules) {
  for (const auto& m : modules) {
    if (!m) continue;
    if (m->kind == ModuleAdapter::Kind::kDoraRow && m->gain.device().is_cpu() &&
        m->gain.scalar_type() != torch::kFloat32) {
      m->gain_f32 = m->gain.to(torch::kFloat32).contiguous();
    }
    max_rank_ = std::max(max_rank_, m->rank);
    max_abs_scale_ = std::max(max_abs_scale_, std::abs(m->scale));
    use_dora_ |= m->kind != ModuleAdapter::Kind::kLora;
    bytes_ += m->bytes();
  }
  modules_ = std::move(modules);
}

// PyTorch checkpoints (adapter_model.bin) are zip archives or bare pickles; name them rather than
// report a corrupt safetensors header.
absl::Status RefusePickle(const StoredAdapter& adapter) {
  std::ifstream in(adapter.weights_path, std::ios::binary);
  char magic[4] = {};
  in.read(magic, sizeof(magic));
  const bool zip = std::memcmp(magic, "PK\x03\x04", 4) == 0;
  const bool pickle =
      static_cast<unsigned char>(magic[0]) == 0x80 && magic[1] >= 2 && magic[1] <= 5;
  if (!zip && !pickle) return absl::OkStatus();
  return absl::UnimplementedError(
      absl::StrCat("adapter \"", adapter.name,
                   "\": the weights are a PyTorch pickle (adapter_model.bin), "
                   "which is not loaded for safety; save the adapter with safe_serialization=True "
                   "(adapter_model.safetensors)"));
}

absl::StatusOr<std::shared_ptr<const AdapterWeights>> AdapterWeights::Load(
    const StoredAdapter& adapter, const BaseModules& model, const AdapterLimits& limits) {
  RETURN_IF_ERROR(RefusePickle(adapter));
  ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(adapter.weights_path));
  return FromFile(adapter, *file, model, limits);
}

absl::StatusOr<std::shared_ptr<const AdapterWeights>> AdapterWeights::FromFile(
    const StoredAdapter& adapter, const SafetensorsFile& file, const BaseModules& model,
    const AdapterLimits& limits) {
  AdapterBuilder builder(adapter.name, model, limits);
  torch::Tensor arena;
  ASSIGN_OR_RETURN(ModuleList modules,
                   LoadModules(builder, adapter.format, adapter.config_json, file, arena));
  auto weights = std::make_shared<AdapterWeights>();
  weights->name_ = adapter.name;
  weights->version_ = adapter.version;
  weights->arena_ = std::move(arena);
  weights->SetModules(std::move(modules));
  return weights;
}

absl::Status AdapterWeights::Validate(const AdapterManifest& manifest,
                                      const std::string& weights_path, const BaseModules& model,
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
