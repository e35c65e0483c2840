#include "text/json_fields.h"

#include "text/str_cat.h"

namespace loramux::text {

std::optional<JsonElement> OptionalField(JsonElement object, std::string_view key) {
  JsonElement value;
  if (object.at_key(key).get(value) != simdjson::SUCCESS || value.is_null()) return std::nullopt;
  return value;
}

absl::Status JsonError(std::string_view where, std::string_view message) {
  return absl::InvalidArgumentError(Cat("tokenizer.json: ", where, ": ", message));
}

absl::Status Unsupported(std::string_view what, std::string_view hint) {
  return absl::UnimplementedError(Cat("tokenizer.json: ", what, " is not supported",
                                               hint.empty() ? "" : " (", hint,
                                               hint.empty() ? "" : ")"));
}

absl::StatusOr<std::string_view> StringField(JsonElement object, std::string_view key,
                                             std::string_view where) {
  std::optional<JsonElement> value = OptionalField(object, key);
  if (!value) return JsonError(where, Cat("field \"", key, "\" is missing"));
  std::string_view s;
  if (value->get_string().get(s) != simdjson::SUCCESS) {
    return JsonError(where, Cat("field \"", key, "\" must be a string"));
  }
  return s;
}

absl::StatusOr<std::optional<std::string_view>> OptionalStringField(JsonElement object,
                                                                    std::string_view key,
                                                                    std::string_view where) {
  if (!OptionalField(object, key)) return std::optional<std::string_view>();
  auto s = StringField(object, key, where);
  if (!s.ok()) return s.status();
  return std::optional<std::string_view>(*s);
}

absl::StatusOr<bool> BoolField(JsonElement object, std::string_view key, std::string_view where,
                               std::optional<bool> fallback) {
  std::optional<JsonElement> value = OptionalField(object, key);
  if (!value) {
    if (fallback) return *fallback;
    return JsonError(where, Cat("field \"", key, "\" is missing"));
  }
  bool b = false;
  if (value->get_bool().get(b) != simdjson::SUCCESS) {
    return JsonError(where, Cat("field \"", key, "\" must be true or false"));
  }
  return b;
}

absl::StatusOr<int64_t> IntField(JsonElement object, std::string_view key, std::string_view where,
                                 std::optional<int64_t> fallback) {
  std::optional<JsonElement> value = OptionalField(object, key);
  if (!value) {
    if (fallback) return *fallback;
    return JsonError(where, Cat("field \"", key, "\" is missing"));
  }
  int64_t i = 0;
  if (value->get_int64().get(i) != simdjson::SUCCESS) {
    return JsonError(where, Cat("field \"", key, "\" must be an integer"));
  }
  return i;
}

absl::StatusOr<simdjson::dom::array> ArrayField(JsonElement object, std::string_view key,
                                                std::string_view where) {
  std::optional<JsonElement> value = OptionalField(object, key);
  if (!value) return JsonError(where, Cat("field \"", key, "\" is missing"));
  simdjson::dom::array array;
  if (value->get_array().get(array) != simdjson::SUCCESS) {
    return JsonError(where, Cat("field \"", key, "\" must be an array"));
  }
  return array;
}

absl::StatusOr<std::string_view> ComponentType(JsonElement object, std::string_view where) {
  if (!object.is_object()) return JsonError(where, "must be an object");
  return StringField(object, "type", where);
}

absl::StatusOr<PatternSpec> PatternField(JsonElement object, std::string_view where) {
  std::optional<JsonElement> pattern = OptionalField(object, "pattern");
  if (!pattern || !pattern->is_object()) {
    return JsonError(where, "field \"pattern\" must be {\"String\": ...} or {\"Regex\": ...}");
  }
  PatternSpec spec;
  if (OptionalField(*pattern, "Regex")) {
    auto text = StringField(*pattern, "Regex", where);
    if (!text.ok()) return text.status();
    spec.is_regex = true;
    spec.text = std::string(*text);
  } else {
    auto text = StringField(*pattern, "String", where);
    if (!text.ok()) return text.status();
    spec.text = std::string(*text);
  }
  return spec;
}

}  // namespace loramux::text
