#include "adapters/adapter_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <exception>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <system_error>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "adapters/adapter_limits.h"
#include "common/durable_file.h"
#include "common/logging.h"
#include "common/sha256.h"
#include "common/status_macros.h"

namespace loramux {
namespace {

namespace fs = std::filesystem;

constexpr size_t kMaxNameLength = 128;
constexpr size_t kMaxConfigBytes =
    kMaxAdapterConfigBytes;  // refused before any weight byte streams
constexpr size_t kMaxManifestBytes = 64 << 10;
constexpr size_t kMaxCurrentBytes = 256;
constexpr size_t kHashBufferBytes = 1 << 20;
// Retries for races with a concurrent Delete/Open removing a directory we are about to use, or
// with a cleaner grabbing a freshly created temp file.
constexpr int kAttempts = 5;

constexpr char kAdaptersDir[] = "adapters";
constexpr char kTmpDir[] = "tmp";
constexpr char kLocksDir[] = "locks";
constexpr char kVersionsDir[] = "versions";
constexpr char kCurrentFile[] = "CURRENT";
constexpr char kCurrentTmpPrefix[] = "CURRENT.tmp-";
constexpr char kManifestFile[] = "MANIFEST.json";
constexpr char kConfigFile[] = "adapter_config.json";
constexpr char kWeightsFile[] = "adapter_model.safetensors";
constexpr char kLockSuffix[] = ".lock";
constexpr char kDeletedPrefix[] = "deleted-";  // a deleted name's tree, in the staging area

// Abseil here is built with its own string_view, distinct from std::string_view.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// A client-supplied string, safe to put in a message: escaped and cut short.
std::string Quoted(std::string_view s) {
  constexpr size_t kMaxShown = 80;
  std::string shown = absl::CHexEscape(Sv(s.substr(0, kMaxShown)));
  return absl::StrCat("\"", shown, s.size() > kMaxShown ? "...\"" : "\"");
}

bool FileExists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

bool IsHex(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return absl::ascii_isxdigit(static_cast<unsigned char>(c)); });
}

// ---- MANIFEST.json -----------------------------------------------------------------------------

std::string ManifestJson(const AdapterManifest& manifest, absl::Time created) {
  nlohmann::json j = {{"name", manifest.name},
                      {"format", std::string(AdapterFormatName(manifest.format))},
                      {"size_bytes", manifest.size_bytes},
                      {"sha256", manifest.sha256},
                      {"created_unix", absl::ToUnixSeconds(created)}};
  return j.dump(2) + "\n";  // all fields are validated ASCII, so dump() cannot throw
}

absl::Status CorruptVersion(absl::string_view name, absl::string_view version,
                            absl::string_view what) {
  return absl::DataLossError(absl::StrCat("adapter \"", name, "\" version ", version, ": ", what,
                                          "; delete the adapter and upload it again"));
}

// Parses and cross-checks a stored MANIFEST.json into `adapter` (all fields but config/path).
absl::Status ParseManifest(const std::string& text, absl::string_view name,
                           absl::string_view version, StoredAdapter* adapter) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return CorruptVersion(name, version, "MANIFEST.json is not a JSON object");
  }
  try {
    const std::string format = j.at("format").get<std::string>();
    if (format == AdapterFormatName(AdapterFormat::kPeft)) {
      adapter->format = AdapterFormat::kPeft;
    } else if (format == AdapterFormatName(AdapterFormat::kSeed)) {
      adapter->format = AdapterFormat::kSeed;
    } else {
      return CorruptVersion(name, version,
                            absl::StrCat("MANIFEST.json has format ", Quoted(format)));
    }
    if (j.at("name").get<std::string>() != name || j.at("sha256").get<std::string>() != version) {
      return CorruptVersion(name, version, "MANIFEST.json names another adapter or version");
    }
    adapter->size_bytes = j.at("size_bytes").get<uint64_t>();
    adapter->created = absl::FromUnixSeconds(j.at("created_unix").get<int64_t>());
  } catch (const nlohmann::json::exception& e) {
    return CorruptVersion(name, version, absl::StrCat("MANIFEST.json: ", e.what()));
  }
  adapter->name = std::string(name);
  adapter->version = std::string(version);
  return absl::OkStatus();
}

