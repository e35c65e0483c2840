#include "common/durable_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <filesystem>
#include <random>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/logging.h"
#include "common/status_macros.h"

namespace loramux {

namespace fs = std::filesystem;

absl::Status PosixError(int err, absl::string_view what) { return absl::ErrnoToStatus(err, what); }

std::string UniqueToken() {
  static std::atomic<uint64_t> counter{0};
  thread_local std::mt19937_64 rng(std::random_device{}());
  return absl::StrFormat("%d-%d-%016x", ::getpid(), counter.fetch_add(1), rng());
}

absl::Status WriteAll(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return PosixError(errno, absl::StrCat("writing ", path));
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

absl::Status FsyncFd(int fd, const std::string& path) {
  if (::fsync(fd) != 0) return PosixError(errno, absl::StrCat("fsync of ", path));
  return absl::OkStatus();
}

// A rename or create is durable only once its parent directory is fsync'ed.
absl::Status FsyncDir(const std::string& dir) {
  ScopedFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return PosixError(errno, absl::StrCat("opening directory ", dir));
  return FsyncFd(fd.get(), dir);
}

std::string ParentDir(const std::string& path) { return path.substr(0, path.rfind('/')); }

// Creates one directory level; `created` says whether it is new (and its parent fsync'ed).
// NOT_FOUND when the parent vanished (a concurrent Delete): callers retry.
absl::Status EnsureDir(const std::string& dir, bool* created) {
  *created = false;
  if (::mkdir(dir.c_str(), 0755) == 0) {
    *created = true;
    return FsyncDir(ParentDir(dir));
  }
  const int err = errno;
  if (err != EEXIST) return PosixError(err, absl::StrCat("creating directory ", dir));
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) return PosixError(errno, absl::StrCat("stat of ", dir));
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat(dir, " exists but is not a directory; remove it from the adapter store"));
  }
  return absl::OkStatus();
}

absl::Status WriteFileDurably(const std::string& path, std::string_view data) {
  ScopedFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!fd.valid()) return PosixError(errno, absl::StrCat("creating ", path));
  RETURN_IF_ERROR(WriteAll(fd.get(), data, path));
  return FsyncFd(fd.get(), path);
}

// NOT_FOUND when missing; OUT_OF_RANGE when larger than `max_bytes`.
absl::StatusOr<std::string> ReadSmallFile(const std::string& path, size_t max_bytes) {
  ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return PosixError(errno, absl::StrCat("opening ", path));
  std::string out;
  char buffer[16 << 10];
  while (true) {
    ssize_t n = ::read(fd.get(), buffer, sizeof(buffer));
    if (n < 0) {
      if (errno == EINTR) continue;
      return PosixError(errno, absl::StrCat("reading ", path));
    }
    if (n == 0) break;
    out.append(buffer, static_cast<size_t>(n));
    if (out.size() > max_bytes) {
      return absl::OutOfRangeError(absl::StrCat(path, " is larger than ", max_bytes, " bytes"));
    }
  }
  return out;
}

// Entry names of `dir` except "." and "..". NOT_FOUND when `dir` is missing.
absl::StatusOr<std::vector<std::string>> ListDir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return PosixError(errno, absl::StrCat("listing ", dir));
  std::vector<std::string> names;
  while (const dirent* entry = ::readdir(d)) {
    std::string_view name = entry->d_name;
    if (name != "." && name != "..") names.emplace_back(name);
  }
  ::closedir(d);
  return names;
}

void RemoveTreeQuietly(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) LogWarning("could not remove %s: %s", path, ec.message());
}

// Temp files and staging dirs are guarded by an flock so that Open() in another process sharing
// the root can tell a live writer's files from a crashed one's (the kernel drops the lock when
// its holder dies). Creates `path` exclusively and locks it; returns an invalid fd when the name
// is taken or a cleaner unlinked it before we locked it: the caller retries with a fresh name.
absl::StatusOr<ScopedFd> CreateLockedFile(const std::string& path) {
  ScopedFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!fd.valid()) {
    if (errno == EEXIST) return ScopedFd();
    return PosixError(errno, absl::StrCat("creating ", path));
  }
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) return ScopedFd();
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return PosixError(errno, absl::StrCat("fstat of ", path));
  if (st.st_nlink == 0) return ScopedFd();
  return fd;
}

namespace {

// Whether the file an fd refers to (`by_fd`, its fstat) is still linked at `path`: not unlinked,
// nor renamed away and replaced, since it was opened.
bool StillLinkedAt(const struct stat& by_fd, const std::string& path) {
  struct stat by_path;
  return by_fd.st_nlink > 0 && ::lstat(path.c_str(), &by_path) == 0 &&
         by_path.st_ino == by_fd.st_ino && by_path.st_dev == by_fd.st_dev;
}

}  // namespace

// Locks `path` when no live process holds it and it is still linked under that name; the
// returned fd (invalid otherwise) keeps the lock while the caller removes what it guards.
ScopedFd LockIfAbandoned(const std::string& path) {
  // O_RDWR: on NFS flock() is emulated with fcntl locks, whose exclusive form needs a writable fd.
  ScopedFd fd(::open(path.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid() || ::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) return ScopedFd();
  // A writer may have renamed it away (CURRENT.tmp-* -> CURRENT) after we opened it.
  struct stat by_fd;
  if (::fstat(fd.get(), &by_fd) != 0 || !StillLinkedAt(by_fd, path)) return ScopedFd();
  return fd;
}

absl::StatusOr<ScopedFd> LockFile(const std::string& path, bool wait) {
  // O_RDWR: on NFS flock() is emulated with fcntl locks, whose exclusive form needs a writable fd.
  ScopedFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644));
  if (!fd.valid()) return PosixError(errno, absl::StrCat("opening ", path));
  int rc;
  do {
    rc = ::flock(fd.get(), wait ? LOCK_EX : LOCK_EX | LOCK_NB);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0 && errno == EWOULDBLOCK) return ScopedFd();
  if (rc != 0) return PosixError(errno, absl::StrCat("locking ", path));
  struct stat by_fd;
  if (::fstat(fd.get(), &by_fd) != 0) return PosixError(errno, absl::StrCat("fstat of ", path));
  if (!StillLinkedAt(by_fd, path)) return ScopedFd();  // a cleaner unlinked it meanwhile
  return fd;
}

}  // namespace loramux
