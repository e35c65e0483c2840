// tokenizer.json "model" of type BPE: a vocabulary (token -> id) and merges ranked by position.
// Encodes one pre-tokenized piece at a time the way HuggingFace does: each character is looked
// up (with continuing_subword_prefix / end_of_word_suffix), unknown characters become
// byte-fallback "<0xNN>" tokens or the unk token (fused when fuse_unk), then the lowest-ranked
// adjacent pair is merged (leftmost first on ties) until none applies. With ignore_merges a
// piece that is itself in the vocabulary is one token. dropout other than null/0 is refused.
//
// Thread-safety: Encode may run concurrently; the piece cache is sharded under mutexes.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "text/json_fields.h"

namespace loramux::text {

class BpeModel {
 public:
  // `json` is the "model" object. UNIMPLEMENTED for another model type or dropout.
  static absl::StatusOr<std::unique_ptr<BpeModel>> FromJson(JsonElement json);

  // Appends the ids of `piece` (valid UTF-8, non-empty) to `ids`.
  void Encode(std::string_view piece, std::vector<int32_t>& ids) const;

  // nullopt when absent.
  std::optional<int32_t> TokenToId(std::string_view token) const;
  // nullptr when `id` is not in the vocabulary.
  const std::string* IdToToken(int32_t id) const;
  // One more than the largest id.
  int32_t vocab_size() const { return static_cast<int32_t>(id_to_token_.size()); }
  // Number of tokens (HuggingFace's vocab size; less than vocab_size() if ids have gaps).
  int32_t token_count() const { return static_cast<int32_t>(vocab_.size()); }

 private:
  BpeModel() = default;
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  static uint64_t PairKey(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }
  // Initial symbols of `piece`: (id, byte length) per character or fallback byte.
  void InitialSymbols(std::string_view piece, std::vector<int32_t>& symbols) const;
  void MergeAll(std::vector<int32_t>& symbols) const;

  // The id of a single character when it is a token by itself, or -1 (the common lookup while
  // encoding, kept off the string map): code points below 0x10000 in a table, others hashed.
  int32_t CharId(char32_t cp) const;

  absl::flat_hash_map<std::string, int32_t> vocab_;
  std::vector<int32_t> bmp_char_ids_;
  absl::flat_hash_map<char32_t, int32_t> astral_char_ids_;
  std::vector<std::string> id_to_token_;  // "" for ids with no token
  std::vector<bool> has_token_;
  absl::flat_hash_map<uint64_t, Merge> merges_;
  std::optional<int32_t> unk_id_;
  std::array<int32_t, 256> byte_fallback_ids_{};  // -1 when the vocabulary lacks <0xNN>
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  std::string continuing_subword_prefix_;
  std::string end_of_word_suffix_;

  // Pieces already encoded (short pieces only), sharded to keep lock contention low.
  static constexpr size_t kCacheShards = 16;
  static constexpr size_t kCacheEntriesPerShard = 8192;
  static constexpr size_t kMaxCachedPieceBytes = 256;
  struct CacheShard {
    absl::Mutex mu;
    absl::flat_hash_map<std::string, std::vector<int32_t>> entries ABSL_GUARDED_BY(mu);
  };
  mutable std::array<CacheShard, kCacheShards> cache_;
};

}  // namespace loramux::text
