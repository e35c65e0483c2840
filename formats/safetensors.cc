#include "formats/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>
#include <optional>
#include <tuple>
#include <utility>

#include <simdjson.h>
#include <nlohmann/json.hpp>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace loramux {
namespace {

using json = nlohmann::json;  // for writing only; the header is read with simdjson
using JsonValue = simdjson::dom::element;

// Same cap as the reference implementation: a real header is a few KiB to a few MiB.
constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;
// A valid header nests three deep ({name: {shape: [...]}}); the cap bounds the parser's work on
// an adversarial "[[[[..." header.
constexpr int kMaxJsonDepth = 8;
// Headers up to this size are parsed with a per-thread parser kept between files.
constexpr size_t kReusedParserBytes = size_t{64} << 10;

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

// Debian's Abseil has its own string_view, not an alias of std::string_view as the public API uses.
absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// Error messages echo parts of the header; a hostile header must not make them huge.
constexpr size_t kMaxShown = 160;
std::string Clip(std::string s) {
  if (s.size() > kMaxShown) s.replace(kMaxShown, std::string::npos, "...");
  return s;
}
// A JSON value as an error message quotes it: compact (as simdjson writes it), clipped.
std::string Show(JsonValue value) { return Clip(simdjson::minify(value)); }

// nlohmann's spelling, as the messages have always used.
absl::string_view TypeName(JsonValue value) {
  switch (value.type()) {
    case simdjson::dom::element_type::ARRAY: return "array";
    case simdjson::dom::element_type::OBJECT: return "object";
    case simdjson::dom::element_type::STRING: return "string";
    case simdjson::dom::element_type::BOOL: return "boolean";
    case simdjson::dom::element_type::NULL_VALUE: return "null";
    default: return "number";
  }
}

// Appends the elements of `array` to `*out` while they are JSON integers from 0 to INT64_MAX
// (simdjson reads "-0" as 0). Returns the first element that is not, if any.
std::optional<JsonValue> ReadNonNegativeInts(simdjson::dom::array array,
                                             std::vector<int64_t>* out) {
  out->reserve(array.size());
  for (JsonValue element : array) {
    int64_t v = 0;
    if (element.get_int64().get(v) != simdjson::SUCCESS || v < 0) return element;
    out->push_back(v);
  }
  return std::nullopt;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return Clip(absl::StrCat("[", absl::StrJoin(shape, ","), "]"));
}

// One header entry as parsed, before the cross-tensor checks.
struct Entry {
  TensorView view;
  uint64_t begin = 0;
  uint64_t end = 0;
};

// The fields of a tensor entry that safetensors defines; others are ignored.
struct EntryFields {
  std::optional<JsonValue> dtype;
  std::optional<JsonValue> shape;
  std::optional<JsonValue> data_offsets;
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

  // Parses `text` into `*top`, using `*json` (which parses a padded copy: simdjson reads past the
  // end of its input). Every syntax error anywhere is reported here, before any safetensors-level
  // check: RFC 8259 (whitespace, escapes, surrogate pairs, UTF-8, number grammar, no trailing
  // data), nesting at most kMaxJsonDepth deep, and integers within 64 bits.
  absl::Status ParseJson(std::string_view text, simdjson::dom::parser* json,
                         simdjson::dom::element* top) const {
    // JSON never allows a raw NUL; say so plainly, as it is the usual sign of a zero-filled or
    // corrupt header.
    if (const void* nul = std::memchr(text.data(), '\0', text.size())) {
      return Error(absl::StrCat("header is not well-formed JSON (NUL byte at header offset ",
                                static_cast<const char*>(nul) - text.data(), ")"));
    }
    // simdjson counts the top-level value as a level of its own. (Set once: allocate() replaces
    // the buffers, while parse() only grows them.)
    simdjson::error_code error = simdjson::SUCCESS;
    if (json->max_depth() != kMaxJsonDepth + 1) {
      error = json->allocate(text.size(), kMaxJsonDepth + 1);
    }
    if (error == simdjson::SUCCESS) error = json->parse(text.data(), text.size()).get(*top);
    switch (error) {
      case simdjson::SUCCESS: return absl::OkStatus();
      case simdjson::DEPTH_ERROR:
        return Error(absl::StrCat("header JSON nests deeper than ", kMaxJsonDepth, " levels"));
      case simdjson::MEMALLOC:
        return absl::ResourceExhaustedError(absl::StrCat(label_, ": out of memory parsing header"));
      case simdjson::NUMBER_ERROR:
        return Error(
            "header is not well-formed JSON (a number that is not RFC 8259 JSON, an "
            "integer outside [-2^63, 2^64) or a number beyond double's range)");
      default:
        return Error(
            absl::StrCat("header is not well-formed JSON (", simdjson::error_message(error), ")"));
    }
  }

