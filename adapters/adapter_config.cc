#include "adapters/adapter_config.h"

#include <algorithm>
#include <cmath>

#include <re2/re2.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "adapters/adapter_limits.h"
#include "common/json_value.h"
#include "common/status_macros.h"

namespace loramux {
namespace {

using Regex = PeftAdapterConfig::Regex;

bool IsSet(const JsonValue& field) {
  if (!field.present()) return false;
  const Json& v = *field.raw();
  if (v.is_boolean()) return v.get<bool>();
  if (v.is_string()) return !v.get<std::string>().empty() && v.get<std::string>() != "none";
  if (v.is_array() || v.is_object()) return !v.empty();
  return true;
}

// Fields PEFT may write that change the maths; refuse them rather than serve something else.
absl::Status RefuseUnsupported(const JsonValue& j, absl::string_view label) {
  ASSIGN_OR_RETURN(const std::string peft_type, j["peft_type"].String("LORA"));
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
    if (IsSet(j[f.field])) {
      return absl::UnimplementedError(
          absl::StrCat(label, ": \"", f.field, "\" is not supported (", f.why, ")"));
    }
  }
  ASSIGN_OR_RETURN(const std::string bias, j["bias"].String("none"));
  if (bias != "none") {
    return absl::UnimplementedError(
        absl::StrCat(label, ": bias \"", bias,
                     "\" is not supported (trained base biases would change the base)"));
  }
  return absl::OkStatus();
}

// A LoRA rank: a JSON integer >= 1 (0.5 would truncate to a rank-0 module with s = alpha / 0).
absl::StatusOr<int64_t> ReadRank(const JsonValue& field) {
  absl::StatusOr<int64_t> rank = field.Int();
  if (rank.ok() && *rank >= 1) return rank;
  return field.present() ? field.TypeError("a positive integer (a LoRA rank)") : rank.status();
}

// A LoRA alpha: a finite number > 0.
absl::StatusOr<double> ReadAlpha(const JsonValue& field) {
  absl::StatusOr<double> alpha = field.Number();
  if (alpha.ok() && *alpha > 0) return alpha;
  return field.present() ? field.TypeError("a positive number (a LoRA alpha)") : alpha.status();
}

// Compiles a config's regexes within a budget of RE2 program instructions for all of them
// (kMaxAdapterConfigRegexSize), so that compiling costs milliseconds whatever the keys are (1,000
// keys like ".{1000}" once took seconds). RE2 then matches in time linear in the input.
class RegexCompiler {
 public:
  // `pattern` compiled, or INVALID_ARGUMENT naming `field` when it is invalid or over budget.
  absl::StatusOr<Regex> Compile(const std::string& pattern, const JsonValue& field) {
    RE2::Options options(RE2::Quiet);
    options.set_max_mem(kRegexMaxMem);  // stops the compiler early on a huge pattern
    auto re = std::make_shared<const RE2>(pattern, options);
    if (!re->ok()) {
      return field.Error(
          absl::StrCat("holds an invalid or too complex regular expression (", re->error(), ")"));
    }
    budget_ -= re->ProgramSize();
    if (budget_ < 0) {
      return field.Error(absl::StrCat("brings the config's regular expressions past ",
                                      kMaxAdapterConfigRegexSize,
                                      " RE2 instructions in all; use fewer or simpler patterns "
                                      "(plain module names cost none)"));
    }
    return Regex(std::move(re));
  }

 private:
  // One pattern's compile memory: about 1,300 instructions, far beyond any module-name pattern.
  static constexpr int64_t kRegexMaxMem = 64 << 10;
  int64_t budget_ = kMaxAdapterConfigRegexSize;
};

// A rank_pattern / alpha_pattern key that needs no regex engine: only word characters, '-' and
// '.', where '.' (a regex wildcard) matches any one character.
bool IsSimpleKey(const std::string& key) {
  return !key.empty() && std::all_of(key.begin(), key.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.';
  });
}

// Whether `path` full-matches (.*\.)?(KEY) for a simple key: its last key.size() characters
// match KEY ('.' any character) and what comes before them is empty or ends with a dot.
bool SimpleKeyMatches(absl::string_view path, absl::string_view key) {
  if (path.size() < key.size()) return false;
  const size_t start = path.size() - key.size();
  if (start > 0 && path[start - 1] != '.') return false;
  for (size_t i = 0; i < key.size(); ++i) {
    if (key[i] != '.' && key[i] != path[start + i]) return false;
  }
  return true;
}

