// What a server accepts of adapters and how it keeps what it accepts. Torch-free, so flags and the
// registry's options can name it.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace loramux {

// How a float32 CPU server keeps adapter factors. kAsStored keeps a file stored wholly in bfloat16
// or in float16 in those 16 bits — exact, since the decode kernel widens them as it reads, and it
// halves their memory and the bytes decode streams — and widens everything else to float32.
// kFloat32 widens all; kBFloat16 and kFloat16 narrow all (lossy for float32 files: opt-in).
// Servers computing in another dtype or on another device keep factors in the model's dtype.
enum class FactorPrecision { kAsStored, kFloat32, kBFloat16, kFloat16 };

// "auto" (kAsStored), "float32", "bfloat16" or "float16"; INVALID_ARGUMENT otherwise.
absl::StatusOr<FactorPrecision> ParseFactorPrecision(const std::string& name);

struct AdapterLimits {
  int64_t max_rank = 256;
  FactorPrecision factors = FactorPrecision::kAsStored;
};

}  // namespace loramux
