#include "engine/logits_summary.h"

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "engine/sampler.h"

namespace loramux {
namespace {

std::vector<float> RandomLogits(int64_t rows, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 4.0f);
  std::vector<float> out(static_cast<size_t>(rows * vocab));
  for (float& v : out) v = normal(rng);
  return out;
}

// Every row against the one-row reference (double sums): the same argmax, the log normaliser
// within float32 summation error, across vocabulary sizes that are not multiples of a vector.
TEST(LogitsSummaryTest, MatchesTheOneRowReference) {
  for (int64_t vocab : {1, 7, 100, 32000, 151936}) {
    const int64_t rows = 5;
    const std::vector<float> logits = RandomLogits(rows, vocab, static_cast<uint32_t>(vocab));
    const std::vector<LogitsRowSummary> got =
        SummarizeLogitsRows(logits.data(), rows, vocab, std::vector<bool>(rows, true));
    ASSERT_EQ(got.size(), static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) {
      const LogitsRow want = SummarizeLogits(logits.data() + r * vocab, vocab);
      EXPECT_TRUE(got[r].finite);
      EXPECT_EQ(got[r].argmax, want.argmax) << "vocab " << vocab << " row " << r;
      EXPECT_NEAR(got[r].log_normalizer, want.log_normalizer,
                  1e-5 * std::abs(want.log_normalizer) + 1e-5)
          << "vocab " << vocab << " row " << r;
    }
  }
}

TEST(LogitsSummaryTest, TiesGoToTheLowestId) {
  std::vector<float> logits(300, -1.0f);
  logits[17] = logits[42] = logits[299] = 5.0f;
  const auto got = SummarizeLogitsRows(logits.data(), 1, 300, {true});
  EXPECT_EQ(got[0].argmax, 17);
  EXPECT_NEAR(got[0].log_normalizer, SummarizeLogits(logits.data(), 300).log_normalizer, 1e-5);
}

// A NaN or an infinity anywhere in a row marks that row (summarised or not) and no other.
TEST(LogitsSummaryTest, NonFiniteValuesMarkTheirRowOnly) {
  const int64_t rows = 6, vocab = 1000;
  std::vector<float> logits = RandomLogits(rows, vocab, 3);
  logits[1 * vocab + 999] = std::numeric_limits<float>::quiet_NaN();
  logits[2 * vocab + 0] = std::numeric_limits<float>::infinity();
  logits[3 * vocab + 500] = -std::numeric_limits<float>::infinity();
  logits[5 * vocab + 77] = std::numeric_limits<float>::max();  // finite, however large
  const auto got =
      SummarizeLogitsRows(logits.data(), rows, vocab, {true, true, false, true, false, true});
  EXPECT_TRUE(got[0].finite);
  EXPECT_FALSE(got[1].finite);
  EXPECT_FALSE(got[2].finite);
  EXPECT_FALSE(got[3].finite);
  EXPECT_TRUE(got[4].finite);
  EXPECT_TRUE(got[5].finite);
  EXPECT_EQ(got[5].argmax, 77);
  EXPECT_NEAR(got[5].log_normalizer, std::numeric_limits<float>::max(), 1e32);
}

// A row's summary is the same bits alone as in any batch.
TEST(LogitsSummaryTest, ARowsSummaryDoesNotDependOnItsBatch) {
  const int64_t rows = 33, vocab = 32000;
  const std::vector<float> logits = RandomLogits(rows, vocab, 9);
  const auto batch = SummarizeLogitsRows(logits.data(), rows, vocab, std::vector<bool>(rows, true));
  for (int64_t r = 0; r < rows; ++r) {
    const auto alone = SummarizeLogitsRows(logits.data() + r * vocab, 1, vocab, {true});
    EXPECT_EQ(alone[0].argmax, batch[r].argmax);
    EXPECT_EQ(alone[0].log_normalizer, batch[r].log_normalizer);
  }
}

}  // namespace
}  // namespace loramux
