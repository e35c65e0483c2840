// Durable, versioned adapter store on a local (or shared) directory.
//
// Layout under `root`:
//   adapters/<name>/CURRENT          text file: hex sha256 of the current version
//   adapters/<name>/versions/<sha256>/
//       MANIFEST.json                {name, format, size_bytes, sha256, created_unix}
//       adapter_config.json          the config JSON as uploaded
//       adapter_model.safetensors    the weights (the hashed bytes)
//   locks/<name>.lock                flock'ed by a publish or delete of <name>; kept after a
//                                    delete (so that waiters keep waiting on the same file),
//                                    removed by Open() once the name is gone and no one holds it
//   tmp/<token>.lock, tmp/<token>/   a process's staging area while it uploads or deletes
//                                    (flock'ed lock file); leftovers of dead processes are
//                                    removed at Open()
//
// A version is immutable and named by the sha256 of its weights file. Publishing is atomic:
// files are staged in tmp/, fsync'ed, the staging dir renamed into versions/, the parent fsync'ed,
// then CURRENT is replaced by rename of an fsync'ed temp file and the name dir fsync'ed. After a
// crash at any instant the store holds only complete versions; Open() removes leftovers.
//
// Uploads and deletes of one name (semantics, also across processes sharing the root): publish
// and delete take an exclusive flock on the name's lock file, so they are ordered.
//   - Delete removes the name with every version published before it: the name dir leaves
//     adapters/ in one rename (into the staging area, removed from there afterwards), so a reader
//     sees a whole version or none. NOT_FOUND when the name has no CURRENT.
//   - An upload that publishes after a delete creates the name again; a valid upload never fails
//     because of a concurrent delete or upload of the same name.
//   - A reader (Current, Resolve, the registry loading weights) racing a delete gets a version
//     that existed, complete, or NOT_FOUND; never DATA_LOSS or INTERNAL. DATA_LOSS means a
//     version's files were damaged outside the store's protocol.
// Readers take no lock. Name locks are flocks on regular files: local file systems, and NFS
// (where flock is emulated with byte-range locks).
//
// An upload in progress holds no file descriptor (its chunks are appended by open/write/close);
// the process's staging area holds one lock fd while any upload or delete is under way. A staged
// tree that cannot be removed (EMFILE, EIO) is logged and retried at the next upload, and Open()
// of any process sharing the root removes it once its owner is gone.
//
// Several processes may share one root. Current() notices a new CURRENT written by another
// process with one stat() of that file (inode/mtime/size), so a request never scans the directory.
//
// Thread-safety: all methods are thread-safe. Upload objects are used by one thread at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/durable_file.h"

namespace loramux {

enum class AdapterFormat { kPeft, kSeed };
std::string_view AdapterFormatName(AdapterFormat format);  // "PEFT" / "SEED"

// What a client declares before streaming the weights bytes.
struct AdapterManifest {
  std::string name;
  AdapterFormat format = AdapterFormat::kPeft;
  std::string config_json;
  uint64_t size_bytes = 0;  // of the weights file
  std::string sha256;       // hex sha256 of the weights file
};

// One immutable stored version.
struct StoredAdapter {
  std::string name;
  std::string version;  // lower-case hex sha256 of the weights file
  AdapterFormat format = AdapterFormat::kPeft;
  std::string config_json;
  uint64_t size_bytes = 0;
  std::string weights_path;  // absolute path of adapter_model.safetensors
  absl::Time created;
};

// Runs on the staged files before publishing; a non-OK status aborts the upload and is returned
// unchanged (e.g. FAILED_PRECONDITION when the adapter does not fit the base model).
using AdapterValidator =
    std::function<absl::Status(const AdapterManifest& manifest, const std::string& weights_path)>;

struct AdapterStoreOptions {
  uint64_t max_adapter_bytes = 1ull << 30;  // uploads declaring more get RESOURCE_EXHAUSTED
};

// List pages: page_size <= 0 gives the default; larger than the maximum is cut to it.
inline constexpr int kDefaultListPageSize = 100;
inline constexpr int kMaxListPageSize = 1000;

// INVALID_ARGUMENT unless name matches [A-Za-z0-9][A-Za-z0-9._-]{0,127}.
absl::Status ValidateAdapterName(std::string_view name);

class AdapterStore {
 public:
  // Creates `root` if needed and removes leftovers of crashed writers: tmp/ staging and
  // CURRENT.tmp-* files, empty name dirs. Staging still locked (flock) by a live upload, possibly
  // in another process sharing the root, is kept.
  static absl::StatusOr<std::unique_ptr<AdapterStore>> Open(const std::string& root,
                                                            AdapterStoreOptions options = {});
  ~AdapterStore();

