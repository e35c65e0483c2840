#include "server/model_config.h"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace loramux {
namespace {

using Json = nlohmann::json;

absl::Status FieldError(absl::string_view label, absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(label, ": field \"", field, "\" ", what));
}

// Reads an integer field; `required` fields must be present and positive.
absl::StatusOr<int64_t> IntField(const Json& j, absl::string_view label, const char* field,
                                 int64_t fallback, bool required) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) {
    if (required) return FieldError(label, field, "is missing");
    return fallback;
  }
  if (!it->is_number_integer()) return FieldError(label, field, "must be an integer");
  const int64_t value = it->get<int64_t>();
  if (value <= 0) return FieldError(label, field, absl::StrCat("must be positive, got ", value));
  return value;
}

absl::StatusOr<double> DoubleField(const Json& j, absl::string_view label, const char* field,
                                   double fallback) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number()) return FieldError(label, field, "must be a number");
  return it->get<double>();
}

bool BoolField(const Json& j, const char* field, bool fallback) {
  auto it = j.find(field);
  return (it != j.end() && it->is_boolean()) ? it->get<bool>() : fallback;
}

absl::StatusOr<RopeScaling> ParseRopeScaling(const Json& j, absl::string_view label) {
  RopeScaling scaling;
  auto it = j.find("rope_scaling");
  if (it == j.end() || it->is_null()) return scaling;
  if (!it->is_object()) return FieldError(label, "rope_scaling", "must be an object or null");
  std::string type = it->value("rope_type", it->value("type", std::string()));
  ASSIGN_OR_RETURN(scaling.factor, DoubleField(*it, label, "factor", 1.0));
  if (scaling.factor <= 0) return FieldError(label, "rope_scaling.factor", "must be positive");
  if (type == "linear") {
    scaling.type = RopeScaling::Type::kLinear;
  } else if (type == "llama3") {
    scaling.type = RopeScaling::Type::kLlama3;
    ASSIGN_OR_RETURN(scaling.low_freq_factor, DoubleField(*it, label, "low_freq_factor", 1.0));
    ASSIGN_OR_RETURN(scaling.high_freq_factor, DoubleField(*it, label, "high_freq_factor", 4.0));
    ASSIGN_OR_RETURN(scaling.original_max_position_embeddings,
                     IntField(*it, label, "original_max_position_embeddings", 8192, false));
    if (scaling.high_freq_factor <= scaling.low_freq_factor) {
      return FieldError(label, "rope_scaling", "needs high_freq_factor > low_freq_factor");
    }
  } else if (type == "default" || type.empty()) {
    scaling.type = RopeScaling::Type::kNone;
  } else {
    return absl::UnimplementedError(absl::StrCat(
        label, ": rope_scaling type \"", type, "\" is not supported (supported: linear, llama3)"));
  }
  return scaling;
}

absl::StatusOr<std::vector<int64_t>> ParseEos(const Json& j, absl::string_view label) {
  std::vector<int64_t> ids;
  auto it = j.find("eos_token_id");
  if (it == j.end() || it->is_null()) return ids;
  if (it->is_number_integer()) {
    ids.push_back(it->get<int64_t>());
  } else if (it->is_array()) {
    for (const auto& v : *it) {
      if (!v.is_number_integer()) return FieldError(label, "eos_token_id", "must hold integers");
      ids.push_back(v.get<int64_t>());
    }
  } else {
    return FieldError(label, "eos_token_id", "must be an integer or a list of integers");
  }
  return ids;
}

}  // namespace

