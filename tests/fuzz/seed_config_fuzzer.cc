// Fuzzes SeedAdapterConfig (adapters/adapter_config.h), the seed format's config JSON
// ({"alpha": <float>}), as uploaded with a seed adapter.
//
// Checked beyond "no crash, no UB, no leak, no uncaught exception": a refusal is INVALID_ARGUMENT
// naming the file; an accepted config's alpha is finite and is the number the JSON holds.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <nlohmann/json.hpp>

#include "adapters/adapter_config.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loramux;
  constexpr char kLabel[] = "fuzz/seed config";
  const absl::string_view json(reinterpret_cast<const char*>(data), size);
  auto config = SeedAdapterConfig::FromJson(json, kLabel);
  if (!config.ok()) {
    FUZZ_CHECK(fuzz::IsInputError(config.status(), kLabel, {absl::StatusCode::kInvalidArgument}),
               "unexpected refusal: ", config.status().ToString());
    return 0;
  }
  FUZZ_CHECK(std::isfinite(config->alpha), "alpha = ", config->alpha);
  // The reference reading: nlohmann keeps the last of duplicate keys, as FromJson must.
  const auto reference = nlohmann::json::parse(json.begin(), json.end());
  FUZZ_CHECK(reference.at("alpha").get<double>() == config->alpha, "alpha read as ", config->alpha,
             ", the JSON holds ", reference.at("alpha").dump());
  return 0;
}
