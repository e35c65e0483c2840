// What adapters need of the base model they attach to, and nothing more: its linear modules
// (paths and indices), each module's weight (for shapes and DoRA's norms), the number of layers,
// the device and the dtype. The model implements it (model/llama_model.h); the adapter code
// (weights, registry) sees only this, so it builds and is tested without a model.
// It extends the torch-free ModuleTable (module_table.h) that adapter planning uses.
//
// Thread-safety: implementations are immutable once built; every method may be called from any
// thread.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "adapters/module_table.h"

namespace loramux {

class BaseModules : public ModuleTable {
 public:
  std::array<int64_t, 2> module_shape(int64_t index) const override {
    const torch::Tensor w = module_weight(index);
    return {w.size(0), w.size(1)};
  }
  // Module `index`'s weight [out, in], on device() in dtype(). It may be a fresh copy (a model
  // that keeps its weights packed unpacks one): read it once, and only for its values.
  virtual torch::Tensor module_weight(int64_t index) const = 0;
  virtual torch::Device device() const = 0;
  virtual torch::ScalarType dtype() const = 0;
};

}  // namespace loramux
