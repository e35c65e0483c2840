#include "common/logging.h"

#include <cstdio>
#include <mutex>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace loramux {

void LogLine(const char* level, const std::string& message) {
  static std::mutex mu;
  const std::string stamp = absl::FormatTime("%H:%M:%E3S", absl::Now(), absl::UTCTimeZone());
  std::lock_guard<std::mutex> lock(mu);
  std::fprintf(stderr, "%s %s %s\n", level, stamp.c_str(), message.c_str());
}

}  // namespace loramux
