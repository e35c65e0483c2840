// A compiled PCRE2 pattern (UTF + UCP, JIT when available) for the tokenizer's Split
// pre-tokenizer and Replace normalizer/decoder. HuggingFace compiles these patterns with
// Oniguruma; PCRE2 accepts the same syntax for the constructs tokenizer.json files use
// (lookahead, \p{L}-style classes, (?i:...)). \s, \S, \w and \W are rewritten to Oniguruma's
// meaning (Unicode White_Space; letters, marks, decimal digits, connector punctuation).
//
// Thread-safety: immutable after Compile; FindAll may run concurrently (match data per call).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace loramux::text {

class Regex {
 public:
  // INVALID_ARGUMENT naming the pattern and PCRE2's message when it does not compile.
  static absl::StatusOr<std::unique_ptr<Regex>> Compile(std::string_view pattern);
  // A literal string (every character matched as itself); an empty one matches nothing.
  static absl::StatusOr<std::unique_ptr<Regex>> Literal(std::string_view literal);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Non-overlapping matches, left to right, as [begin, end) byte offsets. After an empty match
  // the search resumes one character later. `subject` must be valid UTF-8. RESOURCE_EXHAUSTED
  // when PCRE2 gives up (match or JIT stack limit), never a silently shorter list.
  absl::StatusOr<std::vector<std::pair<size_t, size_t>>> FindAll(std::string_view subject) const;

  const std::string& pattern() const { return pattern_; }

 private:
  Regex() = default;
  std::string pattern_;
  bool is_literal_ = false;  // match literal_ with string_view::find instead of PCRE2
  std::string literal_;
  void* code_ = nullptr;  // pcre2_code_8*
};

}  // namespace loramux::text
