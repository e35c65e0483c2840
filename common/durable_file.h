// Small POSIX file helpers for durable, crash-safe writes: write + fsync + rename + directory
// fsync, exclusive lock files that tell a live writer's temp files from a crashed one's, and
// bounded reads. Used by the adapter store. All functions are thread-safe (they share no state
// but a counter); paths name the file in every error.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace loramux {

// Owns a file descriptor; closes it on destruction.
class ScopedFd {
 public:
  explicit ScopedFd(int fd = -1) : fd_(fd) {}
  ScopedFd(ScopedFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  ScopedFd& operator=(ScopedFd&& other) noexcept {
    Reset(std::exchange(other.fd_, -1));
    return *this;
  }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  ~ScopedFd() { Reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  void Reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

// An errno as a Status, prefixed by what was being done.
absl::Status PosixError(int err, absl::string_view what);

// A name unique across processes and threads (pid, counter, random bits).
std::string UniqueToken();

// Writes all of `data`, retrying on EINTR.
absl::Status WriteAll(int fd, std::string_view data, const std::string& path);
absl::Status FsyncFd(int fd, const std::string& path);
// A rename or create is durable only once its parent directory is fsync'ed.
absl::Status FsyncDir(const std::string& dir);
// Creates one directory level; `created` says whether it is new (and its parent fsync'ed).
// NOT_FOUND when the parent vanished (a concurrent delete): callers retry.
absl::Status EnsureDir(const std::string& dir, bool* created);
// Creates `path` with `data` and fsyncs it (not its directory).
absl::Status WriteFileDurably(const std::string& path, std::string_view data);
// NOT_FOUND when missing; OUT_OF_RANGE when larger than `max_bytes`.
absl::StatusOr<std::string> ReadSmallFile(const std::string& path, size_t max_bytes);
// Entry names of `dir` except "." and "..". NOT_FOUND when `dir` is missing.
absl::StatusOr<std::vector<std::string>> ListDir(const std::string& dir);
void RemoveTreeQuietly(const std::string& path);
// Creates `path` exclusively and flocks it; an invalid fd when the name is taken or a cleaner
// unlinked it before the lock: the caller retries with a fresh name. The kernel drops the lock
// when its holder dies, which is how Open() in another process tells leftovers from live work.
absl::StatusOr<ScopedFd> CreateLockedFile(const std::string& path);
// Locks `path` when no live process holds it and it is still linked under that name; the
// returned fd (invalid otherwise) keeps the lock while the caller removes what it guards.
ScopedFd LockIfAbandoned(const std::string& path);
// Opens `path` (creating it when missing) and takes an exclusive flock on it, waiting for it when
// `wait`. An invalid fd when !wait and someone holds it, or when a cleaner unlinked it before we
// locked it: the caller opens the name afresh.
absl::StatusOr<ScopedFd> LockFile(const std::string& path, bool wait);

}  // namespace loramux