// Loads a published version. NOT_FOUND when `versions/<version>` has no MANIFEST.json.
absl::StatusOr<StoredAdapter> LoadVersion(const std::string& name_dir, absl::string_view name,
                                          absl::string_view version) {
  const std::string dir = absl::StrCat(name_dir, "/", kVersionsDir, "/", version);
  absl::StatusOr<std::string> manifest =
      ReadSmallFile(dir + "/" + kManifestFile, kMaxManifestBytes);
  if (absl::IsNotFound(manifest.status())) {
    return absl::NotFoundError(absl::StrCat("adapter \"", name, "\" has no version ", version,
                                            "; list its versions or upload it"));
  }
  if (!manifest.ok()) return CorruptVersion(name, version, manifest.status().message());
  StoredAdapter adapter;
  RETURN_IF_ERROR(ParseManifest(*manifest, name, version, &adapter));
  // A Delete moves the whole name away at once: a file missing after the manifest was read means
  // the version went meanwhile (NOT_FOUND) unless the manifest is still there (then it is corrupt).
  auto missing = [&](absl::string_view what) -> absl::Status {
    if (!FileExists(dir + "/" + kManifestFile)) {
      return absl::NotFoundError(absl::StrCat("adapter \"", name, "\" version ", version,
                                              " was deleted; upload it again"));
    }
    return CorruptVersion(name, version, what);
  };
  absl::StatusOr<std::string> config = ReadSmallFile(dir + "/" + kConfigFile, kMaxConfigBytes);
  if (absl::IsNotFound(config.status())) return missing(config.status().message());
  if (!config.ok()) return CorruptVersion(name, version, config.status().message());
  adapter.config_json = *std::move(config);
  adapter.weights_path = dir + "/" + kWeightsFile;
  struct stat st;
  if (::stat(adapter.weights_path.c_str(), &st) != 0) {
    if (errno == ENOENT) return missing("the weights file is missing");
    return CorruptVersion(name, version, PosixError(errno, adapter.weights_path).message());
  }
  if (static_cast<uint64_t>(st.st_size) != adapter.size_bytes) {
    return CorruptVersion(name, version, "the weights file has the wrong size");
  }
  return adapter;
}

absl::Status NameNotFound(absl::string_view name) {
  return absl::NotFoundError(absl::StrCat("adapter \"", name,
                                          "\" not found: upload it first, or check the name "
                                          "against the list of adapters"));
}

}  // namespace

// ---- public free functions ---------------------------------------------------------------------

std::string_view AdapterFormatName(AdapterFormat format) {
  return format == AdapterFormat::kSeed ? "SEED" : "PEFT";
}

absl::Status ValidateAdapterName(std::string_view name) {
  auto allowed = [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  };
  // The first character can be neither '.' nor '-', so "." / ".." / "-rf" never reach the disk;
  // '/' is not allowed at all, so a name is always exactly one path component.
  const bool ok = !name.empty() && name.size() <= kMaxNameLength &&
                  absl::ascii_isalnum(static_cast<unsigned char>(name[0])) &&
                  std::all_of(name.begin(), name.end(), allowed);
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "adapter name ", Quoted(name), " (", name.size(),
      " chars) is invalid: use 1 to 128 characters from A-Z a-z 0-9 . _ -, starting with a letter "
      "or digit"));
}

// ---- the cache of CURRENT pointers -------------------------------------------------------------

// Identity of the CURRENT file we last read. A writer replaces CURRENT by rename, which changes
// the inode; mtime, ctime and size also guard against the inode number being reused.
struct AdapterStore::CachedPointer {
  struct Key {
    dev_t dev;
    ino_t ino;
    off_t size;
    timespec mtim;
    timespec ctim;

    static Key Of(const struct stat& st) {
      return Key{st.st_dev, st.st_ino, st.st_size, st.st_mtim, st.st_ctim};
    }
    bool operator==(const Key& o) const {
      return dev == o.dev && ino == o.ino && size == o.size && mtim.tv_sec == o.mtim.tv_sec &&
             mtim.tv_nsec == o.mtim.tv_nsec && ctim.tv_sec == o.ctim.tv_sec &&
             ctim.tv_nsec == o.ctim.tv_nsec;
    }
  };
  Key key;
  StoredAdapter adapter;
};

// ---- uploads -----------------------------------------------------------------------------------

// Owns one staging dir tmp/<owner>/<token>/ (weights being streamed) and a use of the store's
// staging area. Holds no file descriptor between calls: each Append opens, appends and closes,
// so an upload whose client went quiet costs a directory, not a descriptor.
class AdapterStore::StagedUpload final : public AdapterStore::Upload {
 public:
  StagedUpload(AdapterStore* store, AdapterManifest manifest, std::string staging_dir)
      : store_(store), manifest_(std::move(manifest)), staging_dir_(std::move(staging_dir)) {}
  ~StagedUpload() override { Discard(); }

  absl::Status Append(std::string_view chunk) override;
  absl::StatusOr<StoredAdapter> Commit(const AdapterValidator& validator) override;

