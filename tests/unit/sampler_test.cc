#include "engine/sampler.h"

#include <cmath>
#include <random>

#include <gtest/gtest.h>

namespace loramux {
namespace {

std::vector<float> RandomLogits(int n, int seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> logits(n);
  for (float& v : logits) v = normal(rng);
  return logits;
}

std::vector<int32_t> Draw(SamplingParams p, const std::vector<float>& logits, int n) {
  Sampler sampler(p);
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) out.push_back(sampler.Sample(SummarizeLogits(logits.data(), logits.size())).token);
  return out;
}

TEST(SamplerTest, GreedyPicksTheArgmaxAndItsLogprob) {
  const std::vector<float> logits = {0.5f, 3.0f, -1.0f, 2.0f};
  Sampler sampler(SamplingParams{});
  const SampledToken t = sampler.Sample(SummarizeLogits(logits.data(), 4));
  EXPECT_EQ(t.token, 1);
  double z = 0;
  for (float v : logits) z += std::exp(v);
  EXPECT_NEAR(t.logprob, 3.0 - std::log(z), 1e-6);
}

TEST(SamplerTest, SameSeedSameTokensOtherSeedOtherTokens) {
  const auto logits = RandomLogits(320, 1);
  SamplingParams p;
  p.temperature = 1.5f;
  p.has_seed = true;
  p.seed = 42;
  EXPECT_EQ(Draw(p, logits, 50), Draw(p, logits, 50));
  SamplingParams q = p;
  q.seed = 43;
  EXPECT_NE(Draw(p, logits, 50), Draw(q, logits, 50));
}

TEST(SamplerTest, TopKOneAndTinyTopPAreGreedy) {
  const auto logits = RandomLogits(320, 2);
  const int32_t argmax = std::max_element(logits.begin(), logits.end()) - logits.begin();
  SamplingParams k;
  k.temperature = 2.0f;
  k.top_k = 1;
  for (int32_t t : Draw(k, logits, 20)) EXPECT_EQ(t, argmax);
  SamplingParams p;
  p.temperature = 2.0f;
  p.top_p = 1e-6f;
  for (int32_t t : Draw(p, logits, 20)) EXPECT_EQ(t, argmax);
}

TEST(SamplerTest, TopKKeepsOnlyTheKMostLikely) {
  const auto logits = RandomLogits(320, 3);
  std::vector<int32_t> order(320);
  for (int i = 0; i < 320; ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  SamplingParams p;
  p.temperature = 5.0f;
  p.top_k = 5;
  p.has_seed = true;
  for (int32_t t : Draw(p, logits, 200)) {
    EXPECT_NE(std::find(order.begin(), order.begin() + 5, t), order.begin() + 5);
  }
}

// Finding 7: a denormal temperature made every tempered logit +-inf, inf - inf = NaN, and the
// sampler fell through to the last token. The sampler alone (below the validator) stays defined.
TEST(SamplerTest, DenormalTemperatureStillPicksTheMostLikelyToken) {
  auto logits = RandomLogits(320, 4);
  logits.back() = -50.0f;  // the token a fall-through would return
  const int32_t argmax = std::max_element(logits.begin(), logits.end()) - logits.begin();
  for (float t : {1e-45f, 1e-38f, 1e-20f}) {
    SamplingParams p;
    p.temperature = t;
    p.has_seed = true;
    for (int32_t token : Draw(p, logits, 20)) EXPECT_EQ(token, argmax) << t;
  }
}

// top_logprobs: the likeliest tokens, likeliest first, each with the same logprob LogProb gives.
TEST(SamplerTest, TopLogProbsAreTheLikeliestInOrder) {
  auto logits = RandomLogits(320, 9);
  logits[17] = logits[18] = 40.0f;  // a tie: the lower id first
  const LogitsRow row = SummarizeLogits(logits.data(), 320);
  const auto top = TopLogProbs(row, 5);
  ASSERT_EQ(top.size(), 5u);
  EXPECT_EQ(top[0].first, 17);
  EXPECT_EQ(top[1].first, 18);
  for (size_t i = 0; i < top.size(); ++i) {
    EXPECT_FLOAT_EQ(top[i].second, LogProb(row, top[i].first));
    if (i > 0) EXPECT_GE(top[i - 1].second, top[i].second);
  }
  std::vector<float> sorted = logits;
  std::sort(sorted.rbegin(), sorted.rend());
  EXPECT_EQ(logits[top[4].first], sorted[4]);
  EXPECT_EQ(TopLogProbs(SummarizeLogits(logits.data(), 3), 20).size(), 3u);  // never more than the vocabulary
}

}  // namespace
}  // namespace loramux
