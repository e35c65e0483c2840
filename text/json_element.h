// Forward declarations of the simdjson types the tokenizer's loading functions take, so headers
// that declare them (and the server code including tokenizer.h) need not parse simdjson.h.
#pragma once

namespace simdjson {
struct padded_string;
namespace dom {
class element;
class array;
}  // namespace dom
}  // namespace simdjson

namespace loramux::text {

using JsonElement = simdjson::dom::element;

}  // namespace loramux::text
