// Typed reads of JSON that comes from outside (adapter configs clients upload, a model's
// config.json): every field is read through JsonValue, so a wrong type, an integer beyond 64 bits,
// a non-finite number or an over-long list is INVALID_ARGUMENT naming the field and what it must
// be, never a thrown nlohmann::json exception:
//
//   ASSIGN_OR_RETURN(Json doc, JsonValue::ParseObject(text, label, kMaxBytes));
//   const JsonValue root(doc, label);
//   ASSIGN_OR_RETURN(bool dora, root["use_dora"].Bool(false));
//   // -> adapter_config.json: "use_dora" must be a boolean, got string "yes"
//
// Fields are named as paths: "use_dora", "rope_scaling.factor", "rank_pattern"["q_proj"] (an
// entry of an object whose keys the client chose), "target_modules"[3] (an array item).
//
// A JsonValue is a small view: it borrows the parsed document, which must outlive it. Absent
// fields and JSON null read the same: as the fallback, or "is missing" without one.
// Thread-compatible (const reads of one document may run concurrently).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace loramux {

// Object members keep file order (PEFT matches rank_pattern keys in file order).
using Json = nlohmann::ordered_json;

class JsonValue {
 public:
  // Parses `text`, which must be one JSON object of at most `max_bytes` bytes; INVALID_ARGUMENT
  // naming `label` and the limit otherwise.
  static absl::StatusOr<Json> ParseObject(absl::string_view text, absl::string_view label,
                                          size_t max_bytes);

  // The root of `document`, named `label` in messages (e.g. "adapter \"sql\":
  // adapter_config.json").
  JsonValue(const Json& document, std::string label)
      : value_(&document), label_(std::move(label)) {}

  // Member `field` of this object; absent when this is absent or not an object.
  JsonValue operator[](absl::string_view field) const;

  bool present() const { return value_ != nullptr && !value_->is_null(); }
  bool is_string() const { return present() && value_->is_string(); }
  bool is_array() const { return present() && value_->is_array(); }
  bool is_object() const { return present() && value_->is_object(); }
  bool is_number() const { return present() && value_->is_number(); }
  // The document node itself (nullptr when absent), for checks that need no type.
  const Json* raw() const { return value_; }

  // Typed reads. Absent or null gives `fallback`, or "is missing" without one.
  absl::StatusOr<bool> Bool(std::optional<bool> fallback = std::nullopt) const;
  // A JSON integer (not 8.0) within int64.
  absl::StatusOr<int64_t> Int(std::optional<int64_t> fallback = std::nullopt) const;
  // Any JSON number; always finite (JSON has no infinities, and parsing refuses overflow).
  absl::StatusOr<double> Number(std::optional<double> fallback = std::nullopt) const;
  absl::StatusOr<std::string> String(std::optional<std::string> fallback = std::nullopt) const;

  // The items of an array (absent: none), at most `max_items`; each named "field"[i].
  absl::StatusOr<std::vector<JsonValue>> Items(size_t max_items) const;
  // The members of an object in file order (absent: none), at most `max_entries`; each value is
  // named "field"["key"].
  absl::StatusOr<std::vector<std::pair<std::string, JsonValue>>> Entries(size_t max_entries) const;

  // INVALID_ARGUMENT "<label>: <field> <what>".
  absl::Status Error(absl::string_view what) const;
  // INVALID_ARGUMENT "<label>: <field> must be <expected>, got <the value's type and value>".
  absl::Status TypeError(absl::string_view expected) const;
  // The field as messages name it: "use_dora", "rank_pattern"["q_proj"], "target_modules"[3].
  const std::string& name() const { return name_; }
  // The value as messages show it: `string "yes"`, `number 0.5`, `an object` (bounded length).
  std::string Describe() const;

 private:
  JsonValue(const Json* value, std::string label, std::string name)
      : value_(value), label_(std::move(label)), name_(std::move(name)) {}

  const Json* value_;  // nullptr when absent
  std::string label_;
  std::string name_;  // empty for the document itself
};

}  // namespace loramux
