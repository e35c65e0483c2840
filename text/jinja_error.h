// The one error type inside the Jinja interpreter. Parsing and rendering recurse deeply, so
// failures travel as a C++ exception carrying the final absl::Status; ChatTemplate catches it at
// its boundary and returns the Status (no exception leaves text/chat_template.h).
//   INVALID_ARGUMENT     the conversation or template is wrong (raise_exception, type errors,
//                        undefined variables used as values, syntax errors)
//   FAILED_PRECONDITION  the template uses a Jinja construct loramux does not implement
//   RESOURCE_EXHAUSTED   a render limit (steps, output size, call depth) was reached
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace loramux::jinja {

struct JinjaError {
  absl::Status status;
};

[[noreturn]] inline void Fail(absl::StatusCode code, std::string message) {
  throw JinjaError{absl::Status(code, std::move(message))};
}
[[noreturn]] inline void FailInvalid(std::string message) {
  Fail(absl::StatusCode::kInvalidArgument, std::move(message));
}
// what: e.g. `filter "wordwrap"`.
[[noreturn]] inline void FailNotImplemented(std::string_view what) {
  Fail(absl::StatusCode::kFailedPrecondition,
       "chat template uses " + std::string(what) + ", which loramux does not implement");
}

}  // namespace loramux::jinja
