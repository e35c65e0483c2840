// A strict, allocation-light JSON scanner specialised for the safetensors header, used by
// SafetensorsFile in place of a JSON DOM (which cost ~2 us per tensor).
//
// Contract:
//  - Accepts exactly RFC 8259 JSON: whitespace is space, tab, LF and CR only; strings take every
//    escape (\" \\ \/ \b \f \n \r \t \uXXXX, with surrogate pairs) and are decoded to UTF-8;
//    invalid UTF-8 (overlong forms, encoded surrogates, beyond U+10FFFF, truncated sequences),
//    unpaired surrogate escapes and raw control characters in strings are rejected; numbers follow
//    the JSON grammar (no leading zeros, '+', '.5', hex, NaN); literals are true, false and null;
//    nothing but whitespace may follow the top-level value.
//  - Containers may nest at most `max_depth` deep (bounds the recursion).
//  - Syntax is all it judges: the result records what a header holds (tensor entries, their
//    "dtype", "shape" and "data_offsets" fields, "__metadata__") for the caller to validate, so
//    every syntax error anywhere is reported before any safetensors-level error. Keys of an entry
//    other than those three may hold any JSON value and are skipped.
//  - Errors are INVALID_ARGUMENT with a message starting "header is not well-formed JSON (" and
//    naming the header offset, or "header JSON nests deeper than N levels"; the caller prefixes the
//    file label. std::bad_alloc may escape.
//  - Torch-free; every string_view in the result points into the scanned text.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace loramux {
namespace safetensors_header {

enum class JsonType : uint8_t { kNull, kBoolean, kNumber, kString, kArray, kObject };

// "null", "boolean", "number", "string", "array", "object" (nlohmann's spelling).
std::string_view JsonTypeName(JsonType type);

// One scanned JSON value: its type and its exact text in the header (for error messages).
struct JsonSpan {
  JsonType type = JsonType::kNull;
  std::string_view text;  // empty when the value is absent

  bool present() const { return !text.empty(); }
};

// A "shape" or "data_offsets" field of a tensor entry.
struct ScannedInts {
  JsonSpan value;
  // When `value` is an array: its elements are ScannedHeader::ints[first, first + count), each the
  // element's value if it is a non-negative integer (digits only) that fits int64, else -1.
  size_t first = 0;
  size_t count = 0;
  std::string_view first_bad;  // text of the first element that is not such an integer, if any
};

struct ScannedTensor {
  std::string name;  // decoded UTF-8
  JsonSpan entry;    // the value of the tensor's key; the fields below are set only for an object
  JsonSpan dtype;
  std::string dtype_name;  // decoded, when `dtype` is a string
  ScannedInts shape;
  ScannedInts data_offsets;
  std::string_view duplicate_key;  // "dtype", "shape" or "data_offsets" when one appears twice
};

struct ScannedMetadataItem {
  std::string key;  // decoded
  JsonSpan value;
  std::string string_value;  // decoded, when `value` is a string
};

struct ScannedHeader {
  JsonSpan top;                        // the whole header value; only an object has tensors
  std::vector<ScannedTensor> tensors;  // in header order; names may repeat
  std::vector<int64_t> ints;           // elements of every shape and data_offsets array
  int metadata_count = 0;              // how many "__metadata__" keys the header has
  JsonSpan metadata;                   // the last "__metadata__" value
  std::vector<ScannedMetadataItem> metadata_items;  // its members when an object, in order
};

// Scans `text` (the whole header, padding included) into `*out`, which must be empty.
absl::Status ScanHeader(std::string_view text, int max_depth, ScannedHeader* out);

// `json` (text of a scanned value) without whitespace outside strings, cut after `max_chars`
// characters. For quoting a value in an error message.
std::string CompactJson(std::string_view json, size_t max_chars);

}  // namespace safetensors_header
}  // namespace loramux
