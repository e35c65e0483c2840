// A HuggingFace tokenizer.json, implemented without Python or Rust: text -> token ids -> text,
// byte-exact with HuggingFace tokenizers 0.22 on the supported subset.
//
// Encode runs HuggingFace's pipeline: added tokens with normalized=false are matched on the raw
// text; each piece in between is normalized (normalizer.h), searched for added tokens with
// normalized=true, pre-tokenized (pre_tokenizer.h) and encoded by the BPE model (bpe_model.h);
// with add_special_tokens the post-processor adds BOS/EOS (post_processor.h).
// Decode maps ids to token strings (added tokens first, then the model's vocabulary), drops
// special tokens when asked, and runs the decoder chain (token_decoder.h).
//
// Loading refuses (UNIMPLEMENTED, naming it) every tokenizer.json feature it does not implement
// (Unigram/WordPiece models, BertNormalizer, Whitespace pre-tokenizer, ...) rather than tokenize
// differently; truncation and padding must be null.
//
// Thread-safety: a Tokenizer is immutable after loading except for the BPE piece cache, which is
// internally locked: Encode, Decode and the accessors may be called concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "text/added_tokens.h"
#include "text/bpe_model.h"
#include "text/normalizer.h"
#include "text/post_processor.h"
#include "text/pre_tokenizer.h"
#include "text/token_decoder.h"

namespace loramux::text {

class Tokenizer {
 public:
  // INVALID_ARGUMENT for malformed JSON or fields, UNIMPLEMENTED for unsupported features.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(std::string_view json);
  // As FromJson; NOT_FOUND when the file cannot be read. Errors name the path.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(const std::string& path);

  // INVALID_ARGUMENT when `text` is not valid UTF-8; RESOURCE_EXHAUSTED if a pattern's regex
  // gives up on it (PCRE2's match limits; not seen on any input tried, 2 MB runs included).
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text, bool add_special_tokens) const;
  // INVALID_ARGUMENT naming the first id that has no token (HuggingFace drops such ids silently).
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids, bool skip_special_tokens) const;

  // One more than the largest id of the model's vocabulary and the added tokens.
  int32_t vocab_size() const { return vocab_size_; }
  std::optional<int32_t> TokenToId(std::string_view token) const;
  // nullopt when `id` has no token.
  std::optional<std::string> IdToToken(int32_t id) const;
  // A special token is skipped by Decode(..., skip_special_tokens=true).
  bool IsSpecial(int32_t id) const;
  // Ids of the added tokens marked special, ascending.
  const std::vector<int32_t>& special_token_ids() const { return special_ids_; }
  const std::vector<AddedToken>& added_tokens() const { return added_tokens_; }

 private:
  friend class StreamDecoder;
  Tokenizer() = default;
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromPaddedJson(
      const simdjson::padded_string& json);
  absl::Status LoadAddedTokens(JsonElement root);
  void AssignAddedTokenIds(std::vector<AddedToken> tokens);
  // The token string of `id`, or nullptr.
  const std::string* TokenOf(int32_t id) const;
  // Encodes text between added tokens: normalize, split normalized added tokens, pre-tokenize, BPE.
  absl::Status EncodeText(std::string_view text, bool at_input_start,
                          std::vector<int32_t>& ids) const;
  absl::StatusOr<std::string> DecodeTokens(std::vector<std::string> tokens) const;
  bool decoder_has_byte_fallback() const { return decoder_ != nullptr && decoder_->HasByteFallback(); }

  std::unique_ptr<Normalizer> normalizer_;        // may be null
  std::unique_ptr<PreTokenizer> pre_tokenizer_;   // may be null
  std::unique_ptr<BpeModel> model_;
  std::optional<PostProcessor> post_processor_;
  std::unique_ptr<TokenDecoder> decoder_;         // may be null
  std::vector<AddedToken> added_tokens_;
  absl::flat_hash_map<int32_t, size_t> added_by_id_;  // id -> index in added_tokens_
  absl::flat_hash_map<std::string, int32_t> added_by_content_;
  AddedTokenMatcher raw_matcher_;         // normalized == false
  AddedTokenMatcher normalized_matcher_;  // normalized == true
  std::vector<bool> is_special_;          // by id
  std::vector<int32_t> special_ids_;
  int32_t vocab_size_ = 0;
};

// Incremental detokenization for streaming: feed generated ids one at a time; each call returns
// the text that became final. Pieces are always valid UTF-8 (a character split over several
// tokens waits for its last byte; a run of byte-fallback tokens waits for the token after it),
// and the concatenation of all pieces and Finish() equals tokenizer.Decode(all ids) exactly.
// Each step decodes only the previous token and the pending ones, so a step costs O(1) tokens.
//
// Thread-safety: one StreamDecoder per sequence, not shared between threads; the Tokenizer must
// outlive it.
class StreamDecoder {
 public:
  StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens);

  // The text now final (maybe empty). INVALID_ARGUMENT for an id with no token (state unchanged).
  absl::StatusOr<std::string> Step(int32_t id);
  // Flushes the held-back tail (as Decode would render it: an incomplete character is U+FFFD).
  absl::StatusOr<std::string> Finish();

 private:
  absl::StatusOr<std::string> DecodeWindow() const;

  const Tokenizer& tokenizer_;
  bool skip_special_tokens_;
  std::optional<int32_t> context_;  // the last token whose text is final
  std::string context_text_;        // Decode([context_]) alone
  std::vector<int32_t> pending_;    // ids after context_ whose text is not final yet
};

}  // namespace loramux::text
