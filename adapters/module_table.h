// The base model's linear modules as adapter planning sees them: paths, indices and weight
// shapes, and nothing of tensors. BaseModules (base_modules.h) extends it with the weights
// themselves; planning (adapter_plan.h) needs only this, so it is tested without LibTorch.
//
// Module indices: layer * kNumProjections + projection, over the seven projections of a Llama-
// family decoder layer.
//
// Thread-safety: implementations are immutable once built; every method may be called from any
// thread.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace loramux {

enum Projection : int64_t { kQProj, kKProj, kVProj, kOProj, kGateProj, kUpProj, kDownProj };
constexpr int64_t kNumProjections = 7;
// Sub-module path inside a decoder layer, e.g. "self_attn.q_proj".
extern const std::array<const char*, kNumProjections> kProjectionPaths;
// Short PEFT-style names, e.g. "q_proj".
extern const std::array<const char*, kNumProjections> kProjectionNames;

// "model.layers.<layer>.<projection path>".
std::string ModulePath(int64_t layer, Projection projection);
inline int64_t ModuleIndex(int64_t layer, Projection projection) {
  return layer * kNumProjections + projection;
}

class ModuleTable {
 public:
  virtual ~ModuleTable() = default;

  virtual int64_t num_layers() const = 0;
  // Every module's path by index ("model.layers.<layer>.<projection path>"), and the reverse
  // lookup (-1 when `path` is not a module).
  virtual const std::vector<std::string>& module_paths() const = 0;
  virtual int64_t ModuleIndexOf(const std::string& path) const = 0;
  // Module `index`'s weight shape {out, in}.
  virtual std::array<int64_t, 2> module_shape(int64_t index) const = 0;
};

}  // namespace loramux
