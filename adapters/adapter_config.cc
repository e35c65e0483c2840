#include "adapters/adapter_config.h"

#include <algorithm>
#include <cmath>

#include <nlohmann/json.hpp>
#include <re2/re2.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"

namespace loramux {
namespace {

using Json = nlohmann::ordered_json;  // patterns are matched in file order, as PEFT does

absl::Status Invalid(absl::string_view label, absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(label, ": \"", field, "\" ", what));
}

bool IsSet(const Json& j, const char* field) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return false;
  if (it->is_boolean()) return it->get<bool>();
  if (it->is_string()) return !it->get<std::string>().empty() && it->get<std::string>() != "none";
  if (it->is_array() || it->is_object()) return !it->empty();
  return true;
}

// Fields PEFT may write that change the maths; refuse them rather than serve something else.
absl::Status RefuseUnsupported(const Json& j, absl::string_view label) {
  const std::string peft_type = j.value("peft_type", std::string("LORA"));
  if (peft_type != "LORA") {
    return absl::UnimplementedError(absl::StrCat(
        label, ": peft_type \"", peft_type, "\" is not supported; only LORA (with use_dora) is"));
  }
  struct Feature {
    const char* field;
    const char* why;
  };
  static const Feature kRefused[] = {
      {"modules_to_save", "fully fine-tuned copies of base modules would have to replace them"},
      {"lora_bias", "adapters with a bias on lora_B are not served yet"},
      {"layer_replication", "it changes the base model's layer stack"},
      {"use_qalora", "quantization-aware LoRA needs a quantized base"},
      {"target_parameters", "LoRA on raw parameters (such as MoE experts) is not served yet"},
      {"trainable_token_indices", "trained embedding rows would have to replace the base's"},
      {"alora_invocation_tokens", "activated LoRA applies only after its invocation tokens"},
  };
  for (const Feature& f : kRefused) {
    if (IsSet(j, f.field)) {
      return absl::UnimplementedError(
          absl::StrCat(label, ": \"", f.field, "\" is not supported (", f.why, ")"));
    }
  }
  const std::string bias = j.value("bias", std::string("none"));
  if (bias != "none") {
    return absl::UnimplementedError(absl::StrCat(
        label, ": bias \"", bias, "\" is not supported (trained base biases would change the base)"));
  }
  return absl::OkStatus();
}

// Compiles `pattern`, or says which field holds a bad one.
absl::StatusOr<PeftAdapterConfig::Regex> Compile(const std::string& pattern, absl::string_view label,
                                                 absl::string_view field) {
  auto re = std::make_shared<const RE2>(pattern, RE2::Quiet);
  if (!re->ok()) {
    return Invalid(label, field, absl::StrCat("holds an invalid regular expression \"", pattern, "\""));
  }
  return PeftAdapterConfig::Regex(std::move(re));
}

absl::Status ParseNameSpec(const Json& j, const char* field, absl::string_view label,
                           std::vector<std::string>& list, PeftAdapterConfig::Regex& regex) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (it->is_string()) {
    ASSIGN_OR_RETURN(regex, Compile(it->get<std::string>(), label, field));
    return absl::OkStatus();
  }
  if (!it->is_array()) return Invalid(label, field, "must be a list of names or a regex string");
  for (const auto& v : *it) {
    if (!v.is_string()) return Invalid(label, field, "must contain only strings");
    list.push_back(v.get<std::string>());
  }
  return absl::OkStatus();
}

// Module `path` is named by `key`: equal, or a dotted suffix of it.
bool NameMatches(const std::string& path, const std::string& key) {
  return path == key || absl::EndsWith(path, absl::StrCat(".", key));
}

bool ListOrRegexMatches(const std::string& path, const std::vector<std::string>& list,
                        const PeftAdapterConfig::Regex& regex) {
  if (regex) return RE2::FullMatch(path, *regex);
  for (const std::string& key : list) {
    if (NameMatches(path, key)) return true;
  }
  return false;
}

