#include "text/added_tokens.h"

#include <utf8proc.h>

#include "text/utf8.h"

namespace loramux::text {
namespace {

// Rust regex \w (Unicode): letters, marks, decimal numbers, connector punctuation, joiners.
bool IsWordChar(char32_t c) {
  if (c < 0x80)
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  if (c == 0x200C || c == 0x200D) return true;
  switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_PC: return true;
    default: return false;
  }
}

bool IsWhitespace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

// The code point ending at `end` (exclusive) and where it starts.
char32_t PreviousCodePoint(std::string_view s, size_t end, size_t* start) {
  size_t pos = end - 1;
  while (pos > 0 && (static_cast<unsigned char>(s[pos]) & 0xC0) == 0x80) --pos;
  *start = pos;
  size_t cursor = pos;
  return NextCodePoint(s, cursor);
}

}  // namespace

void AddedTokenMatcher::Add(const AddedToken& token, std::string pattern) {
  if (pattern.empty()) return;
  const int32_t index = static_cast<int32_t>(entries_.size());
  int32_t node = 0;
  for (unsigned char byte : pattern) {
    const uint64_t key = (static_cast<uint64_t>(node) << 8) | byte;
    auto it = children_.find(key);
    if (it == children_.end()) {
      nodes_.push_back(Node{});
      it = children_.emplace(key, static_cast<int32_t>(nodes_.size() - 1)).first;
    }
    node = it->second;
  }
  first_byte_[static_cast<unsigned char>(pattern[0])] = true;
  nodes_[node].entry = index;  // a later duplicate pattern wins
  entries_.push_back({token, std::move(pattern)});
}

int AddedTokenMatcher::LongestMatchAt(std::string_view text, size_t pos) const {
  int best = -1;
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    auto it =
        children_.find((static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(text[i]));
    if (it == children_.end()) break;
    node = it->second;
    if (nodes_[node].entry >= 0) best = nodes_[node].entry;
  }
  return best;
}

std::vector<Segment> AddedTokenMatcher::Split(std::string_view text) const {
  std::vector<Segment> segments;
  size_t covered = 0;  // end of the last emitted segment
  size_t pos = 0;
  while (pos < text.size()) {
    if (!first_byte_[static_cast<unsigned char>(text[pos])]) {
      ++pos;
      continue;
    }
    const int index = LongestMatchAt(text, pos);
    if (index < 0) {
      ++pos;
      continue;
    }
    const AddedToken& token = entries_[index].token;
    size_t start = pos, stop = pos + entries_[index].pattern.size();
    pos = stop;  // the search resumes after this match even when it is rejected below
    if (token.single_word) {
      size_t ignored = 0;
      const bool word_before = start > 0 && IsWordChar(PreviousCodePoint(text, start, &ignored));
      size_t next = stop;
      const bool word_after = stop < text.size() && IsWordChar(NextCodePoint(text, next));
      if (word_before || word_after) continue;
    }
    if (token.lstrip) {
      size_t new_start = start;
      while (new_start > covered) {
        size_t prev_start = 0;
        if (!IsWhitespace(PreviousCodePoint(text, new_start, &prev_start))) break;
        new_start = prev_start;
      }
      start = new_start;
    }
    if (token.rstrip) {
      while (stop < text.size()) {
        size_t next = stop;
        if (!IsWhitespace(NextCodePoint(text, next))) break;
        stop = next;
      }
      pos = stop;
    }
    if (covered < start) segments.push_back({covered, start, -1});
    segments.push_back({start, stop, token.id});
    covered = stop;
  }
  if (covered < text.size()) segments.push_back({covered, text.size(), -1});
  return segments;
}

}  // namespace loramux::text
