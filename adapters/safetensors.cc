#include "adapters/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <new>
#include <tuple>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace loramux {
namespace {

using json = nlohmann::json;

// Same cap as the reference implementation: a real header is a few KiB to a few MiB.
constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;
// A valid header nests three deep ({name: {shape: [...]}}). The cap bounds the memory an
// adversarial "[[[[..." header could make the JSON DOM allocate (tens of bytes per input byte).
constexpr int kMaxJsonDepth = 8;

struct DTypeInfo {
  DType dtype;
  std::string_view name;
  size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::kF64, "F64", 8},   {DType::kF32, "F32", 4}, {DType::kF16, "F16", 2},
    {DType::kBF16, "BF16", 2}, {DType::kI64, "I64", 8}, {DType::kI32, "I32", 4},
    {DType::kI16, "I16", 2},   {DType::kI8, "I8", 1},   {DType::kU8, "U8", 1},
    {DType::kBool, "BOOL", 1},
};

const DTypeInfo& Info(DType dtype) {
  for (const DTypeInfo& info : kDTypes) {
    if (info.dtype == dtype) return info;
  }
  return kDTypes[1];  // unreachable for a valid enum value
}

uint64_t ReadLittleEndian64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// True when brackets outside strings never nest deeper than `max_depth`. Malformed JSON is left
// for the real parser to reject.
bool NestingWithin(const char* first, const char* last, int max_depth) {
  int depth = 0;
  bool in_string = false;
  for (const char* p = first; p != last; ++p) {
    if (in_string) {
      if (*p == '\\') {
        if (++p == last) break;
      } else if (*p == '"') {
        in_string = false;
      }
    } else if (*p == '"') {
      in_string = true;
    } else if (*p == '{' || *p == '[') {
      if (++depth > max_depth) return false;
    } else if (*p == '}' || *p == ']') {
      --depth;
    }
  }
  return true;
}

// A JSON number that is an integer >= 0 and fits int64 (shapes are int64 in TensorView).
bool AsNonNegativeInt(const json& j, uint64_t* out) {
  if (j.is_number_unsigned()) {
    *out = j.get<uint64_t>();
  } else if (j.is_number_integer()) {
    int64_t v = j.get<int64_t>();
    if (v < 0) return false;
    *out = static_cast<uint64_t>(v);
  } else {
    return false;
  }
  return *out <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
}

// Debian's Abseil has its own string_view, not an alias of std::string_view as the public API uses.
absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// Error messages echo parts of the header; a hostile header must not make them huge.
std::string Clip(std::string s) {
  constexpr size_t kMaxShown = 160;
  if (s.size() > kMaxShown) s.replace(kMaxShown, std::string::npos, "...");
  return s;
}
std::string Clip(const json& j) { return Clip(j.dump()); }

std::string ShapeString(const std::vector<int64_t>& shape) {
  return Clip(absl::StrCat("[", absl::StrJoin(shape, ","), "]"));
}

// One header entry as parsed, before the cross-tensor checks.
struct Entry {
  TensorView view;
  uint64_t begin = 0;
  uint64_t end = 0;
};