  // "__metadata__" must be an object of string to string with unique keys.
  absl::Status ParseMetadata(JsonValue value, std::map<std::string, std::string>* metadata) const {
    simdjson::dom::object object;
    if (value.get_object().get(object) != simdjson::SUCCESS) {
      return Error(absl::StrCat("\"__metadata__\" must be an object of string to string, got ",
                                TypeName(value)));
    }
    for (const auto [key, item] : object) {
      std::string_view text;
      if (item.get_string().get(text) != simdjson::SUCCESS) {
        return Error(absl::StrCat("\"__metadata__\" value for \"", Clip(std::string(key)),
                                  "\" must be a string, got ", TypeName(item)));
      }
      if (!metadata->emplace(key, text).second) {
        return Error(absl::StrCat("\"__metadata__\" has the key \"", Clip(std::string(key)),
                                  "\" more than once"));
      }
    }
    return absl::OkStatus();
  }

  // Checks one tensor entry (whose name is already in entry->view).
  absl::Status ParseEntry(JsonValue value, Entry* entry) const {
    const std::string& name = entry->view.name;
    simdjson::dom::object object;
    if (value.get_object().get(object) != simdjson::SUCCESS) {
      return TensorError(name, absl::StrCat("entry must be an object, got ", TypeName(value)));
    }
    EntryFields fields;
    for (const auto [key, field] : object) {
      std::optional<JsonValue>* slot = key == "dtype"          ? &fields.dtype
                                       : key == "shape"        ? &fields.shape
                                       : key == "data_offsets" ? &fields.data_offsets
                                                               : nullptr;
      if (slot == nullptr) continue;  // unknown keys are ignored
      if (slot->has_value()) {
        return TensorError(
            name, absl::StrCat("entry has the key \"", AbslView(key), "\" more than once"));
      }
      *slot = field;
    }

    std::string_view dtype_name;
    if (!fields.dtype || fields.dtype->get_string().get(dtype_name) != simdjson::SUCCESS) {
      return TensorError(name, "missing or non-string \"dtype\"");
    }
    auto dtype = ParseDType(dtype_name);
    if (!dtype.ok()) return TensorError(name, Clip(std::string(dtype.status().message())));
    entry->view.dtype = *dtype;

    simdjson::dom::array array;
    if (!fields.shape || fields.shape->get_array().get(array) != simdjson::SUCCESS) {
      return TensorError(name, "missing or non-array \"shape\"");
    }
    if (auto bad = ReadNonNegativeInts(array, &entry->view.shape)) {
      return TensorError(name, absl::StrCat("shape entry ", Show(*bad),
                                            " is not a non-negative integer (in shape ",
                                            Show(*fields.shape), ")"));
    }

    std::vector<int64_t> offsets;
    if (!fields.data_offsets || fields.data_offsets->get_array().get(array) != simdjson::SUCCESS ||
        ReadNonNegativeInts(array, &offsets) || offsets.size() != 2) {
      std::string found = fields.data_offsets ? Show(*fields.data_offsets) : "nothing";
      return TensorError(name, absl::StrCat("\"data_offsets\" must be [begin,end] of non-negative "
                                            "integers, got ",
                                            found));
    }
    entry->begin = static_cast<uint64_t>(offsets[0]);
    entry->end = static_cast<uint64_t>(offsets[1]);
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
      return TensorError(v.name, absl::StrCat(what(), " needs ", needed,
                                              " bytes but data_offsets span ", v.nbytes));
    }
    return absl::OkStatus();
  }