absl::StatusOr<ModelConfig> ModelConfig::FromJson(absl::string_view text, absl::string_view label) {
  Json j = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": not a JSON object"));
  }
  ModelConfig c;
  auto arch = j.find("architectures");
  if (arch == j.end() || !arch->is_array() || arch->empty() || !(*arch)[0].is_string()) {
    return FieldError(label, "architectures", "must be a non-empty list of strings");
  }
  c.architecture = (*arch)[0].get<std::string>();
  const bool is_llama = c.architecture == "LlamaForCausalLM";
  const bool is_mistral = c.architecture == "MistralForCausalLM";
  const bool is_qwen2 = c.architecture == "Qwen2ForCausalLM";
  if (!is_llama && !is_mistral && !is_qwen2) {
    return absl::UnimplementedError(absl::StrCat(
        label, ": architecture \"", c.architecture,
        "\" is not supported (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)"));
  }
  const std::string act = j.value("hidden_act", std::string("silu"));
  if (act != "silu") {
    return absl::UnimplementedError(
        absl::StrCat(label, ": hidden_act \"", act, "\" is not supported (only silu)"));
  }
  ASSIGN_OR_RETURN(c.vocab_size, IntField(j, label, "vocab_size", 0, true));
  ASSIGN_OR_RETURN(c.hidden_size, IntField(j, label, "hidden_size", 0, true));
  ASSIGN_OR_RETURN(c.intermediate_size, IntField(j, label, "intermediate_size", 0, true));
  ASSIGN_OR_RETURN(c.num_layers, IntField(j, label, "num_hidden_layers", 0, true));
  ASSIGN_OR_RETURN(c.num_heads, IntField(j, label, "num_attention_heads", 0, true));
  ASSIGN_OR_RETURN(c.num_kv_heads, IntField(j, label, "num_key_value_heads", c.num_heads, false));
  ASSIGN_OR_RETURN(c.head_dim, IntField(j, label, "head_dim", 0, false));
  if (c.head_dim == 0) {  // absent: hidden_size split evenly over the heads
    if (c.hidden_size % c.num_heads != 0) {
      return FieldError(label, "hidden_size", "must be a multiple of num_attention_heads");
    }
    c.head_dim = c.hidden_size / c.num_heads;
  }
  if (c.head_dim % 2 != 0) return FieldError(label, "head_dim", "must be even for RoPE");
  if (c.num_heads % c.num_kv_heads != 0) {
    return FieldError(label, "num_key_value_heads", "must divide num_attention_heads");
  }
  ASSIGN_OR_RETURN(c.max_position_embeddings,
                   IntField(j, label, "max_position_embeddings", 2048, false));
  ASSIGN_OR_RETURN(c.rms_norm_eps, DoubleField(j, label, "rms_norm_eps", 1e-6));
  ASSIGN_OR_RETURN(c.rope_theta, DoubleField(j, label, "rope_theta", 10000.0));
  if (c.rms_norm_eps <= 0 || c.rope_theta <= 0) {
    return FieldError(label, "rms_norm_eps/rope_theta", "must be positive");
  }
  ASSIGN_OR_RETURN(c.rope_scaling, ParseRopeScaling(j, label));
  c.tie_word_embeddings = BoolField(j, "tie_word_embeddings", false);
  c.qkv_bias = is_qwen2 || BoolField(j, "attention_bias", false);
  c.o_bias = !is_qwen2 && BoolField(j, "attention_bias", false);
  c.mlp_bias = BoolField(j, "mlp_bias", false);
  const bool sliding = is_mistral || (is_qwen2 && BoolField(j, "use_sliding_window", false));
  if (sliding) {
    ASSIGN_OR_RETURN(c.sliding_window, IntField(j, label, "sliding_window", 0, false));
  }
  auto bos = j.find("bos_token_id");
  if (bos != j.end() && bos->is_number_integer()) c.bos_token_id = bos->get<int64_t>();
  ASSIGN_OR_RETURN(c.eos_token_ids, ParseEos(j, label));
  return c;
}

absl::StatusOr<ModelConfig> ModelConfig::FromDirectory(const std::string& model_dir) {
  const std::string path = model_dir + "/config.json";
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(
        path, ": cannot read the model config (is --model_dir a HuggingFace model directory?)"));
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  return FromJson(buffer.str(), path);
}

}  // namespace loramux