class HeaderParser {
 public:
  HeaderParser(const std::string& label, uint64_t data_size)
      : label_(label), data_size_(data_size) {}

  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(label_, ": ", what));
  }
  absl::Status TensorError(const std::string& name, absl::string_view what) const {
    return Error(absl::StrCat("tensor \"", Clip(name), "\": ", what));
  }

  absl::Status ParseMetadata(const json& j, std::map<std::string, std::string>* metadata) const {
    if (!j.is_object()) {
      return Error(absl::StrCat("\"__metadata__\" must be an object of string to string, got ",
                                j.type_name()));
    }
    for (const auto& [key, value] : j.items()) {
      if (!value.is_string()) {
        return Error(absl::StrCat("\"__metadata__\" value for \"", Clip(key),
                                  "\" must be a string, got ", value.type_name()));
      }
      (*metadata)[key] = value.get<std::string>();
    }
    return absl::OkStatus();
  }

  absl::Status ParseEntry(const std::string& name, const json& j, Entry* entry) const {
    if (!j.is_object()) {
      return TensorError(name, absl::StrCat("entry must be an object, got ", j.type_name()));
    }
    entry->view.name = name;

    auto dtype_it = j.find("dtype");
    if (dtype_it == j.end() || !dtype_it->is_string()) {
      return TensorError(name, "missing or non-string \"dtype\"");
    }
    auto dtype = ParseDType(dtype_it->get_ref<const std::string&>());
    if (!dtype.ok()) return TensorError(name, dtype.status().message());
    entry->view.dtype = *dtype;

    auto shape_it = j.find("shape");
    if (shape_it == j.end() || !shape_it->is_array()) {
      return TensorError(name, "missing or non-array \"shape\"");
    }
    for (const json& dim : *shape_it) {
      uint64_t d = 0;
      if (!AsNonNegativeInt(dim, &d)) {
        return TensorError(
            name, absl::StrCat("shape entry ", Clip(dim),
                               " is not a non-negative integer (in shape ", Clip(*shape_it), ")"));
      }
      entry->view.shape.push_back(static_cast<int64_t>(d));
    }

    auto offsets_it = j.find("data_offsets");
    if (offsets_it == j.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
        !AsNonNegativeInt((*offsets_it)[0], &entry->begin) ||
        !AsNonNegativeInt((*offsets_it)[1], &entry->end)) {
      std::string found = offsets_it == j.end() ? "nothing" : Clip(*offsets_it);
      return TensorError(name, absl::StrCat("\"data_offsets\" must be [begin,end] of non-negative "
                                            "integers, got ",
                                            found));
    }
    if (entry->end < entry->begin) {
      return TensorError(name, absl::StrCat("data_offsets [", entry->begin, ",", entry->end,
                                            "] end before begin"));
    }
    if (entry->end > data_size_) {
      return TensorError(name, absl::StrCat("data_offsets [", entry->begin, ",", entry->end,
                                            "] exceed the data section of ", data_size_,
                                            " bytes (truncated file?)"));
    }
    entry->view.nbytes = static_cast<size_t>(entry->end - entry->begin);
    return CheckSize(*entry);
  }

  // shape x dtype size must equal the byte span; computed without overflow.
  absl::Status CheckSize(const Entry& entry) const {
    const TensorView& v = entry.view;
    auto what = [&v] {  // for error messages only
      return absl::StrCat("shape ", ShapeString(v.shape), " x ", AbslView(DTypeName(v.dtype)));
    };
    uint64_t needed = DTypeSize(v.dtype);
    bool overflow = false;
    if (std::find(v.shape.begin(), v.shape.end(), 0) != v.shape.end()) {
      needed = 0;  // an empty tensor, however large its other dimensions
    } else {
      for (int64_t d : v.shape) {
        overflow = overflow || __builtin_mul_overflow(needed, static_cast<uint64_t>(d), &needed);
      }
    }
    if (overflow) {
      return TensorError(v.name,
                         absl::StrCat(what(), " overflows 64 bits; data_offsets span ", v.nbytes));
    }
    if (needed != v.nbytes) {
      return TensorError(
          v.name, absl::StrCat(what(), " needs ", needed, " bytes but data_offsets span ", v.nbytes));
    }
    return absl::OkStatus();
  }

  // Sorted by begin; each tensor must start at or after the furthest end seen so far.
  absl::Status CheckNoOverlap(std::vector<Entry>& entries) const {
    std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
      return std::tie(a.begin, a.end, a.view.name) < std::tie(b.begin, b.end, b.view.name);
    });
    const Entry* furthest = nullptr;
    for (const Entry& e : entries) {
      if (furthest != nullptr && e.begin < furthest->end) {
        return TensorError(
            e.view.name, absl::StrCat("data_offsets [", e.begin, ",", e.end, "] overlap tensor \"",
                                      Clip(furthest->view.name), "\" [", furthest->begin, ",",
                                      furthest->end, "]"));
      }
      if (furthest == nullptr || e.end > furthest->end) furthest = &e;
    }
    return absl::OkStatus();
  }

 private:
  const std::string& label_;
  uint64_t data_size_;
};

}  // namespace

size_t DTypeSize(DType dtype) { return Info(dtype).size; }

std::string_view DTypeName(DType dtype) { return Info(dtype).name; }

absl::StatusOr<DType> ParseDType(std::string_view name) {
  for (const DTypeInfo& info : kDTypes) {
    if (info.name == name) return info.dtype;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dtype \"", AbslView(name),
                   "\" (expected one of F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)"));
}

