#include "adapters/adapter_limits.h"

#include "absl/strings/str_cat.h"

namespace loramux {

absl::StatusOr<FactorPrecision> ParseFactorPrecision(const std::string& name) {
  if (name == "auto") return FactorPrecision::kAsStored;
  if (name == "float32") return FactorPrecision::kFloat32;
  if (name == "bfloat16") return FactorPrecision::kBFloat16;
  if (name == "float16") return FactorPrecision::kFloat16;
  return absl::InvalidArgumentError(absl::StrCat(
      "adapter dtype \"", name, "\" is unknown; use auto, float32, bfloat16 or float16"));
}

}  // namespace loramux