  // Positions in `entries` sorted by (begin, end, name): file order. (Sorting positions instead
  // of the entries themselves saves moving their strings and vectors around.)
  static std::vector<size_t> FileOrder(const std::vector<Entry>& entries) {
    std::vector<size_t> order(entries.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&entries](size_t i, size_t j) {
      const Entry& a = entries[i];
      const Entry& b = entries[j];
      return std::tie(a.begin, a.end, a.view.name) < std::tie(b.begin, b.end, b.view.name);
    });
    return order;
  }

  // In file order, each tensor must start at or after the furthest end seen so far.
  absl::Status CheckNoOverlap(const std::vector<Entry>& entries,
                              const std::vector<size_t>& order) const {
    const Entry* furthest = nullptr;
    for (size_t i : order) {
      const Entry& e = entries[i];
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
  auto it = index_.find(AbslView(name));
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
  const std::string_view header(reinterpret_cast<const char*>(bytes + 8), header_len);
  const uint8_t* data = bytes + 8 + header_len;
  HeaderParser parser(label_, size - 8 - header_len);

  // The parser and the table allocate; bad_alloc is the exception to expect, the rest is a
  // backstop.
  try {
    // simdjson's parser keeps its buffers (about 14 bytes per header byte) for the next parse:
    // each thread reuses one for adapter-sized headers; a larger header gets its own.
    thread_local simdjson::dom::parser reused(kReusedParserBytes);
    std::optional<simdjson::dom::parser> own;
    simdjson::dom::parser& json =
        header_len <= kReusedParserBytes ? reused : own.emplace(kMaxHeaderBytes);
    simdjson::dom::element top;
    RETURN_IF_ERROR(parser.ParseJson(header, &json, &top));
    simdjson::dom::object object;
    if (top.get_object().get(object) != simdjson::SUCCESS) {
      return error(absl::StrCat("header must be a JSON object, got ", TypeName(top)));
    }
    bool has_metadata = false;
    std::vector<Entry> entries;
    entries.reserve(object.size());  // no reallocation below: `names` points into the entries
    absl::flat_hash_set<absl::string_view> names;
    names.reserve(object.size());
    for (const auto [key, value] : object) {
      if (key == "__metadata__") {
        if (has_metadata) return error("the header has more than one \"__metadata__\"");
        has_metadata = true;
        RETURN_IF_ERROR(parser.ParseMetadata(value, &metadata_));
        continue;
      }
      Entry& entry = entries.emplace_back();
      entry.view.name = key;
      if (!names.insert(AbslView(entry.view.name)).second) {
        return parser.TensorError(entry.view.name,
                                  "duplicate tensor name (the header lists it more than once)");
      }
      RETURN_IF_ERROR(parser.ParseEntry(value, &entry));
    }
    const size_t n = entries.size();
    const std::vector<size_t> order = HeaderParser::FileOrder(entries);
    RETURN_IF_ERROR(parser.CheckNoOverlap(entries, order));
    tensors_.reserve(n);  // final: index_ points into the names
    index_.reserve(n);
    for (size_t i : order) {
      Entry& e = entries[i];
      e.view.data = data + e.begin;
      tensors_.push_back(std::move(e.view));
      index_.emplace(AbslView(tensors_.back().name), tensors_.size() - 1);
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

bool IsFloatingDType(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kF16 || dtype == DType::kBF16 ||
         dtype == DType::kF64;
}

}  // namespace loramux