int64_t TensorView::numel() const {
  // Unsigned so that a view built by hand with absurd dims wraps instead of hitting signed-overflow
  // UB; a parsed tensor cannot overflow (its product was checked against nbytes), and a zero
  // dimension gives 0 whatever the other factors wrapped to.
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return static_cast<int64_t>(n);
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  // O_NONBLOCK so that a FIFO given by mistake fails below instead of hanging open().
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    // ENOENT becomes NOT_FOUND; ErrnoToStatus appends strerror.
    return absl::ErrnoToStatus(errno, absl::StrCat(path, ": cannot open"));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return absl::ErrnoToStatus(err, absl::StrCat(path, ": cannot stat"));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->label_ = path;
  const size_t size = static_cast<size_t>(st.st_size);
  if (size > 0) {  // mmap rejects length 0; Parse reports the empty file
    // MAP_POPULATE faults the whole file in at once: every tensor is read right after opening,
    // and one bulk fault is much cheaper than a page fault per 4 KiB on first touch.
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
    if (p == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      return absl::ErrnoToStatus(err, absl::StrCat(path, ": cannot mmap"));
    }
    file->mapping_ = p;
    file->mapping_size_ = size;
  }
  ::close(fd);  // the mapping keeps the file alive
  RETURN_IF_ERROR(file->Parse(static_cast<const uint8_t*>(file->mapping_), size));
  return file;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::FromBytes(std::string bytes,
                                                                            std::string label) {
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->label_ = std::move(label);
  file->owned_ = std::move(bytes);
  RETURN_IF_ERROR(
      file->Parse(reinterpret_cast<const uint8_t*>(file->owned_.data()), file->owned_.size()));
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_size_);
}

const TensorView* SafetensorsFile::Find(std::string_view name) const {
  auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

absl::Status SafetensorsFile::Parse(const uint8_t* bytes, size_t size) {
  auto error = [this](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(label_, ": ", what));
  };
  if (size < 8) {
    return error(absl::StrCat("file is ", size,
                              " bytes, too short for the 8-byte header length "
                              "(not a safetensors file, or truncated)"));
  }
  const uint64_t header_len = ReadLittleEndian64(bytes);
  if (header_len < 2) return error(absl::StrCat("header length ", header_len, " is too small"));
  if (header_len > kMaxHeaderBytes) {
    return error(absl::StrCat("header length ", header_len, " exceeds the limit of ",
                              kMaxHeaderBytes, " bytes (corrupt file?)"));
  }
  if (header_len > size - 8) {
    return error(absl::StrCat("header length ", header_len, " exceeds the ", size - 8,
                              " bytes after the length prefix (truncated file?)"));
  }
  const char* first = reinterpret_cast<const char*>(bytes + 8);
  const char* last = first + header_len;
  const uint8_t* data = bytes + 8 + header_len;
  HeaderParser parser(label_, size - 8 - header_len);

  // nlohmann reports misuse by exceptions; the checks below avoid them, the catch is a backstop.
  try {
    if (!NestingWithin(first, last, kMaxJsonDepth)) {
      return error(absl::StrCat("header JSON nests deeper than ", kMaxJsonDepth, " levels"));
    }
    // nlohmann's lexer takes a NUL byte for end of input and would ignore whatever follows it;
    // JSON never allows a raw NUL, so reject it here.
    if (const void* nul = std::memchr(first, '\0', header_len)) {
      return error(absl::StrCat("header is not well-formed JSON (NUL byte at header offset ",
                                static_cast<const char*>(nul) - first, ")"));
    }
    const json header = json::parse(first, last, nullptr, /*allow_exceptions=*/false);
    if (header.is_discarded()) return error("header is not well-formed JSON");
    if (!header.is_object()) {
      return error(absl::StrCat("header must be a JSON object, got ", header.type_name()));
    }
    std::vector<Entry> entries;
    entries.reserve(header.size());
    for (const auto& [name, value] : header.items()) {
      if (name == "__metadata__") {
        RETURN_IF_ERROR(parser.ParseMetadata(value, &metadata_));
        continue;
      }
      entries.emplace_back();
      RETURN_IF_ERROR(parser.ParseEntry(name, value, &entries.back()));
    }
    RETURN_IF_ERROR(parser.CheckNoOverlap(entries));
    tensors_.reserve(entries.size());
    for (Entry& e : entries) {
      e.view.data = data + e.begin;
      index_[e.view.name] = tensors_.size();
      tensors_.push_back(std::move(e.view));
    }
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(label_, ": out of memory parsing header"));
  } catch (const std::exception& e) {
    return error(absl::StrCat("malformed header: ", e.what()));
  }
  return absl::OkStatus();
}

std::string SerializeSafetensors(const std::vector<TensorView>& tensors,
                                 const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const TensorView& t : tensors) {
    header[t.name] = {{"dtype", std::string(DTypeName(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", json::array({offset, offset + t.nbytes})}};
    offset += t.nbytes;
  }
  // `replace` keeps dump() from throwing on names that are not valid UTF-8.
  std::string text = header.dump(-1, ' ', false, json::error_handler_t::replace);
  text.append((8 - text.size() % 8) % 8, ' ');

  std::string out;
  out.reserve(8 + text.size() + offset);
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((text.size() >> (8 * i)) & 0xff));
  out += text;
  for (const TensorView& t : tensors) {
    if (t.data != nullptr) {
      out.append(reinterpret_cast<const char*>(t.data), t.nbytes);
    } else {
      out.append(t.nbytes, '\0');
    }
  }
  return out;
}

}  // namespace loramux
