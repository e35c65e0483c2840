// The tokenizer.json "added_tokens": strings matched in the input before the model sees it,
// each becoming its own id. Matching follows HuggingFace's AddedVocabulary: leftmost match,
// longest at that position; single_word rejects a match inside a word; lstrip/rstrip absorb
// the whitespace on that side into the token. Tokens with normalized=false match the raw input;
// those with normalized=true match the normalized text of the pieces in between.
//
// Thread-safety: immutable after construction; Split may run concurrently.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace loramux::text {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
  bool special = false;
};

// A byte range of the text and the added token it is (id), or -1 for text in between.
struct Segment {
  size_t begin = 0;
  size_t end = 0;
  int32_t id = -1;
};

// Finds one set of added tokens (either the raw-matched or the normalized-matched ones).
class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  // `patterns[i]` is what token `tokens[i]` matches (its content, or its normalized content).
  void Add(const AddedToken& token, std::string pattern);

  // Covers `text` with segments in order; text segments are non-empty.
  std::vector<Segment> Split(std::string_view text) const;
  bool empty() const { return entries_.empty(); }

 private:
  struct Entry {
    AddedToken token;
    std::string pattern;
  };
  // Longest pattern starting at `pos`: index into entries_, or -1.
  int LongestMatchAt(std::string_view text, size_t pos) const;

  std::vector<Entry> entries_;
  // A byte trie over the patterns: node -> (byte -> child); terminal node -> entry index.
  struct Node {
    int32_t entry = -1;
  };
  std::vector<Node> nodes_{Node{}};
  absl::flat_hash_map<uint64_t, int32_t> children_;  // (node << 8 | byte) -> child node
  bool first_byte_[256] = {};
};

}  // namespace loramux::text
