#include "model/kv_cache.h"

#include <algorithm>
#include <vector>

#include "tensor/huge_pages.h"

namespace loramux {

int64_t KvCache::BytesPerToken(const ModelConfig& config, torch::ScalarType dtype) {
  const int64_t elem = static_cast<int64_t>(c10::elementSize(dtype));
  return 2 * config.num_layers * config.num_kv_heads * config.head_dim * elem;
}

KvCache::KvCache(const ModelConfig& config, int64_t budget_bytes, torch::Device device,
                 torch::ScalarType dtype, int64_t block_size)
    : block_size_(block_size) {
  bytes_per_token_ = BytesPerToken(config, dtype);
  num_blocks_ = std::max<int64_t>(1, budget_bytes / (bytes_per_token_ * block_size_));
  const std::vector<int64_t> shape = {num_blocks_ * block_size_ + 1, config.num_kv_heads,
                                      config.head_dim};
  // On the CPU in huge pages (decode attention streams every sequence's rows each step).
  auto zeros = [&] {
    return device.is_cpu()
               ? EmptyOnHugePages(shape, dtype).zero_()
               : torch::zeros(shape, torch::TensorOptions().device(device).dtype(dtype));
  };
  for (int64_t layer = 0; layer < config.num_layers; ++layer) {
    keys_.push_back(zeros());
    values_.push_back(zeros());
  }
  free_.reserve(num_blocks_);
  for (int64_t b = num_blocks_ - 1; b >= 0; --b) free_.push_back(b);
}

int64_t KvCache::BlocksNeeded(int64_t id, int64_t total_tokens) const {
  const int64_t want = (total_tokens + block_size_ - 1) / block_size_;
  auto it = tables_.find(id);
  const int64_t have = it == tables_.end() ? 0 : static_cast<int64_t>(it->second.size());
  return std::max<int64_t>(0, want - have);
}

bool KvCache::Reserve(int64_t id, int64_t total_tokens) {
  const int64_t need = BlocksNeeded(id, total_tokens);
  if (need > free_blocks()) return false;
  std::vector<int64_t>& table = tables_[id];
  for (int64_t i = 0; i < need; ++i) {
    table.push_back(free_.back());
    free_.pop_back();
  }
  return true;
}

void KvCache::Release(int64_t id) {
  auto it = tables_.find(id);
  if (it == tables_.end()) return;
  free_.insert(free_.end(), it->second.begin(), it->second.end());
  tables_.erase(it);
}

void KvCache::AppendSlots(int64_t id, int64_t start, int64_t count,
                          std::vector<int64_t>& out) const {
  const std::vector<int64_t>& table = tables_.at(id);
  for (int64_t p = start; p < start + count; ++p) {
    out.push_back(table[p / block_size_] * block_size_ + p % block_size_);
  }
}

}  // namespace loramux