 private:
  absl::StatusOr<StoredAdapter> Finish(const AdapterValidator& validator);
  absl::Status Fail(absl::Status status) {
    Discard();
    return status;
  }
  // Removes whatever is still staged and gives up the staging area. Idempotent.
  void Discard();
  std::string WeightsPath() const { return staging_dir_ + "/" + kWeightsFile; }
  std::string Label() const { return absl::StrCat("adapter \"", manifest_.name, "\""); }

  AdapterStore* const store_;
  const AdapterManifest manifest_;
  const std::string staging_dir_;
  Sha256 hasher_;
  uint64_t received_ = 0;
  bool finished_ = false;
};

void AdapterStore::StagedUpload::Discard() {
  if (finished_) return;
  finished_ = true;
  // After a successful publish the staging dir has been renamed away; this is then a no-op.
  store_->RemoveStaged(staging_dir_);
  store_->ReleaseStagingArea();
}

absl::Status AdapterStore::StagedUpload::Append(std::string_view chunk) {
  if (finished_) {
    return absl::FailedPreconditionError(
        absl::StrCat(Label(), ": this upload has already finished or failed; start a new upload"));
  }
  if (chunk.size() > store_->options_.max_adapter_bytes - received_) {
    return Fail(absl::ResourceExhaustedError(
        absl::StrCat(Label(), ": the weights exceed the store limit of ",
                     store_->options_.max_adapter_bytes, " bytes")));
  }
  if (chunk.size() > manifest_.size_bytes - received_) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat(Label(), ": received ", received_ + chunk.size(),
                     " bytes, more than the declared size_bytes=", manifest_.size_bytes,
                     "; declare the exact size of adapter_model.safetensors")));
  }
  hasher_.Update(chunk);
  const std::string path = WeightsPath();
  ScopedFd fd(::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
  if (!fd.valid()) return Fail(PosixError(errno, absl::StrCat(Label(), ": opening ", path)));
  absl::Status written = WriteAll(fd.get(), chunk, path);
  if (!written.ok()) return Fail(written);
  received_ += chunk.size();
  return absl::OkStatus();
}

absl::StatusOr<StoredAdapter> AdapterStore::StagedUpload::Commit(
    const AdapterValidator& validator) {
  if (finished_) {
    return absl::FailedPreconditionError(
        absl::StrCat(Label(), ": this upload has already finished or failed; start a new upload"));
  }
  absl::StatusOr<StoredAdapter> result = Finish(validator);
  Discard();
  return result;
}

absl::StatusOr<StoredAdapter> AdapterStore::StagedUpload::Finish(
    const AdapterValidator& validator) {
  if (received_ < manifest_.size_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(Label(), ": truncated upload: got ", received_,
                                                   " of ", manifest_.size_bytes,
                                                   " bytes; resend the whole weights file"));
  }
  const std::string digest = hasher_.HexDigest();
  if (digest != manifest_.sha256) {
    return absl::DataLossError(absl::StrCat(
        Label(), ": the received weights have sha256 ", digest, " but the manifest declares ",
        manifest_.sha256, "; the bytes were corrupted in transit or the digest is wrong"));
  }
  {
    ScopedFd fd(::open(WeightsPath().c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd.valid()) return PosixError(errno, absl::StrCat(Label(), ": opening ", WeightsPath()));
    RETURN_IF_ERROR(FsyncFd(fd.get(), WeightsPath()));
  }
  if (validator) {
    absl::Status valid;
    try {
      valid = validator(manifest_, WeightsPath());
    } catch (const std::exception& e) {
      valid = absl::InternalError(absl::StrCat(Label(), ": validation threw: ", e.what()));
    }
    if (!valid.ok()) return valid;
  }
  RETURN_IF_ERROR(
      WriteFileDurably(staging_dir_ + "/" + kManifestFile, ManifestJson(manifest_, absl::Now())));
  RETURN_IF_ERROR(WriteFileDurably(staging_dir_ + "/" + kConfigFile, manifest_.config_json));
  RETURN_IF_ERROR(FsyncDir(staging_dir_));
  return store_->Publish(manifest_, staging_dir_);
}

