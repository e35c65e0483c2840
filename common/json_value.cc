#include "common/json_value.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace loramux {
namespace {

constexpr size_t kShownChars = 40;  // of a string or number shown in a message

// `text` cut to kShownChars, marked when cut.
std::string Shortened(std::string text) {
  if (text.size() <= kShownChars) return text;
  text.resize(kShownChars);
  return text + "...";
}

// A scalar as JSON text; replaces (never throws on) bytes that are not UTF-8.
std::string Dump(const Json& value) {
  return value.dump(-1, ' ', /*ensure_ascii=*/false, Json::error_handler_t::replace);
}

// "1 item", "3 items".
std::string Count(size_t n, absl::string_view one, absl::string_view many) {
  return absl::StrCat(n, " ", n == 1 ? one : many);
}

}  // namespace

absl::StatusOr<Json> JsonValue::ParseObject(absl::string_view text, absl::string_view label,
                                            size_t max_bytes) {
  if (text.size() > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": ", text.size(),
                                                   " bytes exceed the limit of ", max_bytes,
                                                   " bytes for this JSON file"));
  }
  // Without exceptions: a syntax error gives a discarded value. The parser keeps its own stack,
  // so deep nesting costs heap, bounded by max_bytes, not the thread's stack.
  Json j = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError(
        absl::StrCat(label, ": not valid JSON (or a number beyond double's range)"));
  }
  if (!j.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(label, ": must be a JSON object, got ", JsonValue(j, "").Describe()));
  }
  return j;
}

JsonValue JsonValue::operator[](absl::string_view field) const {
  // A member of a named field extends its dotted path: "rope_scaling" -> "rope_scaling.factor".
  std::string name;
  if (name_.empty()) {
    name = absl::StrCat("\"", field, "\"");
  } else if (name_.back() == '"' && name_.find('[') == std::string::npos) {
    name = absl::StrCat(absl::string_view(name_).substr(0, name_.size() - 1), ".", field, "\"");
  } else {
    name = absl::StrCat(name_, ".", field);
  }
  const Json* member = nullptr;
  if (is_object()) {
    auto it = value_->find(std::string(field));
    if (it != value_->end()) member = &*it;
  }
  return JsonValue(member, label_, std::move(name));
}

absl::Status JsonValue::Error(absl::string_view what) const {
  return absl::InvalidArgumentError(
      absl::StrCat(label_, ": ", name_, name_.empty() ? "" : " ", what));
}

absl::Status JsonValue::TypeError(absl::string_view expected) const {
  return Error(absl::StrCat("must be ", expected, ", got ", Describe()));
}

std::string JsonValue::Describe() const {
  if (!present()) return "nothing";
  switch (value_->type()) {
    case Json::value_t::object:
      return absl::StrCat("an object of ", Count(value_->size(), "entry", "entries"));
    case Json::value_t::array:
      return absl::StrCat("an array of ", Count(value_->size(), "item", "items"));
    case Json::value_t::string: return absl::StrCat("string ", Shortened(Dump(*value_)));
    case Json::value_t::boolean: return absl::StrCat("boolean ", Dump(*value_));
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
    case Json::value_t::number_float: return absl::StrCat("number ", Shortened(Dump(*value_)));
    default: return "a value of another kind";
  }
}

absl::StatusOr<bool> JsonValue::Bool(std::optional<bool> fallback) const {
  if (!present()) {
    if (fallback) return *fallback;
    return Error("is missing; it must be a boolean");
  }
  if (!value_->is_boolean()) return TypeError("a boolean (true or false)");
  return value_->get<bool>();
}

absl::StatusOr<int64_t> JsonValue::Int(std::optional<int64_t> fallback) const {
  if (!present()) {
    if (fallback) return *fallback;
    return Error("is missing; it must be an integer");
  }
  if (!value_->is_number_integer()) return TypeError("an integer");
  if (value_->is_number_unsigned() &&
      value_->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return TypeError("an integer below 2^63");
  }
  return value_->get<int64_t>();
}

absl::StatusOr<double> JsonValue::Number(std::optional<double> fallback) const {
  if (!present()) {
    if (fallback) return *fallback;
    return Error("is missing; it must be a number");
  }
  if (!value_->is_number()) return TypeError("a number");
  const double value = value_->get<double>();
  if (!std::isfinite(value)) return TypeError("a finite number");
  return value;
}

absl::StatusOr<std::string> JsonValue::String(std::optional<std::string> fallback) const {
  if (!present()) {
    if (fallback) return *std::move(fallback);
    return Error("is missing; it must be a string");
  }
  if (!value_->is_string()) return TypeError("a string");
  return value_->get<std::string>();
}

absl::StatusOr<std::vector<JsonValue>> JsonValue::Items(size_t max_items) const {
  std::vector<JsonValue> items;
  if (!present()) return items;
  if (!value_->is_array()) return TypeError("an array");
  if (value_->size() > max_items) {
    return Error(
        absl::StrCat("has ", value_->size(), " items; at most ", max_items, " are accepted"));
  }
  items.reserve(value_->size());
  for (size_t i = 0; i < value_->size(); ++i) {
    items.push_back(JsonValue(&(*value_)[i], label_, absl::StrCat(name_, "[", i, "]")));
  }
  return items;
}

absl::StatusOr<std::vector<std::pair<std::string, JsonValue>>> JsonValue::Entries(
    size_t max_entries) const {
  std::vector<std::pair<std::string, JsonValue>> entries;
  if (!present()) return entries;
  if (!value_->is_object()) return TypeError("an object");
  if (value_->size() > max_entries) {
    return Error(
        absl::StrCat("has ", value_->size(), " entries; at most ", max_entries, " are accepted"));
  }
  entries.reserve(value_->size());
  for (const auto& [key, value] : value_->items()) {
    entries.emplace_back(
        key, JsonValue(&value, label_, absl::StrCat(name_, "[", Shortened(Dump(Json(key))), "]")));
  }
  return entries;
}

}  // namespace loramux
