// Adapter planning: which base modules an adapter file adapts, with which factors, rank and scale,
// checked against the base's module table before a byte is converted. Torch-free: PEFT keys
// (`base_model.model.<module>.lora_A.weight`, ...), the seed layout (`<module>.A/.B/.m`), target
// matching and rank/alpha patterns (adapter_config.h), shapes against the base, rank limits. The
// weights code (adapter_weights.h) packs a plan into tensors.
//
// Thread-safety: pure functions; a plan views the SafetensorsFile it was made from, which must
// outlive it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "adapters/adapter_limits.h"
#include "adapters/adapter_store.h"
#include "adapters/factor_arena.h"
#include "adapters/module_table.h"
#include "formats/safetensors.h"

namespace loramux {

// LoRA, or DoRA with its magnitude over output rows (PEFT) or input columns (seed).
enum class FactorKind { kLora, kDoraRow, kDoraCol };

// One module to adapt, validated against the base: views into the weight file's bytes.
struct PlannedModule {
  int64_t index = 0;  // module index in the base's table
  FactorKind kind = FactorKind::kLora;
  double scale = 1.0;
  int64_t rank = 0, in = 0, out = 0;
  const TensorView* a = nullptr;  // PEFT [r, in]; seed [in, r]
  const TensorView* b = nullptr;  // PEFT [out, r]; seed [r, out]
  const TensorView* m = nullptr;  // DoRA: PEFT [out]; seed [1, in] or [in]
  bool seed_layout = false;

  // Floats of A, of B^T and of DoRA's gain in the arena, each padded to a cache line.
  size_t a_floats() const { return FactorArena::Aligned(rank * in); }
  size_t b_floats() const { return FactorArena::Aligned(rank * out); }
  int64_t gain_size() const {
    return kind == FactorKind::kLora ? 0 : kind == FactorKind::kDoraRow ? out : in;
  }
  size_t floats() const { return a_floats() + b_floats() + FactorArena::Aligned(gain_size()); }
};
using AdapterPlan = std::vector<PlannedModule>;

// Plans adapter `name` (its config JSON and weights file, in `format`) onto `base`. Modules in
// the base's index order (PEFT) or the file's (seed). INVALID_ARGUMENT for a malformed config or
// file (names, missing factors, targets the weights lack or weights the config does not target,
// factors that are not floating point); FAILED_PRECONDITION when it does not fit the base
// (unknown module, shapes, rank over limits.max_rank); UNIMPLEMENTED for PEFT features not served
// (embedding adapters, lora_bias, modules_to_save). Every message starts `adapter "<name>": `.
absl::StatusOr<AdapterPlan> PlanAdapter(const std::string& name, AdapterFormat format,
                                        const std::string& config_json, const SafetensorsFile& file,
                                        const ModuleTable& base, const AdapterLimits& limits);

}  // namespace loramux