absl::StatusOr<std::unique_ptr<AdapterStore::Upload>> AdapterStore::BeginUpload(
    AdapterManifest manifest) {
  RETURN_IF_ERROR(ValidateAdapterName(manifest.name));
  const std::string label = absl::StrCat("adapter \"", manifest.name, "\"");
  if (!IsSha256Hex(manifest.sha256)) {
    return absl::InvalidArgumentError(absl::StrCat(
        label, ": sha256 ", Quoted(manifest.sha256),
        " is not 64 hex characters; send the hex SHA-256 of adapter_model.safetensors"));
  }
  manifest.sha256 = absl::AsciiStrToLower(manifest.sha256);
  if (manifest.format != AdapterFormat::kPeft && manifest.format != AdapterFormat::kSeed) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": unknown format; use PEFT or SEED"));
  }
  if (manifest.size_bytes == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(label, ": size_bytes is 0; declare the size of adapter_model.safetensors"));
  }
  if (manifest.size_bytes > options_.max_adapter_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat(label, ": ", manifest.size_bytes, " bytes exceed the store limit of ",
                     options_.max_adapter_bytes, " bytes; use a smaller rank or fewer modules"));
  }
  if (manifest.config_json.empty() || manifest.config_json.size() > kMaxConfigBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        label, ": config_json has ", manifest.config_json.size(),
        " bytes; adapter_config.json must be non-empty and may not exceed the limit of ",
        kMaxConfigBytes, " bytes"));
  }
  ASSIGN_OR_RETURN(std::string area, AcquireStagingArea());
  const std::string staging_dir = absl::StrCat(area, "/", UniqueToken());
  const std::string weights_path = staging_dir + "/" + kWeightsFile;
  ScopedFd weights_fd;
  if (::mkdir(staging_dir.c_str(), 0755) == 0) {
    weights_fd.Reset(::open(weights_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  }
  if (!weights_fd.valid()) {
    absl::Status error = PosixError(errno, absl::StrCat(label, ": creating ", weights_path));
    RemoveStaged(staging_dir);
    ReleaseStagingArea();
    return error;
  }
  return std::unique_ptr<Upload>(new StagedUpload(this, std::move(manifest), staging_dir));
}

absl::StatusOr<StoredAdapter> AdapterStore::Put(const AdapterManifest& manifest,
                                                std::string_view weights,
                                                const AdapterValidator& validator) {
  ASSIGN_OR_RETURN(std::unique_ptr<Upload> upload, BeginUpload(manifest));
  RETURN_IF_ERROR(upload->Append(weights));
  return upload->Commit(validator);
}

// ---- publishing --------------------------------------------------------------------------------

namespace {

// An existing version with the same digest is fine only when it carries the same config.
absl::Status CheckSameVersion(const std::string& name_dir, const AdapterManifest& manifest) {
  ASSIGN_OR_RETURN(StoredAdapter existing, LoadVersion(name_dir, manifest.name, manifest.sha256));
  if (existing.config_json == manifest.config_json && existing.format == manifest.format) {
    return absl::OkStatus();
  }
  return absl::AlreadyExistsError(absl::StrCat(
      "adapter \"", manifest.name, "\" already has version ", manifest.sha256,
      " with a different adapter_config.json or format; the same weights cannot carry two "
      "configs: delete the adapter first or upload under another name"));
}

// Replaces name_dir/CURRENT atomically. `renamed` says whether CURRENT was switched (so that a
// failure after that point is not rolled back into a CURRENT naming a missing version).
absl::Status WriteCurrent(const std::string& name_dir, const std::string& version, bool* renamed) {
  *renamed = false;
  const std::string current = absl::StrCat(name_dir, "/", kCurrentFile);
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    const std::string tmp = absl::StrCat(name_dir, "/", kCurrentTmpPrefix, UniqueToken());
    ASSIGN_OR_RETURN(ScopedFd fd, CreateLockedFile(tmp));
    if (!fd.valid()) continue;
    absl::Status status = WriteAll(fd.get(), version + "\n", tmp);
    if (status.ok()) status = FsyncFd(fd.get(), tmp);
    if (status.ok() && ::rename(tmp.c_str(), current.c_str()) != 0) {
      status = PosixError(errno, absl::StrCat("renaming ", tmp, " to ", current));
    }
    if (!status.ok()) {
      ::unlink(tmp.c_str());
      return status;
    }
    *renamed = true;
    return FsyncDir(name_dir);
  }
  return absl::InternalError(absl::StrCat("could not create a temp file in ", name_dir));
}

}  // namespace

