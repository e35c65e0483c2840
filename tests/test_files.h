// Files for tests: whole-file reads and writes, and fresh temporary directories. Torch-free and
// gRPC-free, so every test can link it (loramux_testfiles); the model and server helpers
// (test_util.h, integration/server_harness.h) build on it.
// Thread-safety: the functions are thread-safe (for distinct paths).
#pragma once

#include <string>

namespace loramux::testing {

// The whole file, binary; "" when it is missing or unreadable.
std::string ReadFile(const std::string& path);
// Creates or truncates `path` with `content`; false when it could not be written.
bool WriteFile(const std::string& path, const std::string& content);
// A fresh directory under $TMPDIR (or /tmp); "" on failure. It is removed, with everything in it,
// when the process that made it exits normally (not in a child it forks); callers may remove it
// sooner.
std::string MakeTempDir();

}  // namespace loramux::testing