// target_modules / exclude_modules: a regex string, or a list of names.
absl::Status ParseNameSpec(const JsonValue& field, RegexCompiler& compiler,
                           std::vector<std::string>& list, Regex& regex) {
  if (!field.present()) return absl::OkStatus();
  if (field.is_string()) {
    ASSIGN_OR_RETURN(const std::string pattern, field.String());
    ASSIGN_OR_RETURN(regex, compiler.Compile(pattern, field));
    return absl::OkStatus();
  }
  if (!field.is_array()) return field.TypeError("a list of module names or a regex string");
  ASSIGN_OR_RETURN(const std::vector<JsonValue> items, field.Items(kMaxAdapterConfigEntries));
  for (const JsonValue& item : items) {
    ASSIGN_OR_RETURN(std::string name, item.String());
    list.push_back(std::move(name));
  }
  return absl::OkStatus();
}

// rank_pattern / alpha_pattern: an object of module pattern -> value, each value read by `read`.
template <typename T, typename Read>
absl::Status ParsePattern(const JsonValue& field, Read read, RegexCompiler& compiler,
                          std::vector<PeftAdapterConfig::Pattern<T>>& out) {
  ASSIGN_OR_RETURN(const auto entries, field.Entries(kMaxAdapterConfigEntries));
  for (const auto& [key, value] : entries) {
    ASSIGN_OR_RETURN(T parsed, read(value));
    Regex re;  // simple keys are matched without one
    if (!IsSimpleKey(key)) {
      ASSIGN_OR_RETURN(re, compiler.Compile(absl::StrCat("(.*\\.)?(", key, ")"), value));
    }
    out.push_back({value.name(), key, std::move(re), parsed});
  }
  return absl::OkStatus();
}

