// What a server accepts of adapters and how it keeps what it accepts. Torch-free, so flags and the
// registry's options can name it.
#pragma once

#include <cstddef>
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

// Bounds on an adapter's config, whatever a client uploads: parsing it and matching its patterns
// against every base module then costs microseconds to milliseconds on the loader thread, not
// seconds. Generous for real configs (PEFT writes a few hundred bytes; a rank_pattern naming each
// module of an 80-layer model one by one would need 560 keys, but PEFT writes only the modules
// whose rank differs, and regex keys cover many).
inline constexpr size_t kMaxAdapterConfigBytes = 64 * 1024;
// Entries of each list or pattern object: target_modules, exclude_modules, rank_pattern,
// alpha_pattern, layers_to_transform, layers_pattern.
inline constexpr size_t kMaxAdapterConfigEntries = 256;
// RE2 program instructions of all the config's regexes together (a module-name regex takes tens;
// plain names in rank_pattern/alpha_pattern and target lists take none): bounds compile time.
inline constexpr int64_t kMaxAdapterConfigRegexSize = 65536;

// The largest |s| an adapter module may carry (s = lora_alpha / r, alpha / sqrt(r) with rsLoRA,
// or the seed format's alpha). Real adapters have |s| from about 0.1 to a few hundred. Below
// float16's largest value (65504), so every accepted s is finite in every serving dtype (float32,
// bfloat16, float16). A request's scale c multiplies it: the request validator checks c·s
// against the serving dtype with AdapterWeights::max_abs_scale().
inline constexpr double kMaxAdapterScale = 1e4;
static_assert(kMaxAdapterScale < 65504.0, "every accepted adapter scale must be finite in float16");

struct AdapterLimits {
  int64_t max_rank = 256;
  FactorPrecision factors = FactorPrecision::kAsStored;
};

}  // namespace loramux
