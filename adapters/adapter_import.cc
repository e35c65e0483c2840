#include "adapters/adapter_import.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "adapters/adapter_limits.h"
#include "common/durable_file.h"
#include "common/sha256.h"
#include "common/status_macros.h"

namespace loramux {
namespace {

constexpr size_t kChunkBytes = 1 << 20;

// Reads `path` in chunks of kChunkBytes, handing each to `consume`; returns the byte count.
absl::StatusOr<uint64_t> ForEachChunk(
    const std::string& path, const std::function<absl::Status(std::string_view)>& consume) {
  ScopedFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    const int err = errno;
    const std::string message = absl::StrCat(path, ": cannot open (", std::strerror(err), ")");
    return err == ENOENT ? absl::NotFoundError(message) : absl::FailedPreconditionError(message);
  }
  std::string buffer(kChunkBytes, '\0');
  uint64_t total = 0;
  while (true) {
    const ssize_t n = read(fd.get(), buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      return absl::FailedPreconditionError(
          absl::StrCat(path, ": read failed (", std::strerror(errno), ")"));
    if (n == 0) return total;
    total += static_cast<uint64_t>(n);
    RETURN_IF_ERROR(consume(std::string_view(buffer.data(), static_cast<size_t>(n))));
  }
}

}  // namespace

absl::StatusOr<StoredAdapter> ImportPeftDirectory(AdapterStore& store, const std::string& name,
                                                  const std::string& dir,
                                                  const AdapterValidator& validator) {
  RETURN_IF_ERROR(ValidateAdapterName(name));
  const std::string config_path = dir + "/adapter_config.json";
  const std::string weights_path = dir + "/adapter_model.safetensors";
  absl::StatusOr<std::string> config = ReadSmallFile(config_path, kMaxAdapterConfigBytes);
  if (absl::IsOutOfRange(config.status())) {
    return absl::InvalidArgumentError(
        absl::StrCat(config_path, ": larger than ", kMaxAdapterConfigBytes, " bytes"));
  }
  if (!config.ok()) return config.status();

  Sha256 hasher;
  ASSIGN_OR_RETURN(const uint64_t size, ForEachChunk(weights_path, [&](std::string_view chunk) {
                     hasher.Update(chunk);
                     return absl::OkStatus();
                   }));
  AdapterManifest manifest;
  manifest.name = name;
  manifest.format = AdapterFormat::kPeft;
  manifest.config_json = *std::move(config);
  manifest.size_bytes = size;
  manifest.sha256 = hasher.HexDigest();
  ASSIGN_OR_RETURN(std::unique_ptr<AdapterStore::Upload> upload, store.BeginUpload(manifest));
  ASSIGN_OR_RETURN(const uint64_t copied, ForEachChunk(weights_path, [&](std::string_view chunk) {
                     return upload->Append(chunk);
                   }));
  absl::StatusOr<StoredAdapter> stored = upload->Commit(validator);
  if (!stored.ok() && (copied != size || absl::IsDataLoss(stored.status()))) {
    return absl::FailedPreconditionError(
        absl::StrCat(weights_path, ": the file changed while it was imported; try again"));
  }
  return stored;
}

}  // namespace loramux