// layers_to_transform: an integer or a list of integers.
absl::Status ParseLayers(const JsonValue& field, std::vector<int64_t>& layers) {
  if (!field.present()) return absl::OkStatus();
  if (!field.is_array()) {
    absl::StatusOr<int64_t> layer = field.Int();
    if (!layer.ok()) return field.TypeError("an integer or a list of integers");
    layers.push_back(*layer);
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(const std::vector<JsonValue> items, field.Items(kMaxAdapterConfigEntries));
  for (const JsonValue& item : items) {
    ASSIGN_OR_RETURN(const int64_t layer, item.Int());
    layers.push_back(layer);
  }
  return absl::OkStatus();
}

// layers_pattern: a string or a list of strings; each names the module list holding the layers.
absl::Status ParseLayersPattern(const JsonValue& field, RegexCompiler& compiler,
                                std::vector<Regex>& patterns) {
  if (!field.present()) return absl::OkStatus();
  std::vector<std::string> names;
  if (field.is_array()) {
    ASSIGN_OR_RETURN(const std::vector<JsonValue> items, field.Items(kMaxAdapterConfigEntries));
    for (const JsonValue& item : items) {
      ASSIGN_OR_RETURN(std::string name, item.String());
      names.push_back(std::move(name));
    }
  } else {
    absl::StatusOr<std::string> name = field.String();
    if (!name.ok()) return field.TypeError("a string or a list of strings");
    // An empty string means PEFT's default pattern, as null does.
    if (!name->empty()) names.push_back(*std::move(name));
  }
  for (const std::string& name : names) {
    ASSIGN_OR_RETURN(Regex re,
                     compiler.Compile(absl::StrCat(R"(^.*\.)", name, R"(\.(\d+)\.)"), field));
    patterns.push_back(std::move(re));
  }
  return absl::OkStatus();
}

// Module `path` is named by `key`: equal, or a dotted suffix of it.
bool NameMatches(absl::string_view path, absl::string_view key) {
  if (path.size() == key.size()) return path == key;
  return path.size() > key.size() && path[path.size() - key.size() - 1] == '.' &&
         absl::EndsWith(path, key);
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
const PeftAdapterConfig::Pattern<T>* FindPattern(
    const std::vector<PeftAdapterConfig::Pattern<T>>& patterns, const std::string& path) {
  for (const auto& pattern : patterns) {
    const bool matches =
        pattern.regex ? RE2::FullMatch(path, *pattern.regex) : SimpleKeyMatches(path, pattern.key);
    if (matches) return &pattern;
  }
  return nullptr;
}

}  // namespace

absl::StatusOr<PeftAdapterConfig> PeftAdapterConfig::FromJson(absl::string_view text,
                                                              absl::string_view label) {
  ASSIGN_OR_RETURN(const Json doc, JsonValue::ParseObject(text, label, kMaxAdapterConfigBytes));
  const JsonValue j(doc, std::string(label));
  RETURN_IF_ERROR(RefuseUnsupported(j, label));
  PeftAdapterConfig c;
  c.label = std::string(label);
  ASSIGN_OR_RETURN(c.r, ReadRank(j["r"]));
  ASSIGN_OR_RETURN(c.lora_alpha, ReadAlpha(j["lora_alpha"]));
  ASSIGN_OR_RETURN(c.use_rslora, j["use_rslora"].Bool(false));
  ASSIGN_OR_RETURN(c.use_dora, j["use_dora"].Bool(false));
  ASSIGN_OR_RETURN(c.fan_in_fan_out, j["fan_in_fan_out"].Bool(false));
  RegexCompiler compiler;
  const JsonValue targets = j["target_modules"];
  if (targets.is_string() && targets.raw()->get<std::string>() == "all-linear") {
    c.target_all_linear = true;
  } else {
    RETURN_IF_ERROR(ParseNameSpec(targets, compiler, c.target_list, c.target_regex));
    if (!c.target_regex && c.target_list.empty()) return targets.Error("is missing or empty");
  }
  RETURN_IF_ERROR(ParseNameSpec(j["exclude_modules"], compiler, c.exclude_list, c.exclude_regex));
  RETURN_IF_ERROR(ParsePattern(j["rank_pattern"], ReadRank, compiler, c.rank_pattern));
  RETURN_IF_ERROR(ParsePattern(j["alpha_pattern"], ReadAlpha, compiler, c.alpha_pattern));
  RETURN_IF_ERROR(ParseLayers(j["layers_to_transform"], c.layers_to_transform));
  RETURN_IF_ERROR(ParseLayersPattern(j["layers_pattern"], compiler, c.layers_pattern));
  return c;
}

bool PeftAdapterConfig::Targets(const std::string& path) const {
  if (ListOrRegexMatches(path, exclude_list, exclude_regex)) return false;
  if (target_regex) return RE2::FullMatch(path, *target_regex);
  // A module named in full is targeted whatever its layer, as in PEFT (layers_to_transform only
  // filters suffix matches).
  if (std::find(target_list.begin(), target_list.end(), path) != target_list.end()) return true;
  // "all-linear" expands to every linear layer's name but the output head's, then behaves as a
  // list.
  const bool named = target_all_linear ? path != "lm_head" && !absl::EndsWith(path, ".lm_head")
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
  const Pattern<int64_t>* rank = FindPattern(rank_pattern, path);
  return rank ? rank->value : r;
}

double PeftAdapterConfig::AlphaFor(const std::string& path) const {
  const Pattern<double>* alpha = FindPattern(alpha_pattern, path);
  return alpha ? alpha->value : lora_alpha;
}

double PeftAdapterConfig::ScaleFor(const std::string& path) const {
  const double rank = static_cast<double>(RankFor(path));
  return AlphaFor(path) / (use_rslora ? std::sqrt(rank) : rank);
}

absl::StatusOr<PeftAdapterConfig::ModuleScale> PeftAdapterConfig::ScaleOf(
    const std::string& path) const {
  const Pattern<int64_t>* rank_entry = FindPattern(rank_pattern, path);
  const Pattern<double>* alpha_entry = FindPattern(alpha_pattern, path);
  const int64_t rank = rank_entry ? rank_entry->value : r;
  const double alpha = alpha_entry ? alpha_entry->value : lora_alpha;
  const double root = static_cast<double>(rank);
  const double scale = alpha / (use_rslora ? std::sqrt(root) : root);
  if (std::abs(scale) <= kMaxAdapterScale) return ModuleScale{rank, scale};
  return absl::InvalidArgumentError(absl::StrCat(
      label, ": ", alpha_entry ? alpha_entry->field : "\"lora_alpha\"", " = ", alpha, " with ",
      rank_entry ? rank_entry->field : "\"r\"", " = ", rank, " scales module ", path,
      " by s = ", scale, use_rslora ? " (alpha / sqrt(r), rsLoRA)" : " (alpha / r)", ", beyond ",
      kMaxAdapterScale, ", the largest adapter scale served; lower that alpha"));
}

absl::StatusOr<SeedAdapterConfig> SeedAdapterConfig::FromJson(absl::string_view text,
                                                              absl::string_view label) {
  ASSIGN_OR_RETURN(const Json doc, JsonValue::ParseObject(text, label, kMaxAdapterConfigBytes));
  const JsonValue alpha = JsonValue(doc, std::string(label))["alpha"];
  SeedAdapterConfig c;
  ASSIGN_OR_RETURN(c.alpha, alpha.Number());
  if (std::abs(c.alpha) > kMaxAdapterScale) {
    return alpha.Error(absl::StrCat("is ", c.alpha, ", beyond ", kMaxAdapterScale,
                                    ", the largest adapter scale served (the seed layers multiply "
                                    "every module's delta by alpha)"));
  }
  return c;
}

}  // namespace loramux
