// Fuzzes ModelConfig::FromJson (formats/model_config.h): a base model's HuggingFace config.json,
// which comes with whatever model directory an operator points the server at.
//
// Checked beyond "no crash, no UB, no leak, no uncaught exception": a refusal is INVALID_ARGUMENT
// or UNIMPLEMENTED naming the file; an accepted config satisfies what the model code divides and
// allocates by: positive sizes, head_dim even, num_key_value_heads dividing num_attention_heads,
// positive finite rms_norm_eps, rope_theta and RoPE scaling factors, a supported architecture.
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "formats/model_config.h"
#include "tests/fuzz/fuzz_check.h"

namespace loramux {
namespace {

bool PositiveFinite(double x) { return std::isfinite(x) && x > 0; }

void CheckAccepted(const ModelConfig& c) {
  FUZZ_CHECK(c.architecture == "LlamaForCausalLM" || c.architecture == "MistralForCausalLM" ||
                 c.architecture == "Qwen2ForCausalLM",
             "architecture \"", c.architecture, "\"");
  for (int64_t size : {c.vocab_size, c.hidden_size, c.intermediate_size, c.num_layers, c.num_heads,
                       c.num_kv_heads, c.head_dim, c.max_position_embeddings}) {
    FUZZ_CHECK(size > 0, "a size is ", size);
  }
  FUZZ_CHECK(c.head_dim % 2 == 0, "head_dim ", c.head_dim, " is odd");
  FUZZ_CHECK(c.num_heads % c.num_kv_heads == 0, c.num_kv_heads, " kv heads do not divide ",
             c.num_heads);
  FUZZ_CHECK(PositiveFinite(c.rms_norm_eps), "rms_norm_eps ", c.rms_norm_eps);
  FUZZ_CHECK(PositiveFinite(c.rope_theta), "rope_theta ", c.rope_theta);
  const RopeScaling& s = c.rope_scaling;
  FUZZ_CHECK(PositiveFinite(s.factor), "rope_scaling.factor ", s.factor);
  if (s.type == RopeScaling::Type::kLlama3) {
    FUZZ_CHECK(s.high_freq_factor > s.low_freq_factor, "llama3 high_freq_factor ",
               s.high_freq_factor, " <= low_freq_factor ", s.low_freq_factor);
    FUZZ_CHECK(s.original_max_position_embeddings > 0, "original_max_position_embeddings ",
               s.original_max_position_embeddings);
  }
  FUZZ_CHECK(c.sliding_window >= 0, "sliding_window ", c.sliding_window);
}

}  // namespace
}  // namespace loramux

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loramux;
  constexpr char kLabel[] = "fuzz/config.json";
  const absl::string_view json(reinterpret_cast<const char*>(data), size);
  auto config = ModelConfig::FromJson(json, kLabel);
  if (!config.ok()) {
    FUZZ_CHECK(
        fuzz::IsInputError(config.status(), kLabel,
                           {absl::StatusCode::kInvalidArgument, absl::StatusCode::kUnimplemented}),
        "unexpected refusal: ", config.status().ToString());
    return 0;
  }
  CheckAccepted(*config);
  return 0;
}
