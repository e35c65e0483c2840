// The batch planner alone, without a model: what one forward step holds.
#include "engine/batch_planner.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace loramux {
namespace {

// "entry:length:p|d" for each chunk, in order, to compare plans at a glance.
std::vector<std::string> Show(const std::vector<PlannedChunk>& plan) {
  std::vector<std::string> out;
  for (const PlannedChunk& c : plan) {
    out.push_back(std::to_string(c.entry) + ":" + std::to_string(c.length) +
                  (c.prefill ? ":p" : ":d"));
  }
  return out;
}

const int kA = 0, kB = 0;  // two adapters' identities: their addresses
const void* const A = &kA;
const void* const B = &kB;

TEST(BatchPlannerTest, DecodeTokensFirstThenPrefillWithinTheBudget) {
  const std::vector<PlannerEntry> entries = {
      {10, 0},   // prefill 10
      {4, 4},    // decodes
      {100, 0},  // prefill 100: cut to the rest of the budget
      {6, 6},    // decodes
      {5, 0},    // no budget left
  };
  EXPECT_THAT(Show(PlanStep(entries, 32)),
              ::testing::ElementsAre("1:1:d", "3:1:d", "0:10:p", "2:20:p"));
}

TEST(BatchPlannerTest, APartlyPrefilledPromptGoesOnWhereItStopped) {
  const std::vector<PlannerEntry> entries = {{50, 30}};
  EXPECT_THAT(Show(PlanStep(entries, 8)), ::testing::ElementsAre("0:8:p"));
  EXPECT_THAT(Show(PlanStep(entries, 64)), ::testing::ElementsAre("0:20:p"));
}

TEST(BatchPlannerTest, DecodeTokensAreNeverCut) {
  std::vector<PlannerEntry> entries(5, PlannerEntry{3, 3});
  entries.push_back({7, 0});  // waits: the decode tokens took the whole budget
  EXPECT_EQ(PlanStep(entries, 2).size(), 5u);
}

TEST(BatchPlannerTest, ChunksAreGroupedByAdapterAndScaleKeepingOrderWithinEach) {
  const std::vector<PlannerEntry> entries = {
      {1, 1, B, 1.0}, {1, 1, A, 1.0}, {1, 1, nullptr, 1.0},
      {1, 1, A, 0.5}, {1, 1, B, 1.0}, {9, 0, A, 1.0},
  };
  const std::vector<PlannedChunk> plan = PlanStep(entries, 64);
  ASSERT_EQ(plan.size(), 6u);
  // Each (adapter, scale) pair's chunks are contiguous, and in entry order within it.
  for (size_t i = 0; i < plan.size(); ++i) {
    for (size_t j = i + 1; j < plan.size(); ++j) {
      const PlannerEntry& x = entries[plan[i].entry];
      const PlannerEntry& y = entries[plan[j].entry];
      if (x.adapter == y.adapter && x.adapter_scale == y.adapter_scale) {
        for (size_t k = i + 1; k < j; ++k) {
          const PlannerEntry& z = entries[plan[k].entry];
          EXPECT_TRUE(z.adapter == x.adapter && z.adapter_scale == x.adapter_scale)
              << "split segment";
        }
        EXPECT_LT(plan[i].entry, plan[j].entry);
      }
    }
  }
  EXPECT_EQ(plan.front().entry, 2u);  // the base (null) first
}

TEST(BatchPlannerTest, NothingToDoIsAnEmptyPlan) {
  EXPECT_TRUE(PlanStep({}, 16).empty());
  const std::vector<PlannerEntry> prefill_only = {{4, 0}};
  EXPECT_TRUE(PlanStep(prefill_only, 0).empty());
}

}  // namespace
}  // namespace loramux