// The layer index PEFT's default pattern ^.*\.[^.]*\.(\d+)\. reads from a module path: the last
// all-digit dotted component that has a dot two components before it and a dot after it.
// Hand-written because it runs for every base module on every adapter load.
std::optional<int64_t> DefaultLayerIndex(absl::string_view path) {
  const std::vector<absl::string_view> parts = absl::StrSplit(path, '.');
  for (size_t i = parts.size() - 1; i-- > 2;) {  // i in [2, size - 2]
    const absl::string_view part = parts[i];
    if (part.empty() || part.size() > 18 ||
        !std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      continue;
    }
    int64_t index = 0;
    for (char c : part) index = index * 10 + (c - '0');
    return index;
  }
  return std::nullopt;
}

// The layer index PEFT reads from a module path, honouring layers_pattern.
std::optional<int64_t> LayerIndex(const std::string& path,
                                  const std::vector<PeftAdapterConfig::Regex>& layers_pattern) {
  if (layers_pattern.empty()) return DefaultLayerIndex(path);
  int64_t index = 0;
  for (const auto& pattern : layers_pattern) {
    if (RE2::PartialMatch(path, *pattern, &index)) return index;
  }
  return std::nullopt;
}

template <typename T>
absl::Status ParsePattern(const Json& j, const char* field, absl::string_view label,
                          std::vector<std::pair<PeftAdapterConfig::Regex, T>>& out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_object()) return Invalid(label, field, "must be an object of module -> value");
  for (const auto& [key, value] : it->items()) {
    if (!value.is_number() || value.template get<double>() <= 0) {
      return Invalid(label, field, absl::StrCat("entry \"", key, "\" must be a positive number"));
    }
    ASSIGN_OR_RETURN(PeftAdapterConfig::Regex re,
                     Compile(absl::StrCat("(.*\\.)?(", key, ")"), label, field));
    out.emplace_back(std::move(re), value.template get<T>());
  }
  return absl::OkStatus();
}

template <typename T>
const T* FindPattern(const std::vector<std::pair<PeftAdapterConfig::Regex, T>>& pattern,
                     const std::string& path) {
  for (const auto& [re, value] : pattern) {
    if (RE2::FullMatch(path, *re)) return &value;
  }
  return nullptr;
}

absl::StatusOr<Json> ParseObject(absl::string_view text, absl::string_view label) {
  Json j = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": not a JSON object"));
  }
  return j;
}

}  // namespace

