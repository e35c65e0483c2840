#include "text/chat_template.h"

#include "absl/strings/str_cat.h"
#include "common/durable_file.h"
#include "text/jinja_error.h"
#include "text/jinja_parser.h"
#include "text/jinja_strings.h"

namespace loramux {
namespace {

using Json = nlohmann::ordered_json;

// A special token is a string or an AddedToken object {"content": ...}; null means unset.
absl::StatusOr<std::optional<std::string>> SpecialToken(const Json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::optional<std::string>();
  if (it->is_string()) return std::optional<std::string>(it->get<std::string>());
  if (it->is_object()) {
    auto content = it->find("content");
    if (content != it->end() && content->is_string()) {
      return std::optional<std::string>(content->get<std::string>());
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("tokenizer_config.json: \"", key,
                   "\" must be a string or an object with a string \"content\""));
}

absl::StatusOr<std::string> TemplateSource(const Json& config) {
  auto it = config.find("chat_template");
  if (it == config.end() || it->is_null()) {
    return absl::NotFoundError(
        "tokenizer_config.json has no \"chat_template\"; this model cannot render conversations");
  }
  if (it->is_string()) return it->get<std::string>();
  if (it->is_array()) {
    std::string names;
    for (const Json& entry : *it) {
      if (!entry.is_object() || !entry.contains("name") || !entry.contains("template") ||
          !entry["name"].is_string() || !entry["template"].is_string()) {
        return absl::InvalidArgumentError(
            "tokenizer_config.json: each entry of a \"chat_template\" list must be {\"name\": ..., "
            "\"template\": ...}");
      }
      if (entry["name"] == "default") return entry["template"].get<std::string>();
      absl::StrAppend(&names, names.empty() ? "" : ", ", entry["name"].get<std::string>());
    }
    return absl::NotFoundError(absl::StrCat("tokenizer_config.json lists chat templates (", names,
                                            ") but none named \"default\""));
  }
  return absl::InvalidArgumentError(
      "tokenizer_config.json: \"chat_template\" must be a string or a list");
}

absl::StatusOr<Json> ParseJson(std::string_view text, const char* what) {
  Json json = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded())
    return absl::InvalidArgumentError(absl::StrCat(what, " is not valid JSON"));
  return json;
}

}  // namespace

absl::StatusOr<ChatTemplate> ChatTemplate::FromSource(std::string_view source,
                                                      ChatSpecialTokens tokens,
                                                      const jinja::RenderLimits& limits) {
  if (!jinja::IsValidUtf8(source))
    return absl::InvalidArgumentError("chat template is not valid UTF-8");
  ChatTemplate t;
  t.source_ = std::string(source);
  t.tokens_ = std::move(tokens);
  t.limits_ = limits;
  try {
    t.program_ = std::make_shared<const jinja::StmtList>(jinja::Parse(source));
  } catch (const jinja::JinjaError& e) {
    if (e.status.code() != absl::StatusCode::kFailedPrecondition) return e.status;
    t.support_ = e.status;  // loaded, but every render reports what is missing
  }
  return t;
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromTokenizerConfig(std::string_view json,
                                                               const jinja::RenderLimits& limits) {
  absl::StatusOr<Json> config = ParseJson(json, "tokenizer_config.json");
  if (!config.ok()) return config.status();
  if (!config->is_object())
    return absl::InvalidArgumentError("tokenizer_config.json must hold a JSON object");
  absl::StatusOr<std::string> source = TemplateSource(*config);
  if (!source.ok()) return source.status();
  ChatSpecialTokens tokens;
  const std::pair<const char*, std::optional<std::string>*> fields[] = {
      {"bos_token", &tokens.bos_token},
      {"eos_token", &tokens.eos_token},
      {"unk_token", &tokens.unk_token},
      {"pad_token", &tokens.pad_token}};
  for (const auto& [key, field] : fields) {
    absl::StatusOr<std::optional<std::string>> value = SpecialToken(*config, key);
    if (!value.ok()) return value.status();
    *field = *std::move(value);
  }
  return FromSource(*source, std::move(tokens), limits);
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromModelDir(const std::string& model_dir,
                                                        const jinja::RenderLimits& limits) {
  const std::string path = model_dir + "/tokenizer_config.json";
  absl::StatusOr<std::string> text = ReadSmallFile(path, 16 << 20);
  if (absl::IsNotFound(text.status()))
    return absl::NotFoundError(absl::StrCat("cannot open ", path));
  if (!text.ok()) return text.status();
  absl::StatusOr<ChatTemplate> t = FromTokenizerConfig(*text, limits);
  if (!t.ok())
    return absl::Status(t.status().code(), absl::StrCat(path, ": ", t.status().message()));
  return t;
}

absl::StatusOr<std::string> ChatTemplate::Render(const Json& messages, bool add_generation_prompt,
                                                 const Json& extra_kwargs) const {
  if (!support_.ok()) return support_;
  if (!messages.is_array()) return absl::InvalidArgumentError("messages must be a JSON array");
  if (!extra_kwargs.is_null() && !extra_kwargs.is_object()) {
    return absl::InvalidArgumentError("chat template kwargs must be a JSON object");
  }
  try {
    jinja::Dict variables;
    variables.Set("messages", jinja::FromJson(messages));
    variables.Set("add_generation_prompt", jinja::Value::Bool(add_generation_prompt));
    const std::pair<const char*, const std::optional<std::string>*> fields[] = {
        {"bos_token", &tokens_.bos_token},
        {"eos_token", &tokens_.eos_token},
        {"unk_token", &tokens_.unk_token},
        {"pad_token", &tokens_.pad_token}};
    for (const auto& [key, field] : fields) {
      if (field->has_value()) variables.Set(key, jinja::Value::String(**field));
    }
    if (extra_kwargs.is_object()) {
      for (const auto& [key, value] : extra_kwargs.items())
        variables.Set(key, jinja::FromJson(value));
    }
    jinja::Interpreter interpreter(limits_, std::move(variables));
    return interpreter.Render(*program_);
  } catch (const jinja::JinjaError& e) {
    return e.status;
  }
}

absl::StatusOr<std::string> ChatTemplate::RenderJson(std::string_view messages_json,
                                                     bool add_generation_prompt,
                                                     std::string_view extra_kwargs_json) const {
  absl::StatusOr<Json> messages = ParseJson(messages_json, "messages_json");
  if (!messages.ok()) return messages.status();
  Json extra;
  if (!extra_kwargs_json.empty()) {
    absl::StatusOr<Json> parsed = ParseJson(extra_kwargs_json, "chat_template_kwargs_json");
    if (!parsed.ok()) return parsed.status();
    extra = *std::move(parsed);
  }
  return Render(*messages, add_generation_prompt, extra);
}

}  // namespace loramux
