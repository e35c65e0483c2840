// Paged key/value cache with a byte budget fixed at construction.
//
// Storage per layer: keys and values of shape [num_blocks * block_size + 1, num_kv_heads, head_dim]
// on the model's device and dtype. The last slot is the padding slot: all zeros and never
// written, so a batch that pads shorter contexts reads nothing that belongs to a sequence (a
// non-finite value another request wrote can never reach a padded position, not even as 0 x inf). A
// sequence owns a list of blocks (its block table); token position p of a sequence lives in slot
// table[p / block_size] * block_size + p % block_size. A sequence that cannot get blocks is told so
// (Reserve returns false) and waits; the process never allocates beyond the budget.
//
// Thread-safety: not thread-safe; owned and used by the scheduler thread only.
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

#include <torch/types.h>

#include "formats/model_config.h"

namespace loramux {

class KvCache {
 public:
  static constexpr int64_t kDefaultBlockSize = 16;

  // Allocates floor(budget_bytes / bytes per block) blocks (at least one).
  KvCache(const ModelConfig& config, int64_t budget_bytes, torch::Device device,
          torch::ScalarType dtype, int64_t block_size = kDefaultBlockSize);

  int64_t block_size() const { return block_size_; }
  int64_t num_blocks() const { return num_blocks_; }
  int64_t free_blocks() const { return static_cast<int64_t>(free_.size()); }
  int64_t used_blocks() const { return num_blocks_ - free_blocks(); }
  // Bytes of K and V for one token across all layers.
  int64_t bytes_per_token() const { return bytes_per_token_; }
  static int64_t BytesPerToken(const ModelConfig& config, torch::ScalarType dtype);
  int64_t capacity_tokens() const { return num_blocks_ * block_size_; }
  // The zero slot to pad attention contexts with; no sequence owns it.
  int64_t padding_slot() const { return num_blocks_ * block_size_; }

  // Blocks sequence `id` still needs to hold `total_tokens` tokens.
  int64_t BlocksNeeded(int64_t id, int64_t total_tokens) const;
  // Grows sequence `id` to hold `total_tokens`; returns false (changing nothing) when the free
  // blocks do not suffice.
  bool Reserve(int64_t id, int64_t total_tokens);
  // Returns every block of `id` to the free list. Unknown ids are ignored.
  void Release(int64_t id);

  // Appends the flat slot of each position in [start, start + count) of `id` to `out`.
  // The positions must be reserved.
  void AppendSlots(int64_t id, int64_t start, int64_t count, std::vector<int64_t>& out) const;

  torch::Tensor& keys(int64_t layer) { return keys_[layer]; }
  torch::Tensor& values(int64_t layer) { return values_[layer]; }

 private:
  int64_t block_size_;
  int64_t num_blocks_;
  int64_t bytes_per_token_;
  std::vector<torch::Tensor> keys_;    // per layer [slots + 1, kv_heads, head_dim]
  std::vector<torch::Tensor> values_;  // per layer [slots + 1, kv_heads, head_dim]
  std::vector<int64_t> free_;          // free block ids (a stack)
  std::unordered_map<int64_t, std::vector<int64_t>> tables_;  // sequence id -> blocks
};

}  // namespace loramux
