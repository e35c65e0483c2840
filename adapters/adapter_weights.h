// An adapter made ready to serve: per base module, the low-rank factors on the serving device,
// with the scale folded in and DoRA's magnitude/norm precomputed. Engine-internal (torch).
//
// B is kept transposed, [r, out], so both the GEMM path and the fused decode kernel read it
// contiguously along the output dimension.
//
// Maths (DESIGN.md): LoRA  y = W x + b + s B (A x)
//   DoRA (PEFT, per output row):   y = g ⊙ (W x + s B A x) + b,   g = m / ||W + s B A||_row
//   DoRA (seed, per input column): y = (W + s B A)(g ⊙ x) + b,    g = m / ||W + s B A||_col
// Seed adapters are stored transposed (A [in,r], B [r,out]) and scaled by alpha; loading turns them
// into the same A [r,in], B [out,r], s = alpha.
//
// Memory: all factors of one adapter live in one arena (FactorArena: huge-page backed when large),
// module after module in layer order, each A followed by its B^T and, for DoRA, its gain; the
// module tensors are views that keep the arena alive. Loading reads the file's bytes once:
// conversion to float32, the transpose into this layout and the finiteness check happen in one
// pass. Factors kept in another dtype (FactorPrecision, the model's) are converted from there.
//
// Immutable once built; safe to read from any thread. Shares no storage with the base weights.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "adapters/adapter_limits.h"
#include "adapters/adapter_plan.h"
#include "adapters/adapter_store.h"

namespace loramux {

class BaseModules;
class SafetensorsFile;

struct ModuleAdapter {
  using Kind = FactorKind;  // adapter_plan.h
  Kind kind = Kind::kLora;
  int64_t rank = 0;
  double scale = 1.0;  // s, applied with the request scale c as c·s at serving time
  torch::Tensor a;     // [r, in]
  torch::Tensor b_t;   // B^T [r, out] (the delta is c·s·(x A^T) b_t)
  // a and b_t are in the model's dtype, or 16-bit on a float32 CPU server (FactorPrecision).
  // DoRA only: gain at request scale 1, [out] (kDoraRow) or [in] (kDoraCol), model dtype,
  // contiguous.
  torch::Tensor gain;
  // DoRA per output row with a 16-bit `gain` on the CPU: the same gain widened to float32, which
  // the fused decode kernel reads (so a step widens none); undefined otherwise.
  torch::Tensor gain_f32;
  // DoRA only, float64 on the device: magnitude m and the squared-norm terms of W + c·sBA per
  // row/column: ||W||², <W, sBA>, ||sBA||², so ||W + c sBA||² = t0 + 2c t1 + c² t2 for any
  // request scale c without forming a dense matrix.
  torch::Tensor magnitude;
  torch::Tensor norm_terms;  // [3, n]

  // The DoRA gain for request scale `c` (1 returns `gain`).
  torch::Tensor GainAt(double c) const;
  int64_t bytes() const;
};

class AdapterWeights {
 public:
  // Loads and validates `adapter` (PEFT or seed) against `model`: every module exists, every shape
  // fits, rank <= limits.max_rank, every module's |s| <= kMaxAdapterScale (so finite in every
  // serving dtype), all values finite. FAILED_PRECONDITION for adapters that do not
  // fit the base, INVALID_ARGUMENT for malformed ones, UNIMPLEMENTED for unsupported PEFT
  // features; messages name the adapter, tensor, shape found and shape expected.
  static absl::StatusOr<std::shared_ptr<const AdapterWeights>> Load(const StoredAdapter& adapter,
                                                                    const BaseModules& model,
                                                                    const AdapterLimits& limits);

  // Same, from weights already in memory (the registry's host tier).
  static absl::StatusOr<std::shared_ptr<const AdapterWeights>> FromFile(
      const StoredAdapter& adapter, const SafetensorsFile& file, const BaseModules& model,
      const AdapterLimits& limits);

  // Checks without keeping anything (upload validation); same errors as Load.
  static absl::Status Validate(const AdapterManifest& manifest, const std::string& weights_path,
                               const BaseModules& model, const AdapterLimits& limits);

  // Module `index` = layer * kNumProjections + projection; nullptr when not adapted.
  const ModuleAdapter* module(int64_t index) const { return modules_[index].get(); }
  int64_t num_modules() const { return static_cast<int64_t>(modules_.size()); }

  const std::string& name() const { return name_; }
  const std::string& version() const { return version_; }
  int64_t max_rank() const { return max_rank_; }
  // The largest |s| of any module (0 with none). Loaded adapters keep it <= kMaxAdapterScale
  // (adapter_limits.h); a request scale c is safe to serve when |c| * max_abs_scale() is too.
  double max_abs_scale() const { return max_abs_scale_; }
  bool use_dora() const { return use_dora_; }
  int64_t bytes() const { return bytes_; }
  std::vector<std::string> target_kinds() const;  // e.g. {"q_proj", "v_proj"}

  // Builds an adapter directly (benchmarks, tests); the factors (and DoRA gains of their dtype)
  // are repacked into one arena.
  static std::shared_ptr<AdapterWeights> FromModules(
      std::string name, std::vector<std::unique_ptr<ModuleAdapter>> modules);

 private:
  void SetModules(std::vector<std::unique_ptr<ModuleAdapter>> modules);

  std::string name_;
  std::string version_;
  torch::Tensor arena_;  // 1-D, model dtype, on the model's device: every module's A and B^T
  std::vector<std::unique_ptr<ModuleAdapter>> modules_;
  int64_t max_rank_ = 0;
  double max_abs_scale_ = 0;
  bool use_dora_ = false;
  int64_t bytes_ = 0;
};

}  // namespace loramux
