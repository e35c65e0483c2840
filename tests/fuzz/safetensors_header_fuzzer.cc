// Fuzzes the safetensors header scanner (adapters/safetensors_header.h) on its own, with
// nlohmann::json, an independent RFC 8259 parser, as the reference:
//  - the scanner accepts exactly what nlohmann accepts (up to the scanner's depth cap);
//  - what it records agrees with nlohmann's reading: tensor names (decoded escapes and UTF-8) in
//    header order, dtype strings, shape/data_offsets integers, metadata keys and values;
//  - every recorded span lies inside the text, every ints range inside `ints`;
//  - CompactJson keeps the meaning of a value and its size bound.
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "adapters/safetensors_header.h"
#include "tests/fuzz/fuzz_check.h"

namespace loramux {
namespace {

using Json = nlohmann::ordered_json;
using safetensors_header::JsonSpan;
using safetensors_header::JsonType;
using safetensors_header::ScannedHeader;
using safetensors_header::ScannedInts;

constexpr int kMaxDepth = 8;  // as SafetensorsFile uses

bool Inside(std::string_view span, std::string_view text) {
  return span.empty() ||
         (span.data() >= text.data() && span.data() + span.size() <= text.data() + text.size());
}

Json Parse(std::string_view text) { return Json::parse(text.begin(), text.end()); }

JsonType TypeOf(const Json& j) {
  if (j.is_null()) return JsonType::kNull;
  if (j.is_boolean()) return JsonType::kBoolean;
  if (j.is_number()) return JsonType::kNumber;
  if (j.is_string()) return JsonType::kString;
  if (j.is_array()) return JsonType::kArray;
  return JsonType::kObject;
}

void CheckSpan(const JsonSpan& span, std::string_view text, const char* what) {
  FUZZ_CHECK(Inside(span.text, text), what, " span lies outside the header");
  if (!span.present()) return;
  const Json j = Parse(span.text);
  FUZZ_CHECK(TypeOf(j) == span.type, what, " recorded as ",
             std::string(safetensors_header::JsonTypeName(span.type)), " but is ", j.type_name());
}

void CheckInts(const ScannedInts& ints, const ScannedHeader& header, std::string_view text,
               const char* what) {
  CheckSpan(ints.value, text, what);
  FUZZ_CHECK(Inside(ints.first_bad, text), what, " first_bad outside the header");
  if (!ints.value.present() || ints.value.type != JsonType::kArray) return;
  FUZZ_CHECK(ints.first <= header.ints.size() && ints.count <= header.ints.size() - ints.first,
             what, " range [", ints.first, ", +", ints.count, ") outside ints");
  const Json array = Parse(ints.value.text);
  FUZZ_CHECK(array.size() == ints.count, what, " has ", array.size(), " elements, recorded ",
             ints.count);
  bool any_bad = false;
  for (size_t i = 0; i < ints.count; ++i) {
    const Json& e = array[i];
    // The scanner keeps digit-only integers that fit int64; nlohmann reads those as unsigned.
    const bool good = e.is_number_unsigned() &&
                      e.get<uint64_t>() <= uint64_t{std::numeric_limits<int64_t>::max()};
    const int64_t expected = good ? static_cast<int64_t>(e.get<uint64_t>()) : -1;
    FUZZ_CHECK(header.ints[ints.first + i] == expected, what, " element ", i, " recorded as ",
               header.ints[ints.first + i], ", expected ", expected);
    any_bad = any_bad || !good;
  }
  FUZZ_CHECK(any_bad == !ints.first_bad.empty(), what, " first_bad disagrees with the elements");
}

void CheckAgainstReference(const ScannedHeader& header, std::string_view text) {
  CheckSpan(header.top, text, "top");
  FUZZ_CHECK(header.top.present(), "an accepted header has no top value");
  if (header.top.type != JsonType::kObject) {
    FUZZ_CHECK(header.tensors.empty() && header.metadata_count == 0, "a non-object has tensors");
    return;
  }
  const Json top = Parse(text);
  // nlohmann keeps the last of duplicate keys, in the position of the first: compare only
  // headers without duplicates, where the two readings must be identical.
  size_t metadata_seen = 0;
  std::vector<std::string> names;
  for (const auto& [key, value] : top.items()) {
    if (key == "__metadata__") {
      ++metadata_seen;
    } else {
      names.push_back(key);
    }
  }
  const bool unique =
      names.size() == header.tensors.size() && metadata_seen == static_cast<size_t>(header.metadata_count);
  for (size_t i = 0; i < header.tensors.size(); ++i) {
    const auto& t = header.tensors[i];
    CheckSpan(t.entry, text, "entry");
    CheckSpan(t.dtype, text, "dtype");
    CheckInts(t.shape, header, text, "shape");
    CheckInts(t.data_offsets, header, text, "data_offsets");
    if (t.dtype.present() && t.dtype.type == JsonType::kString) {
      FUZZ_CHECK(Parse(t.dtype.text).get<std::string>() == t.dtype_name, "dtype of \"", t.name,
                 "\" decoded wrongly");
    }
    if (unique) {
      FUZZ_CHECK(names[i] == t.name, "tensor ", i, " is \"", t.name, "\", nlohmann reads \"",
                 names[i], "\"");
    }
  }
  CheckSpan(header.metadata, text, "__metadata__");
  if (unique && header.metadata_count == 1 && header.metadata.type == JsonType::kObject) {
    const Json& metadata = top["__metadata__"];
    FUZZ_CHECK(metadata.size() <= header.metadata_items.size(), "metadata items missing");
    for (const auto& item : header.metadata_items) {
      CheckSpan(item.value, text, "metadata value");
      FUZZ_CHECK(metadata.contains(item.key), "metadata key \"", item.key, "\" decoded wrongly");
      if (item.value.type == JsonType::kString) {
        FUZZ_CHECK(Parse(item.value.text).get<std::string>() == item.string_value,
                   "metadata value of \"", item.key, "\" decoded wrongly");
      }
    }
  }
}

enum class Reference { kAccepts, kRejects, kNumberOverflow };

// nlohmann's verdict on `text`. Three differences from RFC 8259 are not the scanner's to share:
// nlohmann stops at a NUL byte as at the end of input (JSON text never holds one), skips a leading
// UTF-8 byte order mark (which JSON text must not carry, and the reference safetensors reader
// refuses), and refuses a number beyond double's range, which RFC 8259 leaves to the
// implementation.
Reference ReadReference(std::string_view text) {
  if (text.find('\0') != std::string_view::npos) return Reference::kRejects;
  if (absl::StartsWith(absl::string_view(text.data(), text.size()), "\xEF\xBB\xBF")) {
    return Reference::kRejects;
  }
  try {
    (void)Json::parse(text.begin(), text.end());
    return Reference::kAccepts;
  } catch (const Json::exception& e) {  // parse_error, or out_of_range for an overflow
    return absl::StrContains(e.what(), "number overflow") ? Reference::kNumberOverflow
                                                          : Reference::kRejects;
  }
}

}  // namespace
}  // namespace loramux

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loramux;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  ScannedHeader header;
  const absl::Status scanned = safetensors_header::ScanHeader(text, kMaxDepth, &header);
  const Reference reference = ReadReference(text);
  if (reference == Reference::kNumberOverflow) return 0;  // either reading is right
  const bool reference_accepts = reference == Reference::kAccepts;
  if (!scanned.ok()) {
    FUZZ_CHECK(scanned.code() == absl::StatusCode::kInvalidArgument, scanned.ToString());
    FUZZ_CHECK(!reference_accepts || absl::StrContains(scanned.message(), "nests deeper"),
               "rejects JSON that nlohmann accepts: ", scanned.message());
    return 0;
  }
  FUZZ_CHECK(reference_accepts, "accepts what nlohmann rejects");
  CheckAgainstReference(header, text);

  const std::string compact = safetensors_header::CompactJson(header.top.text, text.size());
  FUZZ_CHECK(Json::parse(compact) == Json::parse(text.begin(), text.end()),
             "CompactJson changed the value: ", compact.substr(0, 200));
  const std::string clipped = safetensors_header::CompactJson(header.top.text, 16);
  FUZZ_CHECK(clipped.size() <= 18, "CompactJson(.., 16) gave ", clipped.size(), " bytes");
  return 0;
}
