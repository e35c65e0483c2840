// Fuzzes PeftAdapterConfig (adapters/adapter_config.h): adapter_config.json as uploaded, then the
// matching the loader runs for every base module (Targets, RankFor, AlphaFor, ScaleFor).
//
// Input: the config text, optionally followed by a NUL byte and newline-separated module paths to
// probe besides the fixed set below (a NUL cannot occur in valid JSON text, so the seeds are
// plain adapter_config.json files).
//
// Checked beyond "no crash, no UB, no leak, no uncaught exception":
//  - a refusal is INVALID_ARGUMENT or UNIMPLEMENTED and names the file;
//  - an accepted config has r > 0 and a positive finite lora_alpha, and for every probed module
//    a rank >= 1 and a positive finite alpha and scale s (the loader multiplies by them);
//  - matching is a function of the path (asking twice gives the same answer), and a module named
//    in exclude_modules is never targeted.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_split.h"
#include "adapters/adapter_config.h"
#include "tests/fuzz/fuzz_check.h"

namespace loramux {
namespace {

constexpr char kLabel[] = "fuzz/adapter_config.json";
constexpr size_t kMaxExtraPaths = 16;

// The module paths a Llama/Qwen2 base has (a few layers of them) and some odd ones.
std::vector<std::string> FixedPaths() {
  static const char* kProjections[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                       "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                       "mlp.down_proj"};
  std::vector<std::string> paths;
  for (const char* layer : {"0", "1", "7", "31"}) {
    for (const char* p : kProjections)
      paths.push_back(absl::StrCat("model.layers.", layer, ".", p));
  }
  for (const char* odd :
       {"lm_head", "model.embed_tokens", "", ".", "model.layers..q_proj",
        "model.layers.99999999999999999999.self_attn.q_proj", "model.layers.-1.mlp.up_proj"}) {
    paths.push_back(odd);
  }
  return paths;
}

void CheckModule(const PeftAdapterConfig& c, const std::string& path) {
  const bool targeted = c.Targets(path);
  FUZZ_CHECK(targeted == c.Targets(path), "Targets(\"", path, "\") changed its answer");
  if (std::find(c.exclude_list.begin(), c.exclude_list.end(), path) != c.exclude_list.end()) {
    FUZZ_CHECK(!targeted, "\"", path, "\" is excluded but targeted");
  }
  const int64_t rank = c.RankFor(path);
  FUZZ_CHECK(rank >= 1, "rank ", rank, " for \"", path, "\"");
  const double alpha = c.AlphaFor(path);
  FUZZ_CHECK(std::isfinite(alpha) && alpha > 0, "alpha ", alpha, " for \"", path, "\"");
  const double scale = c.ScaleFor(path);
  FUZZ_CHECK(std::isfinite(scale) && scale > 0, "scale ", scale, " for \"", path, "\"");
}

}  // namespace
}  // namespace loramux

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loramux;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string_view json = input.substr(0, nul);

  auto config = PeftAdapterConfig::FromJson(absl::string_view(json.data(), json.size()), kLabel);
  if (!config.ok()) {
    FUZZ_CHECK(
        fuzz::IsInputError(config.status(), kLabel,
                           {absl::StatusCode::kInvalidArgument, absl::StatusCode::kUnimplemented}),
        "unexpected refusal: ", config.status().ToString());
    return 0;
  }
  const PeftAdapterConfig& c = *config;
  FUZZ_CHECK(c.r >= 1, "r = ", c.r);
  FUZZ_CHECK(std::isfinite(c.lora_alpha) && c.lora_alpha > 0, "lora_alpha = ", c.lora_alpha);
  static const std::vector<std::string> kFixed = FixedPaths();
  for (const std::string& path : kFixed) CheckModule(c, path);
  if (nul != std::string_view::npos) {
    std::vector<std::string> extra =
        absl::StrSplit(absl::string_view(input.data() + nul + 1, input.size() - nul - 1), '\n');
    if (extra.size() > kMaxExtraPaths) extra.resize(kMaxExtraPaths);
    for (const std::string& path : extra) CheckModule(c, path);
  }
  return 0;
}
