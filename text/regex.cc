#include "text/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "text/str_cat.h"
#include "text/utf8.h"

namespace loramux::text {
namespace {

pcre2_code* Code(void* code) { return static_cast<pcre2_code*>(code); }

// Oniguruma (HuggingFace's engine) and PCRE2 with UCP disagree on two shorthand classes: PCRE2's
// \s also matches U+180E and its \w lacks combining marks. Spell both out as Oniguruma means them.
std::string OnigurumaShorthands(std::string_view pattern) {
  constexpr std::string_view kSpace = R"(\p{White_Space})", kNotSpace = R"(\P{White_Space})";
  constexpr std::string_view kWordItems = R"(\p{L}\p{M}\p{Nd}\p{Pc})";
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char next = pattern[++i];
      if (next == 's') {
        out += kSpace;
      } else if (next == 'S') {
        out += kNotSpace;
      } else if (next == 'w') {
        out += in_class ? Cat(kWordItems) : Cat("[", kWordItems, "]");
      } else if (next == 'W' && !in_class) {
        out += Cat("[^", kWordItems, "]");
      } else {
        out += c;
        out += next;
      }
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal member.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
      continue;
    }
    if (c == ']' && in_class) in_class = false;
    out += c;
  }
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Regex>> Regex::Compile(std::string_view pattern) {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  const std::string translated = OnigurumaShorthands(pattern);
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &error_code,
                                   &error_offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error_code, message, sizeof(message));
    return absl::InvalidArgumentError(Cat("regex pattern \"", pattern,
                                                   "\" does not compile at offset ", error_offset,
                                                   ": ", reinterpret_cast<const char*>(message)));
  }
  // JIT is an optimisation: without it (unsupported CPU) pcre2_match interprets the same pattern.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  auto regex = std::unique_ptr<Regex>(new Regex());
  regex->pattern_ = std::string(pattern);
  regex->code_ = code;
  return regex;
}

absl::StatusOr<std::unique_ptr<Regex>> Regex::Literal(std::string_view literal) {
  auto regex = std::unique_ptr<Regex>(new Regex());
  regex->pattern_ = std::string(literal);
  regex->literal_ = std::string(literal);
  regex->is_literal_ = true;
  return regex;
}

Regex::~Regex() {
  if (code_ != nullptr) pcre2_code_free(Code(code_));
}

absl::StatusOr<std::vector<std::pair<size_t, size_t>>> Regex::FindAll(
    std::string_view subject) const {
  std::vector<std::pair<size_t, size_t>> matches;
  if (is_literal_) {
    if (literal_.empty()) return matches;  // as HuggingFace: an empty pattern matches nothing
    for (size_t pos = subject.find(literal_); pos != std::string_view::npos;
         pos = subject.find(literal_, pos + literal_.size())) {
      matches.emplace_back(pos, pos + literal_.size());
    }
    return matches;
  }
  // Only the whole match is read, so one ovector pair suffices (pcre2_match returns 0 then).
  thread_local const std::unique_ptr<pcre2_match_data, void (*)(pcre2_match_data*)> holder(
      pcre2_match_data_create(1, nullptr), pcre2_match_data_free);
  pcre2_match_data* data = holder.get();
  const auto* bytes = reinterpret_cast<PCRE2_SPTR>(subject.data());
  size_t start = 0;
  while (start <= subject.size()) {
    const int rc = pcre2_match(Code(code_), bytes, subject.size(), start, PCRE2_NO_UTF_CHECK, data,
                               nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof(message));
      return absl::ResourceExhaustedError(Cat("regex \"", pattern_, "\" gave up on a ", subject.size(),
                                              "-byte text: ", reinterpret_cast<const char*>(message)));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data);
    const size_t begin = ovector[0], end = ovector[1];
    matches.emplace_back(begin, end);
    if (end > begin) {
      start = end;
    } else {  // empty match: resume one character later
      if (end >= subject.size()) break;
      start = end + Utf8CharLength(static_cast<unsigned char>(subject[end]));
    }
  }
  return matches;
}

}  // namespace loramux::text
