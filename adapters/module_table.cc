#include "adapters/module_table.h"

#include "absl/strings/str_cat.h"

namespace loramux {

const std::array<const char*, kNumProjections> kProjectionPaths = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
const std::array<const char*, kNumProjections> kProjectionNames = {
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

std::string ModulePath(int64_t layer, Projection projection) {
  return absl::StrCat("model.layers.", layer, ".", kProjectionPaths[projection]);
}

}  // namespace loramux
