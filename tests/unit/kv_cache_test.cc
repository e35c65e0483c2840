// The paged KV cache's bookkeeping, without a model: budgets, reservations, slots, the padding
// slot, and the blocks a released sequence gives back.
#include "model/kv_cache.h"

#include <set>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

namespace loramux {
namespace {

ModelConfig SmallConfig() {
  ModelConfig c;
  c.num_layers = 2;
  c.num_kv_heads = 2;
  c.head_dim = 4;
  return c;
}

// 2 layers x K,V x 2 heads x 4 dims x 4 bytes = 128 bytes per token; 16-token blocks: 2 KiB each.
KvCache Cache(int64_t blocks) {
  return KvCache(SmallConfig(), blocks * 2048, torch::kCPU, torch::kFloat32);
}

TEST(KvCacheTest, TheBudgetBuysWholeBlocks) {
  EXPECT_EQ(KvCache::BytesPerToken(SmallConfig(), torch::kFloat32), 128);
  EXPECT_EQ(KvCache::BytesPerToken(SmallConfig(), torch::kBFloat16), 64);
  KvCache cache(SmallConfig(), 5 * 2048 + 2047, torch::kCPU, torch::kFloat32);
  EXPECT_EQ(cache.num_blocks(), 5);
  EXPECT_EQ(cache.capacity_tokens(), 80);
  EXPECT_EQ(KvCache(SmallConfig(), 1, torch::kCPU, torch::kFloat32).num_blocks(),
            1);  // at least one
  // One slot beyond the blocks: the zero padding slot.
  EXPECT_EQ(cache.keys(0).size(0), 81);
  EXPECT_EQ(cache.padding_slot(), 80);
}

TEST(KvCacheTest, ReserveGrowsASequenceOrChangesNothing) {
  KvCache cache = Cache(4);
  EXPECT_EQ(cache.BlocksNeeded(7, 17), 2);
  ASSERT_TRUE(cache.Reserve(7, 17));
  EXPECT_EQ(cache.used_blocks(), 2);
  EXPECT_EQ(cache.BlocksNeeded(7, 32), 0);  // room up to 32 already
  ASSERT_TRUE(cache.Reserve(7, 40));        // one more block
  EXPECT_EQ(cache.used_blocks(), 3);
  EXPECT_FALSE(cache.Reserve(8, 32));  // needs 2, 1 is free: nothing taken
  EXPECT_EQ(cache.used_blocks(), 3);
  ASSERT_TRUE(cache.Reserve(8, 16));
  EXPECT_EQ(cache.free_blocks(), 0);
}

TEST(KvCacheTest, SlotsMapPositionsIntoTheSequencesOwnBlocks) {
  KvCache cache = Cache(4);
  ASSERT_TRUE(cache.Reserve(1, 20));
  ASSERT_TRUE(cache.Reserve(2, 20));
  std::vector<int64_t> a, b;
  cache.AppendSlots(1, 0, 20, a);
  cache.AppendSlots(2, 0, 20, b);
  std::set<int64_t> seen(a.begin(), a.end());
  for (int64_t slot : b) EXPECT_TRUE(seen.insert(slot).second) << "slot " << slot << " shared";
  for (int64_t slot : seen) {
    EXPECT_GE(slot, 0);
    EXPECT_LT(slot, cache.padding_slot());
  }
  for (size_t p = 1; p < a.size(); ++p) {
    if (p % 16 != 0) EXPECT_EQ(a[p], a[p - 1] + 1) << "within a block, slots are consecutive";
  }
  std::vector<int64_t> tail;
  cache.AppendSlots(1, 16, 2, tail);  // positions 16 and 17: the second block's start
  EXPECT_EQ(tail, std::vector<int64_t>(a.begin() + 16, a.begin() + 18));
}

TEST(KvCacheTest, ReleaseReturnsEveryBlockForTheNextSequence) {
  KvCache cache = Cache(3);
  ASSERT_TRUE(cache.Reserve(1, 48));
  EXPECT_FALSE(cache.Reserve(2, 1));
  cache.Release(1);
  cache.Release(1);   // twice: ignored
  cache.Release(99);  // unknown: ignored
  EXPECT_EQ(cache.free_blocks(), 3);
  EXPECT_TRUE(cache.Reserve(2, 48));
}

}  // namespace
}  // namespace loramux
