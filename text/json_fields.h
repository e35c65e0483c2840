// Typed field access on simdjson DOM objects for the tokenizer.json loader, with errors that
// name the component and the field ("tokenizer.json: normalizer Replace: field \"content\" must
// be a string"). Thread-safety: stateless.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <simdjson.h>

#include "absl/status/statusor.h"

namespace loramux::text {

using JsonElement = simdjson::dom::element;

// The field, or std::nullopt when it is absent or null.
std::optional<JsonElement> OptionalField(JsonElement object, std::string_view key);

absl::StatusOr<std::string_view> StringField(JsonElement object, std::string_view key,
                                             std::string_view where);
// `fallback` when absent or null.
absl::StatusOr<std::optional<std::string_view>> OptionalStringField(JsonElement object,
                                                                    std::string_view key,
                                                                    std::string_view where);
absl::StatusOr<bool> BoolField(JsonElement object, std::string_view key, std::string_view where,
                               std::optional<bool> fallback = std::nullopt);
absl::StatusOr<int64_t> IntField(JsonElement object, std::string_view key, std::string_view where,
                                 std::optional<int64_t> fallback = std::nullopt);
absl::StatusOr<simdjson::dom::array> ArrayField(JsonElement object, std::string_view key,
                                                std::string_view where);

// The "type" field of a component object.
absl::StatusOr<std::string_view> ComponentType(JsonElement object, std::string_view where);

// INVALID_ARGUMENT "tokenizer.json: <where>: <message>".
absl::Status JsonError(std::string_view where, std::string_view message);
// UNIMPLEMENTED "tokenizer.json: <what> is not supported" (+ hint).
absl::Status Unsupported(std::string_view what, std::string_view hint = "");

// A "pattern" object: {"String": "..."} or {"Regex": "..."}.
struct PatternSpec {
  bool is_regex = false;
  std::string text;
};
absl::StatusOr<PatternSpec> PatternField(JsonElement object, std::string_view where);

}  // namespace loramux::text