absl::StatusOr<StoredAdapter> AdapterStore::Publish(const AdapterManifest& manifest,
                                                    const std::string& staging_dir) {
  const std::string name_dir = NameDir(manifest.name);
  const std::string versions_dir = absl::StrCat(name_dir, "/", kVersionsDir);
  const std::string version_dir = absl::StrCat(versions_dir, "/", manifest.sha256);
  // Held until the new version is current: a Delete of this name waits for it (and then removes
  // it), or went first (and this publish creates the name again).
  absl::StatusOr<ScopedFd> name_lock = LockName(manifest.name);
  bool created_name_dir = false, created_versions_dir = false, placed = false;
  absl::Status status = name_lock.status();
  if (status.ok()) status = EnsureDir(name_dir, &created_name_dir);
  if (status.ok()) status = EnsureDir(versions_dir, &created_versions_dir);
  if (status.ok()) {
    if (::rename(staging_dir.c_str(), version_dir.c_str()) == 0) {
      placed = true;
      status = FsyncDir(versions_dir);
    } else {
      const int err = errno;
      status = PosixError(err, absl::StrCat("renaming ", staging_dir, " to ", version_dir));
      if (err == EEXIST || err == ENOTEMPTY) {
        status = CheckSameVersion(name_dir, manifest);  // the staging copy is discarded later
      }
    }
  }
  bool renamed = false;
  if (status.ok()) status = WriteCurrent(name_dir, manifest.sha256, &renamed);
  if (name_lock.ok() && !status.ok() && !renamed) {
    // Undo exactly what this call added, so that a failed upload leaves the store unchanged.
    if (placed) RemoveTreeQuietly(version_dir);
    if (created_versions_dir) ::rmdir(versions_dir.c_str());
    if (!FileExists(absl::StrCat(name_dir, "/", kCurrentFile))) ::rmdir(name_dir.c_str());
  }
  const std::string label = absl::StrCat("adapter \"", manifest.name, "\"");
  if (!status.ok() && !absl::StartsWith(status.message(), label)) {
    // File-system errors name only a path; say which adapter they broke.
    return absl::Status(status.code(),
                        absl::StrCat(label, ": publishing failed: ", status.message()));
  }
  if (!status.ok()) return status;
  return LoadVersion(name_dir, manifest.name, manifest.sha256);
}

// ---- per-name lock, staging area ---------------------------------------------------------------

std::string AdapterStore::LockPath(std::string_view name) const {
  return absl::StrCat(root_, "/", kLocksDir, "/", Sv(name), kLockSuffix);
}

absl::StatusOr<ScopedFd> AdapterStore::LockName(std::string_view name) {
  // The lock file outlives the name dir, so a Delete never pulls it from under a waiter. Only
  // Open()'s cleanup unlinks it (when no one holds it and the name is gone); a waiter that locked
  // the unlinked file opens the name afresh.
  const std::string path = LockPath(name);
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    ASSIGN_OR_RETURN(ScopedFd fd, LockFile(path, /*wait=*/true));
    if (fd.valid()) return fd;
  }
  return absl::UnavailableError(
      absl::StrCat(path, " kept being removed while this call waited for it; retry"));
}

absl::StatusOr<std::string> AdapterStore::AcquireStagingArea() {
  RetryRemovals();
  absl::MutexLock lock(&staging_mu_);
  if (staging_users_ == 0) {
    const std::string tmp_dir = absl::StrCat(root_, "/", kTmpDir);
    for (int attempt = 0; attempt < kAttempts && !staging_lock_.valid(); ++attempt) {
      const std::string area = absl::StrCat(tmp_dir, "/", UniqueToken());
      // The lock comes before the directory (and goes after it), as Open()'s cleanup expects.
      ASSIGN_OR_RETURN(ScopedFd lock_fd, CreateLockedFile(area + kLockSuffix));
      if (!lock_fd.valid()) continue;
      if (::mkdir(area.c_str(), 0755) != 0) {
        absl::Status error = PosixError(errno, absl::StrCat("creating ", area));
        ::unlink((area + kLockSuffix).c_str());
        return error;
      }
      staging_lock_ = std::move(lock_fd);
      staging_area_ = area;
    }
    if (!staging_lock_.valid()) {
      return absl::InternalError(
          absl::StrCat("could not create a staging area under ", tmp_dir, "; check the store"));
    }
  }
  ++staging_users_;
  return staging_area_;
}

void AdapterStore::ReleaseStagingArea() {
  absl::MutexLock lock(&staging_mu_);
  if (--staging_users_ > 0) return;
  // Nothing of this process is staged any more: the area goes, then its lock.
  std::error_code ec;
  std::filesystem::remove_all(staging_area_, ec);
  if (ec) {
    LogWarning(
        "adapter store: could not remove the staging area %s (%s); retrying later, and "
        "the next start-up removes it",
        staging_area_, ec.message());
    pending_removals_.push_back(staging_area_);
  }
  ::unlink((staging_area_ + kLockSuffix).c_str());
  staging_lock_.Reset();
  staging_area_.clear();
}

void AdapterStore::RemoveStaged(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
  if (!ec) return;
  LogWarning(
      "adapter store: could not remove %s (%s); retrying later, and the next start-up "
      "removes it",
      path, ec.message());
  absl::MutexLock lock(&staging_mu_);
  pending_removals_.push_back(path);
}

void AdapterStore::RetryRemovals() {
  std::vector<std::string> paths;
  {
    absl::MutexLock lock(&staging_mu_);
    paths.swap(pending_removals_);
  }
  for (const std::string& path : paths) RemoveStaged(path);
}

