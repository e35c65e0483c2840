#include "formats/model_config.h"

#include <optional>

#include "absl/strings/str_cat.h"
#include "common/durable_file.h"
#include "common/json_value.h"
#include "common/status_macros.h"

namespace loramux {
namespace {

// config.json files are a few kilobytes; anything far larger is not one.
constexpr size_t kMaxConfigBytes = 1 << 20;
constexpr size_t kMaxListItems = 1024;  // architectures, eos_token_id

// An integer field that must be positive when present; absent gives `fallback` (or "is missing").
absl::StatusOr<int64_t> PositiveInt(const JsonValue& field,
                                    std::optional<int64_t> fallback = std::nullopt) {
  ASSIGN_OR_RETURN(const int64_t value, field.Int(fallback));
  if (field.present() && value <= 0) return field.TypeError("a positive integer");
  return value;
}

// A number field that must be positive when present.
absl::StatusOr<double> PositiveNumber(const JsonValue& field, double fallback) {
  ASSIGN_OR_RETURN(const double value, field.Number(fallback));
  if (field.present() && value <= 0) return field.TypeError("a positive number");
  return value;
}

absl::StatusOr<RopeScaling> ParseRopeScaling(const JsonValue& field, absl::string_view label) {
  RopeScaling scaling;
  if (!field.present()) return scaling;
  if (!field.is_object()) return field.TypeError("an object or null");
  ASSIGN_OR_RETURN(const std::string legacy_type, field["type"].String(""));
  ASSIGN_OR_RETURN(const std::string type, field["rope_type"].String(legacy_type));
  ASSIGN_OR_RETURN(scaling.factor, PositiveNumber(field["factor"], 1.0));
  if (type == "linear") {
    scaling.type = RopeScaling::Type::kLinear;
  } else if (type == "llama3") {
    scaling.type = RopeScaling::Type::kLlama3;
    ASSIGN_OR_RETURN(scaling.low_freq_factor, field["low_freq_factor"].Number(1.0));
    ASSIGN_OR_RETURN(scaling.high_freq_factor, field["high_freq_factor"].Number(4.0));
    ASSIGN_OR_RETURN(scaling.original_max_position_embeddings,
                     PositiveInt(field["original_max_position_embeddings"], 8192));
    if (scaling.high_freq_factor <= scaling.low_freq_factor) {
      return field.Error("needs high_freq_factor > low_freq_factor");
    }
  } else if (type == "default" || type.empty()) {
    scaling.type = RopeScaling::Type::kNone;
  } else {
    return absl::UnimplementedError(
        absl::StrCat(label, ": ", field.name(), " type \"", type,
                     "\" is not supported (supported: linear, llama3)"));
  }
  return scaling;
}

// eos_token_id: an integer or a list of integers.
absl::StatusOr<std::vector<int64_t>> ParseEos(const JsonValue& field) {
  std::vector<int64_t> ids;
  if (!field.present()) return ids;
  if (!field.is_array()) {
    absl::StatusOr<int64_t> id = field.Int();
    if (!id.ok()) return field.TypeError("an integer or a list of integers");
    ids.push_back(*id);
    return ids;
  }
  ASSIGN_OR_RETURN(const std::vector<JsonValue> items, field.Items(kMaxListItems));
  for (const JsonValue& item : items) {
    ASSIGN_OR_RETURN(const int64_t id, item.Int());
    ids.push_back(id);
  }
  return ids;
}

}  // namespace

absl::StatusOr<ModelConfig> ModelConfig::FromJson(absl::string_view text, absl::string_view label) {
  ASSIGN_OR_RETURN(const Json doc, JsonValue::ParseObject(text, label, kMaxConfigBytes));
  const JsonValue j(doc, std::string(label));
  ModelConfig c;
  const JsonValue architectures = j["architectures"];
  ASSIGN_OR_RETURN(const std::vector<JsonValue> names, architectures.Items(kMaxListItems));
  if (names.empty()) return architectures.TypeError("a non-empty list of strings");
  ASSIGN_OR_RETURN(c.architecture, names[0].String());
  const bool is_llama = c.architecture == "LlamaForCausalLM";
  const bool is_mistral = c.architecture == "MistralForCausalLM";
  const bool is_qwen2 = c.architecture == "Qwen2ForCausalLM";
  if (!is_llama && !is_mistral && !is_qwen2) {
    return absl::UnimplementedError(absl::StrCat(
        label, ": architecture \"", c.architecture,
        "\" is not supported (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)"));
  }
  ASSIGN_OR_RETURN(const std::string act, j["hidden_act"].String("silu"));
  if (act != "silu") {
    return absl::UnimplementedError(
        absl::StrCat(label, ": hidden_act \"", act, "\" is not supported (only silu)"));
  }
  ASSIGN_OR_RETURN(c.vocab_size, PositiveInt(j["vocab_size"]));
  ASSIGN_OR_RETURN(c.hidden_size, PositiveInt(j["hidden_size"]));
  ASSIGN_OR_RETURN(c.intermediate_size, PositiveInt(j["intermediate_size"]));
  ASSIGN_OR_RETURN(c.num_layers, PositiveInt(j["num_hidden_layers"]));
  ASSIGN_OR_RETURN(c.num_heads, PositiveInt(j["num_attention_heads"]));
  ASSIGN_OR_RETURN(c.num_kv_heads, PositiveInt(j["num_key_value_heads"], c.num_heads));
  ASSIGN_OR_RETURN(c.head_dim, PositiveInt(j["head_dim"], 0));
  if (c.head_dim == 0) {  // absent: hidden_size split evenly over the heads
    if (c.hidden_size % c.num_heads != 0) {
      return j["hidden_size"].Error("must be a multiple of num_attention_heads");
    }
    c.head_dim = c.hidden_size / c.num_heads;
  }
  if (c.head_dim % 2 != 0) return j["head_dim"].Error("must be even for RoPE");
  if (c.num_heads % c.num_kv_heads != 0) {
    return j["num_key_value_heads"].Error("must divide num_attention_heads");
  }
  ASSIGN_OR_RETURN(c.max_position_embeddings, PositiveInt(j["max_position_embeddings"], 2048));
  ASSIGN_OR_RETURN(c.rms_norm_eps, PositiveNumber(j["rms_norm_eps"], 1e-6));
  ASSIGN_OR_RETURN(c.rope_theta, PositiveNumber(j["rope_theta"], 10000.0));
  ASSIGN_OR_RETURN(c.rope_scaling, ParseRopeScaling(j["rope_scaling"], label));
  ASSIGN_OR_RETURN(c.tie_word_embeddings, j["tie_word_embeddings"].Bool(false));
  ASSIGN_OR_RETURN(const bool attention_bias, j["attention_bias"].Bool(false));
  c.qkv_bias = is_qwen2 || attention_bias;
  c.o_bias = !is_qwen2 && attention_bias;
  ASSIGN_OR_RETURN(c.mlp_bias, j["mlp_bias"].Bool(false));
  ASSIGN_OR_RETURN(const bool qwen2_sliding, j["use_sliding_window"].Bool(false));
  if (is_mistral || (is_qwen2 && qwen2_sliding)) {
    ASSIGN_OR_RETURN(c.sliding_window, PositiveInt(j["sliding_window"], 0));
  }
  ASSIGN_OR_RETURN(c.bos_token_id, j["bos_token_id"].Int(-1));
  ASSIGN_OR_RETURN(c.eos_token_ids, ParseEos(j["eos_token_id"]));
  return c;
}

absl::StatusOr<ModelConfig> ModelConfig::FromDirectory(const std::string& model_dir) {
  const std::string path = model_dir + "/config.json";
  absl::StatusOr<std::string> text =
      ReadSmallFile(path, kMaxConfigBytes + 1);  // FromJson names the limit
  if (!text.ok()) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot read the model config (",
                                            text.status().message(),
                                            "; is --model_dir a HuggingFace model directory?)"));
  }
  return FromJson(*text, path);
}

}  // namespace loramux