absl::StatusOr<PeftAdapterConfig> PeftAdapterConfig::FromJson(absl::string_view text,
                                                              absl::string_view label) {
  ASSIGN_OR_RETURN(Json j, ParseObject(text, label));
  RETURN_IF_ERROR(RefuseUnsupported(j, label));
  PeftAdapterConfig c;
  auto r = j.find("r");
  if (r == j.end() || !r->is_number_integer() || r->get<int64_t>() <= 0) {
    return Invalid(label, "r", "must be a positive integer");
  }
  c.r = r->get<int64_t>();
  auto alpha = j.find("lora_alpha");
  if (alpha == j.end() || !alpha->is_number() || alpha->get<double>() <= 0) {
    return Invalid(label, "lora_alpha", "must be a positive number");
  }
  c.lora_alpha = alpha->get<double>();
  c.use_rslora = j.value("use_rslora", false);
  c.use_dora = j.value("use_dora", false);
  c.fan_in_fan_out = j.value("fan_in_fan_out", false);
  auto targets = j.find("target_modules");
  if (targets != j.end() && targets->is_string() && targets->get<std::string>() == "all-linear") {
    c.target_all_linear = true;
  } else {
    RETURN_IF_ERROR(ParseNameSpec(j, "target_modules", label, c.target_list, c.target_regex));
    if (!c.target_regex && c.target_list.empty()) {
      return Invalid(label, "target_modules", "is missing or empty");
    }
  }
  RETURN_IF_ERROR(ParseNameSpec(j, "exclude_modules", label, c.exclude_list, c.exclude_regex));
  RETURN_IF_ERROR(ParsePattern(j, "rank_pattern", label, c.rank_pattern));
  RETURN_IF_ERROR(ParsePattern(j, "alpha_pattern", label, c.alpha_pattern));
  auto layers = j.find("layers_to_transform");
  if (layers != j.end() && !layers->is_null()) {
    if (layers->is_number_integer()) {
      c.layers_to_transform.push_back(layers->get<int64_t>());
    } else if (layers->is_array()) {
      for (const auto& v : *layers) {
        if (!v.is_number_integer()) return Invalid(label, "layers_to_transform", "must hold integers");
        c.layers_to_transform.push_back(v.get<int64_t>());
      }
    } else {
      return Invalid(label, "layers_to_transform", "must be an integer or a list of integers");
    }
  }
  auto pattern = j.find("layers_pattern");
  if (pattern != j.end() && !pattern->is_null()) {
    std::vector<std::string> names;
    if (pattern->is_string()) {
      // An empty string means PEFT's default pattern, as null does.
      if (!pattern->get<std::string>().empty()) names.push_back(pattern->get<std::string>());
    } else if (pattern->is_array()) {
      for (const auto& v : *pattern) {
        if (!v.is_string()) return Invalid(label, "layers_pattern", "must hold strings");
        names.push_back(v.get<std::string>());
      }
    } else {
      return Invalid(label, "layers_pattern", "must be a string or a list of strings");
    }
    for (const std::string& name : names) {
      ASSIGN_OR_RETURN(PeftAdapterConfig::Regex re,
                       Compile(absl::StrCat(R"(^.*\.)", name, R"(\.(\d+)\.)"), label, "layers_pattern"));
      c.layers_pattern.push_back(std::move(re));
    }
  }
  return c;
}

bool PeftAdapterConfig::Targets(const std::string& path) const {
  if (ListOrRegexMatches(path, exclude_list, exclude_regex)) return false;
  if (target_regex) return RE2::FullMatch(path, *target_regex);
  // A module named in full is targeted whatever its layer, as in PEFT (layers_to_transform only
  // filters suffix matches).
  if (std::find(target_list.begin(), target_list.end(), path) != target_list.end()) return true;
  // "all-linear" expands to every linear layer's name but the output head's, then behaves as a list.
  const bool named = target_all_linear
                         ? path != "lm_head" && !absl::EndsWith(path, ".lm_head")
                         : ListOrRegexMatches(path, target_list, nullptr);
  if (!named) return false;
  if (layers_to_transform.empty()) return true;
  const std::optional<int64_t> layer = LayerIndex(path, layers_pattern);
  if (!layer) return false;
  for (int64_t wanted : layers_to_transform) {
    if (wanted == *layer) return true;
  }
  return false;
}

int64_t PeftAdapterConfig::RankFor(const std::string& path) const {
  const int64_t* rank = FindPattern(rank_pattern, path);
  return rank ? *rank : r;
}

double PeftAdapterConfig::AlphaFor(const std::string& path) const {
  const double* alpha = FindPattern(alpha_pattern, path);
  return alpha ? *alpha : lora_alpha;
}

double PeftAdapterConfig::ScaleFor(const std::string& path) const {
  const double rank = static_cast<double>(RankFor(path));
  return AlphaFor(path) / (use_rslora ? std::sqrt(rank) : rank);
}

absl::StatusOr<SeedAdapterConfig> SeedAdapterConfig::FromJson(absl::string_view text,
                                                              absl::string_view label) {
  ASSIGN_OR_RETURN(Json j, ParseObject(text, label));
  auto alpha = j.find("alpha");
  if (alpha == j.end() || !alpha->is_number() || !std::isfinite(alpha->get<double>())) {
    return Invalid(label, "alpha", "must be a finite number (the seed layers' multiplier)");
  }
  SeedAdapterConfig c;
  c.alpha = alpha->get<double>();
  return c;
}

}  // namespace loramux
