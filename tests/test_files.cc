#include "tests/test_files.h"

#include <stdlib.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <vector>

namespace loramux::testing {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

bool WriteFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
  return out.good();
}

namespace {

// The directories this process made, removed at its exit. A forked child (a death test, a server
// started by fork) inherits the list and the handler, so the handler acts in the maker alone.
struct MadeDirs {
  std::mutex mutex;
  std::vector<std::string> paths;
  pid_t maker = 0;
};

MadeDirs& Made() {
  static MadeDirs* made = new MadeDirs();  // never destroyed: the exit handler reads it
  return *made;
}

void RemoveMadeDirs() {
  MadeDirs& made = Made();
  std::lock_guard<std::mutex> lock(made.mutex);
  if (getpid() != made.maker) return;
  for (const std::string& path : made.paths) {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  made.paths.clear();
}

}  // namespace

std::string MakeTempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string pattern =
      std::string(base != nullptr && *base ? base : "/tmp") + "/loramux-test-XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) return "";
  MadeDirs& made = Made();
  std::lock_guard<std::mutex> lock(made.mutex);
  if (made.maker != getpid()) {  // the first directory of this process
    made.maker = getpid();
    made.paths.clear();
    std::atexit(RemoveMadeDirs);
  }
  made.paths.push_back(pattern);
  return pattern;
}

}  // namespace loramux::testing
