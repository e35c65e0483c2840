// What adapters need of the base model they attach to, and nothing more: its linear modules
// (paths and indices), each module's weight (for shapes and DoRA's norms), the number of layers,
// the device and the dtype. The model implements it (server/llama_model.h); the adapter code
// (weights, registry) sees only this, so it builds and is tested without a model.
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

#include <torch/types.h>

namespace loramux {

enum Projection : int64_t { kQProj, kKProj, kVProj, kOProj, kGateProj, kUpProj, kDownProj };
constexpr int64_t kNumProjections = 7;
// Sub-module path inside a decoder layer, e.g. "self_attn.q_proj".
extern const std::array<const char*, kNumProjections> kProjectionPaths;
// Short PEFT-style names, e.g. "q_proj".
extern const std::array<const char*, kNumProjections> kProjectionNames;

// "model.layers.<layer>.<projection path>".
std::string ModulePath(int64_t layer, Projection projection);
inline int64_t ModuleIndex(int64_t layer, Projection projection) { return layer * kNumProjections + projection; }

class BaseModules {
 public:
  virtual ~BaseModules() = default;

  virtual int64_t num_layers() const = 0;
  // Every module's path by index ("model.layers.<layer>.<projection path>"), and the reverse
  // lookup (-1 when `path` is not a module).
  virtual const std::vector<std::string>& module_paths() const = 0;
  virtual int64_t ModuleIndexOf(const std::string& path) const = 0;
  // Module `index`'s weight [out, in], on device() in dtype().
  virtual const torch::Tensor& module_weight(int64_t index) const = 0;
  virtual torch::Device device() const = 0;
  virtual torch::ScalarType dtype() const = 0;
};

}  // namespace loramux