AdapterStore::~AdapterStore() {
  RetryRemovals();
  absl::MutexLock lock(&staging_mu_);
  if (!staging_area_.empty()) {  // uploads outlived the store (a misuse); leave nothing behind
    RemoveTreeQuietly(staging_area_);
    ::unlink((staging_area_ + kLockSuffix).c_str());
  }
}

// ---- reading -----------------------------------------------------------------------------------

AdapterStore::AdapterStore(std::string root, AdapterStoreOptions options)
    : root_(std::move(root)), options_(options) {}

std::string AdapterStore::NameDir(std::string_view name) const {
  return absl::StrCat(root_, "/", kAdaptersDir, "/", Sv(name));
}

void AdapterStore::ForgetCurrent(std::string_view name) {
  absl::MutexLock lock(&mu_);
  current_cache_.erase(Sv(name));
}

absl::StatusOr<StoredAdapter> AdapterStore::Current(std::string_view name) {
  RETURN_IF_ERROR(ValidateAdapterName(name));
  const std::string path = absl::StrCat(NameDir(name), "/", kCurrentFile);
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    if (err != ENOENT && err != ENOTDIR) return PosixError(err, absl::StrCat("stat of ", path));
    ForgetCurrent(name);
    return NameNotFound(Sv(name));
  }
  {
    absl::MutexLock lock(&mu_);
    auto it = current_cache_.find(Sv(name));
    if (it != current_cache_.end() && it->second->key == CachedPointer::Key::Of(st)) {
      return it->second->adapter;
    }
  }
  return ReloadCurrent(name, path);
}

absl::StatusOr<StoredAdapter> AdapterStore::ReloadCurrent(std::string_view name,
                                                          const std::string& path) {
  // The key comes from the very file we read, so a concurrent replacement is noticed next time.
  ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  struct stat st;
  if (!fd.valid() || ::fstat(fd.get(), &st) != 0) {
    const int err = errno;
    if (err != ENOENT) return PosixError(err, absl::StrCat("opening ", path));
    ForgetCurrent(name);
    return NameNotFound(Sv(name));
  }
  char buffer[kMaxCurrentBytes];
  ssize_t n;
  do {
    n = ::read(fd.get(), buffer, sizeof(buffer));
  } while (n < 0 && errno == EINTR);
  if (n < 0) return PosixError(errno, absl::StrCat("reading ", path));
  const std::string version = absl::AsciiStrToLower(
      absl::StripAsciiWhitespace(absl::string_view(buffer, static_cast<size_t>(n))));
  if (!IsSha256Hex(version)) {
    return absl::DataLossError(absl::StrCat("adapter \"", Sv(name), "\": ", path,
                                            " does not hold a sha256; upload the adapter again"));
  }
  absl::StatusOr<StoredAdapter> adapter = LoadVersion(NameDir(name), Sv(name), version);
  if (absl::IsNotFound(adapter.status())) {
    // Cannot happen with the publish protocol; treat the name as absent rather than fail.
    ForgetCurrent(name);
    return NameNotFound(Sv(name));
  }
  if (!adapter.ok()) return adapter.status();
  auto entry = std::make_shared<CachedPointer>(CachedPointer{CachedPointer::Key::Of(st), *adapter});
  absl::MutexLock lock(&mu_);
  current_cache_[Sv(name)] = std::move(entry);
  return adapter;
}

absl::StatusOr<StoredAdapter> AdapterStore::Resolve(std::string_view name,
                                                    std::string_view version_prefix) {
  RETURN_IF_ERROR(ValidateAdapterName(name));
  if (version_prefix.empty() || version_prefix.size() > 64 || !IsHex(version_prefix)) {
    return absl::InvalidArgumentError(
        absl::StrCat("adapter \"", Sv(name), "\": version ", Quoted(version_prefix),
                     " is not a sha256 digest or a prefix of one; give 1 to 64 hex characters"));
  }
  const std::string prefix = absl::AsciiStrToLower(Sv(version_prefix));
  const std::string name_dir = NameDir(name);
  if (prefix.size() == 64) return LoadVersion(name_dir, Sv(name), prefix);

  absl::StatusOr<std::vector<std::string>> entries =
      ListDir(absl::StrCat(name_dir, "/", kVersionsDir));
  if (absl::IsNotFound(entries.status())) return NameNotFound(Sv(name));
  if (!entries.ok()) return entries.status();
  std::vector<std::string> matches;
  for (const std::string& entry : *entries) {
    if (IsSha256Hex(entry) && absl::StartsWith(entry, prefix)) matches.push_back(entry);
  }
  if (matches.empty()) {
    return absl::NotFoundError(absl::StrCat(
        "adapter \"", Sv(name), "\" has no version starting with ", prefix, "; check the digest"));
  }
  if (matches.size() > 1) {
    std::sort(matches.begin(), matches.end());
    return absl::InvalidArgumentError(absl::StrCat(
        "adapter \"", Sv(name), "\": version prefix ", prefix, " is ambiguous (", matches.size(),
        " versions match, e.g. ", matches[0], " and ", matches[1], "); give more hex digits"));
  }
  return LoadVersion(name_dir, Sv(name), matches[0]);
}

