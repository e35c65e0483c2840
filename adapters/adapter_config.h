// Adapter configurations: PEFT's adapter_config.json, and the loramux seed layout.
// Torch-free: decides which base modules an adapter targets and with which rank/alpha/scale.
//
// Module paths are the base model's dotted module names, e.g. "model.layers.3.self_attn.q_proj",
// exactly the `key` PEFT matches its patterns against for a *ForCausalLM model.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace re2 {
class RE2;
}

namespace loramux {

// adapter_config.json as written by PEFT's save_pretrained (peft_type LORA).
struct PeftAdapterConfig {
  using Regex = std::shared_ptr<const re2::RE2>;
  // A rank_pattern / alpha_pattern entry: KEY matches a module path as the regex (.*\.)?(KEY).
  template <typename T>
  struct Pattern {
    std::string field;  // as messages name it: "rank_pattern"["q_proj"]
    std::string key;
    Regex regex;  // null for keys of word characters, '-' and '.': matched without RE2
    T value;
  };

  std::string label;      // names the config in messages, e.g. adapter "sql": adapter_config.json
  int64_t r = 8;          // >= 1
  double lora_alpha = 8;  // > 0, finite
  bool use_rslora = false;
  bool use_dora = false;
  bool fan_in_fan_out = false;  // meaningless for nn.Linear targets; PEFT resets it to false
  // target_modules: a list of names (exact or dotted-suffix match), or a regex (full match), or
  // the PEFT shorthand "all-linear" (every linear layer but the output head).
  // Regexes are compiled once by FromJson (matching runs per module on every adapter load).
  std::vector<std::string> target_list;
  Regex target_regex;  // null unless target_modules is a regex string
  bool target_all_linear = false;
  std::vector<std::string> exclude_list;
  Regex exclude_regex;
  // Per-module overrides in file order (the first match wins); ranks >= 1, alphas > 0.
  std::vector<Pattern<int64_t>> rank_pattern;
  std::vector<Pattern<double>> alpha_pattern;
  std::vector<int64_t> layers_to_transform;  // empty = all layers
  std::vector<Regex> layers_pattern;         // each ^.*\.PATTERN\.(\d+)\.

  // Parses and validates. INVALID_ARGUMENT naming the field and the type or range it must have
  // for malformed fields (a wrong JSON type, a rank that is not a positive integer, an alpha that
  // is not a positive number, an invalid regex) and for a config beyond kMaxAdapterConfigBytes or
  // a list or pattern beyond kMaxAdapterConfigEntries (adapter_limits.h); UNIMPLEMENTED for PEFT
  // features loramux does not serve yet (modules_to_save, lora_bias, non-LORA peft_type, ...),
  // naming them; INVALID_ARGUMENT too when its regexes exceed kMaxAdapterConfigRegexSize RE2
  // instructions in all. Every regex is compiled here, once.
  static absl::StatusOr<PeftAdapterConfig> FromJson(absl::string_view json,
                                                    absl::string_view label);

  // Whether PEFT would inject an adapter into `module_path`.
  // Each of these costs O(patterns) regex matches of the path (each linear in its length).
  bool Targets(const std::string& module_path) const;
  int64_t RankFor(const std::string& module_path) const;
  double AlphaFor(const std::string& module_path) const;
  // s = alpha / r, or alpha / sqrt(r) with use_rslora.
  double ScaleFor(const std::string& module_path) const;
  // Rank and scale s of `module_path`, found with one pass over each pattern list (what loading
  // uses); INVALID_ARGUMENT naming the module and the alpha and rank fields that give its scale
  // when |s| > kMaxAdapterScale (e.g. lora_alpha 1e38).
  struct ModuleScale {
    int64_t rank = 0;
    double scale = 0;
  };
  absl::StatusOr<ModuleScale> ScaleOf(const std::string& module_path) const;
};

// The seed convention (the original from-scratch LoRALayer / LinearWithLoRA / LinearWithDoRA):
// config JSON {"alpha": <float>}; tensors "<module path>.A" [in, r], "<module path>.B" [r, out],
// and for DoRA "<module path>.m" [1, in] or [in] (magnitude per input column).
// y = W x + b + alpha * (x A B);  DoRA: y = (W + alpha (A B)^T)(g * x) + b, g = m / ||.||_col.
struct SeedAdapterConfig {
  double alpha = 1.0;  // every module's scale s: finite, |alpha| <= kMaxAdapterScale
  // INVALID_ARGUMENT naming the field for a config that is not such an object (or is beyond
  // kMaxAdapterConfigBytes).
  static absl::StatusOr<SeedAdapterConfig> FromJson(absl::string_view json,
                                                    absl::string_view label);
};

}  // namespace loramux
