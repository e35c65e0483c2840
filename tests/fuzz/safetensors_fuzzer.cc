// Fuzzes SafetensorsFile::FromBytes: the input is a whole .safetensors file (8-byte header length,
// JSON header, data). Uploads and the adapter store hand the parser such bytes from outside.
//
// Checked beyond "no crash, no UB, no leak":
//  - a refusal is INVALID_ARGUMENT (or RESOURCE_EXHAUSTED for a header too big for memory) that
//    names the file, in a message of bounded size whatever the header holds;
//  - an accepted file's tensor table is sound: every tensor lies inside the data section, in file
//    order without overlap, its byte span is exactly shape x dtype size, names are unique and
//    Find() returns each one;
//  - it round-trips: SerializeSafetensors of what was read parses back to the same names, dtypes,
//    shapes, bytes and metadata.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <set>
#include <string>

#include "absl/strings/str_join.h"
#include "formats/safetensors.h"
#include "tests/fuzz/fuzz_check.h"

namespace loramux {
namespace {

constexpr char kLabel[] = "fuzz.safetensors";
// Messages clip what they quote from the header (~160 bytes per quote, a few quotes).
constexpr size_t kMaxMessageBytes = 1024;

uint64_t HeaderLength(const char* file) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(file[i]);
  return v;
}

// The byte count shape x dtype needs, or false when it overflows 64 bits.
bool NeededBytes(const TensorView& t, uint64_t* needed) {
  *needed = DTypeSize(t.dtype);
  bool overflow = false;
  for (int64_t d : t.shape) {
    if (d == 0) {
      *needed = 0;
      return true;
    }
    overflow = overflow || __builtin_mul_overflow(*needed, static_cast<uint64_t>(d), needed);
  }
  return !overflow;
}

// `file` was parsed from the `size` bytes at `bytes`.
void CheckTable(const SafetensorsFile& file, const char* bytes, size_t size) {
  FUZZ_CHECK(size >= 8, "accepted a file of ", size, " bytes");
  const uint64_t header_len = HeaderLength(bytes);
  FUZZ_CHECK(header_len <= size - 8, "header length ", header_len, " past the end");
  const char* data = bytes + 8 + header_len;
  const char* end = bytes + size;
  const char* furthest_end = data;  // file order: nothing may start before this
  std::set<std::string> names;
  for (const TensorView& t : file.tensors()) {
    const char* p = reinterpret_cast<const char*>(t.data);
    FUZZ_CHECK(p >= data && p <= end && t.nbytes <= static_cast<size_t>(end - p), "tensor \"",
               t.name, "\" lies outside the data section");
    FUZZ_CHECK(p >= furthest_end, "tensor \"", t.name, "\" overlaps or precedes the one before it");
    if (p + t.nbytes > furthest_end) furthest_end = p + t.nbytes;
    for (int64_t d : t.shape) FUZZ_CHECK(d >= 0, "tensor \"", t.name, "\" has dimension ", d);
    uint64_t needed = 0;
    FUZZ_CHECK(NeededBytes(t, &needed) && needed == t.nbytes, "tensor \"", t.name, "\" shape [",
               absl::StrJoin(t.shape, ","), "] x ", DTypeSize(t.dtype), " bytes is not its span ",
               t.nbytes);
    FUZZ_CHECK(static_cast<uint64_t>(t.numel()) * DTypeSize(t.dtype) == t.nbytes, "numel() of \"",
               t.name, "\" disagrees with its span");
    FUZZ_CHECK(names.insert(t.name).second, "tensor \"", t.name, "\" listed twice");
    FUZZ_CHECK(file.Find(t.name) == &t, "Find(\"", t.name, "\") does not return the tensor");
  }
}

void CheckRoundTrip(const SafetensorsFile& file) {
  std::string bytes = SerializeSafetensors(file.tensors(), file.metadata());
  auto again = SafetensorsFile::FromBytes(std::move(bytes), "round-trip");
  FUZZ_CHECK(again.ok(), "a serialized file does not parse back: ", again.status().ToString());
  const SafetensorsFile& copy = **again;
  FUZZ_CHECK(copy.tensors().size() == file.tensors().size(), "round trip has ",
             copy.tensors().size(), " tensors, not ", file.tensors().size());
  FUZZ_CHECK(copy.metadata() == file.metadata(), "round trip changed the metadata");
  for (const TensorView& t : file.tensors()) {
    const TensorView* u = copy.Find(t.name);
    FUZZ_CHECK(u != nullptr, "round trip lost tensor \"", t.name, "\"");
    FUZZ_CHECK(u->dtype == t.dtype && u->shape == t.shape && u->nbytes == t.nbytes &&
                   (t.nbytes == 0 || std::memcmp(u->data, t.data, t.nbytes) == 0),
               "round trip changed tensor \"", t.name, "\"");
  }
}

}  // namespace
}  // namespace loramux

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loramux;
  // FromBytes moves the string into the file. A string whose characters are on the heap (reserve
  // past the small-string buffer) keeps that block when moved: `base` is where the views point.
  std::string bytes;
  bytes.reserve(size < 64 ? 64 : size);
  bytes.assign(reinterpret_cast<const char*>(data), size);
  const char* base = bytes.data();
  auto file = SafetensorsFile::FromBytes(std::move(bytes), kLabel);
  if (!file.ok()) {
    const absl::Status& s = file.status();
    FUZZ_CHECK(
        fuzz::IsInputError(
            s, kLabel, {absl::StatusCode::kInvalidArgument, absl::StatusCode::kResourceExhausted}),
        "unexpected refusal: ", s.ToString());
    FUZZ_CHECK(s.message().size() <= kMaxMessageBytes, "a ", s.message().size(),
               "-byte error message: ", s.message().substr(0, 300));
    return 0;
  }
  CheckTable(**file, base, size);
  CheckRoundTrip(**file);
  return 0;
}