absl::Status AdapterStore::Delete(std::string_view name) {
  RETURN_IF_ERROR(ValidateAdapterName(name));
  const std::string name_dir = NameDir(name);
  std::string removed;
  {
    // A name that never existed gets no lock file.
    if (!FileExists(name_dir)) {
      ForgetCurrent(name);
      return NameNotFound(Sv(name));
    }
    ASSIGN_OR_RETURN(ScopedFd name_lock, LockName(name));
    if (!FileExists(absl::StrCat(name_dir, "/", kCurrentFile))) {
      ForgetCurrent(name);
      return NameNotFound(Sv(name));  // never published, or a publish that failed
    }
    // The whole name leaves adapters/ in one rename: a reader sees every file of a version or
    // none, never a half-removed one. The tree is removed from the staging area afterwards.
    ASSIGN_OR_RETURN(std::string area, AcquireStagingArea());
    removed = absl::StrCat(area, "/", kDeletedPrefix, UniqueToken());
    if (::rename(name_dir.c_str(), removed.c_str()) != 0) {
      absl::Status error = PosixError(
          errno, absl::StrCat("adapter \"", Sv(name), "\": moving ", name_dir, " to ", removed));
      ReleaseStagingArea();
      return error;
    }
    ForgetCurrent(name);
    absl::Status synced = FsyncDir(absl::StrCat(root_, "/", kAdaptersDir));
    if (!synced.ok()) LogWarning("adapter store: %s", synced.ToString());
  }
  RemoveStaged(removed);
  ReleaseStagingArea();
  return absl::OkStatus();
}

absl::StatusOr<AdapterStore::Page> AdapterStore::List(std::string_view page_token, int page_size) {
  if (!page_token.empty() && !ValidateAdapterName(page_token).ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("page token ", Quoted(page_token),
                     " was not issued by this server; start from an empty token"));
  }
  if (page_size <= 0) page_size = kDefaultListPageSize;
  page_size = std::min(page_size, kMaxListPageSize);
  ASSIGN_OR_RETURN(std::vector<std::string> entries,
                   ListDir(absl::StrCat(root_, "/", kAdaptersDir)));
  std::vector<std::string> names;
  for (std::string& entry : entries) {
    if (std::string_view(entry) > page_token && ValidateAdapterName(entry).ok()) {
      names.push_back(std::move(entry));
    }
  }
  std::sort(names.begin(), names.end());
  Page page;
  for (size_t i = 0; i < names.size(); ++i) {
    if (page.adapters.size() == static_cast<size_t>(page_size)) {
      page.next_page_token = page.adapters.back().name;
      break;
    }
    absl::StatusOr<StoredAdapter> adapter = Current(names[i]);
    if (adapter.ok()) {
      page.adapters.push_back(*std::move(adapter));
    } else if (!absl::IsNotFound(adapter.status())) {
      // One broken adapter must not hide all the others.
      LogWarning("adapter store: listing skips %s: %s", names[i], adapter.status().ToString());
    }
  }
  return page;
}

absl::Status AdapterStore::Verify(const StoredAdapter& adapter) const {
  const std::string& path = adapter.weights_path;
  ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    return PosixError(errno, absl::StrCat("adapter \"", adapter.name, "\" version ",
                                          adapter.version, ": opening ", path));
  }
  Sha256 hasher;
  uint64_t total = 0;
  std::string buffer(kHashBufferBytes, '\0');
  while (true) {
    ssize_t n = ::read(fd.get(), buffer.data(), buffer.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return PosixError(errno, absl::StrCat("reading ", path));
    }
    if (n == 0) break;
    hasher.Update(std::string_view(buffer.data(), static_cast<size_t>(n)));
    total += static_cast<uint64_t>(n);
  }
  const std::string digest = hasher.HexDigest();
  if (digest == adapter.version && total == adapter.size_bytes) return absl::OkStatus();
  return absl::DataLossError(absl::StrCat(
      "adapter \"", adapter.name, "\" version ", adapter.version, ": ", path, " now has sha256 ",
      digest, " and ", total, " bytes (expected ", adapter.size_bytes,
      "); the stored copy is corrupt: delete the adapter and upload it again"));
}

// ---- opening and crash recovery ----------------------------------------------------------------

