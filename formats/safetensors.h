// Reader and writer for the safetensors format (8-byte little-endian header length, a JSON header
// of {name: {dtype, shape, data_offsets}} plus optional "__metadata__", then raw little-endian
// data).
//
// Everything in the header is validated before any tensor is handed out: header length sane;
// strict JSON (RFC 8259, UTF-8, read by simdjson; at most 8 levels deep; integers within 64 bits);
// tensor names, entry keys and metadata keys unique; known dtypes; offsets in bounds, in order and
// non-overlapping; shape x dtype size equal to the byte span. A corrupt or truncated file gives
// an INVALID_ARGUMENT (or NOT_FOUND for a missing file) naming the file and the tensor; never a
// crash.
//
// Thread-safety: a SafetensorsFile is immutable after Open/FromBytes; concurrent reads are safe.
// Each thread that parses keeps a JSON parser for small headers (under 1 MB of buffers).
// Ownership: TensorView::data points into the file's mapping (or owned buffer) and lives as long
// as the SafetensorsFile.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace loramux {

enum class DType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

// Bytes per element.
size_t DTypeSize(DType dtype);
// Safetensors spelling: "F32", "BF16", ...
std::string_view DTypeName(DType dtype);
// Whether `dtype` is a floating point type (F32, F16, BF16, F64: the ones CopyFactor converts).
bool IsFloatingDType(DType dtype);
absl::StatusOr<DType> ParseDType(std::string_view name);

struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // not owned; little-endian elements, may be unaligned
  size_t nbytes = 0;

  int64_t numel() const;
};

class SafetensorsFile {
 public:
  // Maps the file read-only. `path` is used in every error message.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  // Parses an in-memory copy (uploads, tests). `label` names it in error messages.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> FromBytes(std::string bytes,
                                                                    std::string label);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  // Tensors in file order (by data offset).
  const std::vector<TensorView>& tensors() const { return tensors_; }
  // nullptr when absent.
  const TensorView* Find(std::string_view name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& label() const { return label_; }

 private:
  SafetensorsFile() = default;
  absl::Status Parse(const uint8_t* bytes, size_t size);

  std::string label_;
  void* mapping_ = nullptr;  // mmap'ed region, or nullptr when owned_ holds the bytes
  size_t mapping_size_ = 0;
  std::string owned_;
  std::vector<TensorView> tensors_;
  // name -> position in tensors_; the keys point into tensors_, which never changes after Parse.
  absl::flat_hash_map<absl::string_view, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// Serializes tensors (header padded with spaces to a multiple of 8, data in the given order).
// Used by tests, benchmarks and format converters.
std::string SerializeSafetensors(const std::vector<TensorView>& tensors,
                                 const std::map<std::string, std::string>& metadata = {});

}  // namespace loramux
