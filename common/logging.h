// Minimal thread-safe logging to stderr: `LogInfo("loaded %d tensors", n)`.
#pragma once

#include "absl/strings/str_format.h"

namespace loramux {

void LogLine(const char* level, const std::string& message);

template <typename... Args>
void LogInfo(const absl::FormatSpec<Args...>& format, const Args&... args) {
  LogLine("I", absl::StrFormat(format, args...));
}
template <typename... Args>
void LogWarning(const absl::FormatSpec<Args...>& format, const Args&... args) {
  LogLine("W", absl::StrFormat(format, args...));
}
template <typename... Args>
void LogError(const absl::FormatSpec<Args...>& format, const Args&... args) {
  LogLine("E", absl::StrFormat(format, args...));
}

}  // namespace loramux
