// Fuzzes how SafetensorsFile reads the header's JSON (simdjson's DOM): the input is the header,
// which the target wraps in a file (length prefix, then a zeroed data section large enough for
// the offsets nlohmann reads). nlohmann::json, an independent RFC 8259 parser, is the reference:
//  - a header nlohmann refuses is refused as "not well-formed JSON" (or too deep);
//  - a header nlohmann accepts is not refused as JSON, but for simdjson's nesting cap (8 levels)
//    and its refusal of integers beyond 64 bits (RFC 8259 leaves the range to the parser);
//  - an accepted file holds exactly what nlohmann reads: every tensor by name (decoded escapes and
//    UTF-8) with its dtype, shape and data offsets, and the metadata.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "formats/safetensors.h"
#include "tests/fuzz/fuzz_check.h"

namespace loramux {
namespace {

using Json = nlohmann::ordered_json;

constexpr char kLabel[] = "header.safetensors";
constexpr uint64_t kMaxDataBytes = 1 << 20;

enum class Reference { kAccepts, kRejects, kNumberBeyondRange };

// nlohmann's verdict, noting the numbers RFC 8259 lets a parser refuse: beyond double's range
// (nlohmann refuses them too) and integers beyond 64 bits (nlohmann reads them as doubles).
class Verdict : public nlohmann::json_sax<Json> {
 public:
  bool number_float(number_float_t, const string_t& text) override {
    if (text.find_first_of(".eE") == string_t::npos) beyond_range_ = true;  // a big integer
    return true;
  }
  bool parse_error(std::size_t, const std::string&,
                   const nlohmann::detail::exception& error) override {
    beyond_range_ = beyond_range_ || error.id == 406;  // "number overflow"
    return false;
  }
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override { return true; }
  bool key(string_t&) override { return true; }
  bool end_object() override { return true; }
  bool start_array(std::size_t) override { return true; }
  bool end_array() override { return true; }

  bool beyond_range() const { return beyond_range_; }

 private:
  bool beyond_range_ = false;
};

// Two differences from RFC 8259 are not the header reader's to share: nlohmann stops at a NUL
// byte as at the end of input (JSON text never holds one) and skips a leading UTF-8 byte order
// mark (which JSON text must not carry, and the reference safetensors reader refuses).
Reference ReadReference(std::string_view text) {
  if (text.find('\0') != std::string_view::npos) return Reference::kRejects;
  if (absl::StartsWith(absl::string_view(text.data(), text.size()), "\xEF\xBB\xBF")) {
    return Reference::kRejects;
  }
  Verdict verdict;
  const bool accepted = Json::sax_parse(text.begin(), text.end(), &verdict);
  if (verdict.beyond_range()) return Reference::kNumberBeyondRange;
  return accepted ? Reference::kAccepts : Reference::kRejects;
}

// The furthest data offset nlohmann reads in `header`, capped: the data section to give it.
uint64_t DataBytes(const Json& header) {
  uint64_t bytes = 64;
  if (!header.is_object()) return bytes;
  for (const auto& [name, entry] : header.items()) {
    if (!entry.is_object() || !entry.contains("data_offsets")) continue;
    const Json& offsets = entry["data_offsets"];
    if (!offsets.is_array()) continue;
    for (const Json& offset : offsets) {
      if (offset.is_number_unsigned() && offset.get<uint64_t>() <= kMaxDataBytes) {
        bytes = std::max(bytes, offset.get<uint64_t>());
      }
    }
  }
  return bytes;
}

std::string MakeFile(std::string_view header, uint64_t data_bytes) {
  std::string file;
  for (int i = 0; i < 8; ++i) file.push_back(static_cast<char>((header.size() >> (8 * i)) & 0xff));
  file.append(header);
  file.append(data_bytes, '\0');
  return file;
}

// Refused as JSON, not for what the JSON says (a message may quote any name from the header).
bool IsSyntaxRefusal(const absl::Status& status) {
  return absl::StartsWith(status.message(),
                          absl::StrCat(kLabel, ": header is not well-formed JSON"));
}
bool IsJsonRefusal(const absl::Status& status) {
  return IsSyntaxRefusal(status) ||
         absl::StartsWith(status.message(), absl::StrCat(kLabel, ": header JSON nests deeper"));
}

// `file` was read from a header that nlohmann reads as `header`, with its data section at
// `data_section`; they must agree.
void CheckAgainstReference(const SafetensorsFile& file, const Json& header,
                           const uint8_t* data_section) {
  FUZZ_CHECK(header.is_object(), "accepted a header that is a ", header.type_name());
  // nlohmann keeps one of duplicate keys; the reader refuses duplicates, so counts agree.
  size_t tensors = 0;
  std::map<std::string, std::string> metadata;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      metadata = entry.get<std::map<std::string, std::string>>();
      continue;
    }
    ++tensors;
    const TensorView* t = file.Find(name);
    FUZZ_CHECK(t != nullptr, "nlohmann reads tensor \"", name, "\", the file has none");
    FUZZ_CHECK(DTypeName(t->dtype) == entry.at("dtype").get<std::string>(), "dtype of \"", name,
               "\" differs");
    FUZZ_CHECK(t->shape == entry.at("shape").get<std::vector<int64_t>>(), "shape of \"", name,
               "\" differs");
    const auto offsets = entry.at("data_offsets").get<std::vector<uint64_t>>();
    FUZZ_CHECK(offsets.size() == 2 && t->nbytes == offsets[1] - offsets[0], "data_offsets of \"",
               name, "\" differ");
    FUZZ_CHECK(t->data == data_section + offsets[0], "tensor \"", name,
               "\" is not at its data offset");
  }
  FUZZ_CHECK(file.tensors().size() == tensors, "the file has ", file.tensors().size(),
             " tensors, nlohmann reads ", tensors);
  FUZZ_CHECK(file.metadata() == metadata, "metadata differs from nlohmann's reading");
}

}  // namespace
}  // namespace loramux

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loramux;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (text.size() < 2) return 0;  // "header length N is too small", whatever the JSON
  const Reference reference = ReadReference(text);
  Json header;
  if (reference == Reference::kAccepts) header = Json::parse(text.begin(), text.end());
  // The file is over 64 bytes, so its characters are on the heap and stay put when FromBytes
  // takes the string.
  std::string bytes = MakeFile(text, DataBytes(header));
  const uint8_t* data_section = reinterpret_cast<const uint8_t*>(bytes.data()) + 8 + text.size();
  auto file = SafetensorsFile::FromBytes(std::move(bytes), kLabel);
  if (!file.ok()) {
    const absl::Status& s = file.status();
    FUZZ_CHECK(
        fuzz::IsInputError(
            s, kLabel, {absl::StatusCode::kInvalidArgument, absl::StatusCode::kResourceExhausted}),
        "unexpected refusal: ", s.ToString());
    if (reference == Reference::kRejects) {
      FUZZ_CHECK(IsJsonRefusal(s),
                 "JSON nlohmann refuses refused for another reason: ", s.message());
    }
    if (reference == Reference::kAccepts) {
      FUZZ_CHECK(!IsSyntaxRefusal(s), "refuses JSON that nlohmann accepts: ", s.message());
    }
    return 0;
  }
  FUZZ_CHECK(reference != Reference::kRejects, "accepts a header nlohmann refuses");
  if (reference == Reference::kAccepts) CheckAgainstReference(**file, header, data_section);
  return 0;
}
