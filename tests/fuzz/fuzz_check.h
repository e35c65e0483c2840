// Invariant checks for the fuzz targets: a failed check prints what broke and aborts, which
// libFuzzer reports as a crash and saves the input for. Never compiled into loramux itself.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace loramux::fuzz {

[[noreturn]] inline void Fail(const char* condition, const char* file, int line,
                              const std::string& what) {
  std::fprintf(stderr, "\n*** fuzz invariant failed at %s:%d: %s\n*** %s\n", file, line, condition,
               what.c_str());
  std::abort();
}

// An error a parser returns for outside input: one of `allowed` codes, with a message that starts
// with the label the caller gave (so a user can tell which file is wrong).
inline bool IsInputError(const absl::Status& status, absl::string_view label,
                         std::initializer_list<absl::StatusCode> allowed) {
  bool code_ok = false;
  for (absl::StatusCode code : allowed) code_ok = code_ok || status.code() == code;
  return code_ok && absl::StartsWith(status.message(), label);
}

}  // namespace loramux::fuzz

// FUZZ_CHECK(condition, what...): `what` (absl::StrCat arguments, at least one) explains a failure.
#define FUZZ_CHECK(condition, ...)                                                        \
  do {                                                                                    \
    if (!(condition)) {                                                                   \
      ::loramux::fuzz::Fail(#condition, __FILE__, __LINE__, ::absl::StrCat(__VA_ARGS__)); \
    }                                                                                     \
  } while (0)