namespace {

// Removes staging areas whose upload died: tmp/<token>.lock not held by anyone, with its
// tmp/<token>/, and anything else in tmp/ that has no lock file at all.
void CleanTmp(const std::string& tmp_dir) {
  absl::StatusOr<std::vector<std::string>> entries = ListDir(tmp_dir);
  if (!entries.ok()) return;
  for (const std::string& entry : *entries) {
    const std::string path = absl::StrCat(tmp_dir, "/", entry);
    if (absl::EndsWith(entry, kLockSuffix)) {
      ScopedFd lock = LockIfAbandoned(path);
      if (!lock.valid()) continue;  // a live upload, or someone else cleaned it
      RemoveTreeQuietly(path.substr(0, path.size() - std::strlen(kLockSuffix)));
      ::unlink(path.c_str());
      continue;
    }
    // An upload creates its lock file before its staging dir and removes it after, so a staging
    // dir without one is dead.
    struct stat st;
    const std::string lock_path = path + kLockSuffix;
    if (::lstat(lock_path.c_str(), &st) != 0 && errno == ENOENT) RemoveTreeQuietly(path);
  }
}

// Removes CURRENT.tmp-* left by a writer that died before its rename, and empty directories
// left by an upload that died before publishing. `lock_path` is the name's lock.
void CleanNameDir(const std::string& name_dir, const std::string& lock_path) {
  absl::StatusOr<std::vector<std::string>> entries = ListDir(name_dir);
  if (!entries.ok()) return;
  bool has_current = false;
  for (const std::string& entry : *entries) {
    if (entry == kCurrentFile) has_current = true;
    if (!absl::StartsWith(entry, kCurrentTmpPrefix)) continue;
    const std::string path = absl::StrCat(name_dir, "/", entry);
    ScopedFd lock = LockIfAbandoned(path);
    if (lock.valid()) ::unlink(path.c_str());
  }
  if (has_current) return;
  // A publish holds the name's lock from before it creates the name dir until CURRENT exists;
  // skip a name that is locked. rmdir only removes empty directories.
  absl::StatusOr<ScopedFd> lock = LockFile(lock_path, /*wait=*/false);
  if (!lock.ok() || !lock->valid()) return;
  if (::rmdir(absl::StrCat(name_dir, "/", kVersionsDir).c_str()) == 0 || errno == ENOENT) {
    ::rmdir(name_dir.c_str());
  }
}

}  // namespace

absl::Status AdapterStore::CleanLeftovers() {
  CleanTmp(absl::StrCat(root_, "/", kTmpDir));
  ASSIGN_OR_RETURN(std::vector<std::string> names, ListDir(absl::StrCat(root_, "/", kAdaptersDir)));
  for (const std::string& name : names) {
    if (ValidateAdapterName(name).ok()) CleanNameDir(NameDir(name), LockPath(name));
  }
  CleanLocks();
  return absl::OkStatus();
}

void AdapterStore::CleanLocks() {
  absl::StatusOr<std::vector<std::string>> entries = ListDir(absl::StrCat(root_, "/", kLocksDir));
  if (!entries.ok()) return;
  for (const std::string& entry : *entries) {
    if (!absl::EndsWith(entry, kLockSuffix)) continue;
    const std::string name = entry.substr(0, entry.size() - std::strlen(kLockSuffix));
    const std::string name_dir = NameDir(name), lock_path = LockPath(name);
    if (FileExists(name_dir)) continue;
    // Held by no one: a publisher that creates the name holds it first.
    ScopedFd lock = LockIfAbandoned(lock_path);
    if (lock.valid() && !FileExists(name_dir)) ::unlink(lock_path.c_str());
  }
}

absl::StatusOr<std::unique_ptr<AdapterStore>> AdapterStore::Open(const std::string& root,
                                                                 AdapterStoreOptions options) {
  if (root.empty()) {
    return absl::InvalidArgumentError("adapter store path is empty; set --adapter_store");
  }
  std::error_code ec;
  fs::path path = fs::absolute(root, ec).lexically_normal();
  if (!ec && !path.has_filename() && path.has_parent_path()) path = path.parent_path();
  if (!ec) fs::create_directories(path, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create adapter store directory ", root, ": ", ec.message(),
                     "; check --adapter_store and its permissions"));
  }
  auto store = std::unique_ptr<AdapterStore>(new AdapterStore(path.string(), options));
  bool created = false;
  RETURN_IF_ERROR(EnsureDir(absl::StrCat(store->root_, "/", kAdaptersDir), &created));
  RETURN_IF_ERROR(EnsureDir(absl::StrCat(store->root_, "/", kTmpDir), &created));
  RETURN_IF_ERROR(EnsureDir(absl::StrCat(store->root_, "/", kLocksDir), &created));
  RETURN_IF_ERROR(store->CleanLeftovers());
  return store;
}

}  // namespace loramux