  // An upload in progress. Destroying it without a successful Commit removes every staged byte.
  // It must not outlive the AdapterStore that began it. After any failed Append or any Commit the
  // upload is finished: further calls return FAILED_PRECONDITION.
  class Upload {
   public:
    virtual ~Upload() = default;
    // Appends weight bytes. RESOURCE_EXHAUSTED past the store limit; INVALID_ARGUMENT past the
    // declared size_bytes.
    virtual absl::Status Append(std::string_view chunk) = 0;
    // Checks the byte count (INVALID_ARGUMENT when truncated) and digest (DATA_LOSS), runs
    // `validator`, publishes and makes the version current. Idempotent re-upload of an existing
    // version with the same config just makes it current; a different config for the same
    // weights digest is ALREADY_EXISTS.
    virtual absl::StatusOr<StoredAdapter> Commit(const AdapterValidator& validator) = 0;
  };

  // Validates the manifest (name, sha256 hex, size limit) and opens a staging area.
  absl::StatusOr<std::unique_ptr<Upload>> BeginUpload(AdapterManifest manifest);

  // Convenience for tools/tests: uploads a weights file with a config, in one call.
  absl::StatusOr<StoredAdapter> Put(const AdapterManifest& manifest, std::string_view weights,
                                    const AdapterValidator& validator = nullptr);

  // The current version of `name` (NOT_FOUND when absent or deleted). One stat() per call.
  absl::StatusOr<StoredAdapter> Current(std::string_view name);
  // `name` at a version given by full hex digest or a unique prefix of it. NOT_FOUND when none
  // matches, INVALID_ARGUMENT when the prefix is ambiguous, empty or not hex. Lists only that
  // name's versions/ directory.
  absl::StatusOr<StoredAdapter> Resolve(std::string_view name, std::string_view version_prefix);

  // Removes `name` with all its versions (see the semantics above). NOT_FOUND if absent.
  absl::Status Delete(std::string_view name);

  struct Page {
    std::vector<StoredAdapter> adapters;  // current versions, sorted by name
    std::string next_page_token;          // empty at the end
  };
  // page_size <= 0 means kDefaultListPageSize; at most kMaxListPageSize are returned. Scans
  // adapters/. The token is opaque (the last name of the previous page).
  absl::StatusOr<Page> List(std::string_view page_token, int page_size);

  // Re-hashes the weights of `adapter`; DATA_LOSS when they no longer match its version.
  absl::Status Verify(const StoredAdapter& adapter) const;

  const std::string& root() const { return root_; }
  const AdapterStoreOptions& options() const { return options_; }

 private:
  AdapterStore(std::string root, AdapterStoreOptions options);
  // See adapter_store.cc.
  struct CachedPointer;
  class StagedUpload;

  std::string NameDir(std::string_view name) const;
  // locks/<name>.lock, which orders the publishes and deletes of one name.
  std::string LockPath(std::string_view name) const;
  // Waits for an exclusive flock on LockPath(name) (created when missing), held by the returned
  // fd.
  absl::StatusOr<ScopedFd> LockName(std::string_view name);
  // Removes lock files of names that no longer exist and that no one holds.
  void CleanLocks();
  // This process's staging area tmp/<token>/, created with its lock by the first user and removed
  // by the last: every Acquire is paired with one Release.
  absl::StatusOr<std::string> AcquireStagingArea();
  void ReleaseStagingArea();
  // Removes a staged tree; on failure logs it and keeps it for RetryRemovals.
  void RemoveStaged(const std::string& path);
  void RetryRemovals();
  absl::Status CleanLeftovers();
  // Reads CURRENT and its version afresh and caches the result.
  absl::StatusOr<StoredAdapter> ReloadCurrent(std::string_view name, const std::string& path);
  void ForgetCurrent(std::string_view name);
  // Moves a complete staging dir into versions/ and makes it current; on failure the store is
  // left as it was.
  absl::StatusOr<StoredAdapter> Publish(const AdapterManifest& manifest,
                                        const std::string& staging_dir);

  std::string root_;
  AdapterStoreOptions options_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<const CachedPointer>> current_cache_
      ABSL_GUARDED_BY(mu_);
  // Apart from mu_, so that file-system work on the staging area never delays Current().
  absl::Mutex staging_mu_;
  int staging_users_ ABSL_GUARDED_BY(staging_mu_) = 0;
  std::string staging_area_ ABSL_GUARDED_BY(staging_mu_);
  ScopedFd staging_lock_ ABSL_GUARDED_BY(staging_mu_);
  std::vector<std::string> pending_removals_ ABSL_GUARDED_BY(staging_mu_);
};

}  // namespace loramux
