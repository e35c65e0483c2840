#include "engine/sampler.h"

#include <algorithm>
#include <cmath>

namespace loramux {

float LogProb(const float* logits, int64_t vocab, int64_t token) {
  const double max = *std::max_element(logits, logits + vocab);
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - max);
  return static_cast<float>(logits[token] - max - std::log(sum));
}

std::vector<std::pair<int32_t, float>> TopLogProbs(const float* logits, int64_t vocab, int n) {
  const double max = *std::max_element(logits, logits + vocab);
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - max);
  const double log_sum = std::log(sum);
  std::vector<int32_t> ids(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i) ids[static_cast<size_t>(i)] = static_cast<int32_t>(i);
  const size_t k = std::min(static_cast<size_t>(std::max(n, 0)), ids.size());
  std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(k), ids.end(),
                    [&](int32_t a, int32_t b) {
                      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
                    });
  std::vector<std::pair<int32_t, float>> top;
  top.reserve(k);
  for (size_t i = 0; i < k; ++i)
    top.emplace_back(ids[i], static_cast<float>(logits[ids[i]] - max - log_sum));
  return top;
}

Sampler::Sampler(const SamplingParams& params)
    : params_(params), rng_(params.has_seed ? params.seed : std::random_device{}()) {}

SampledToken Sampler::Sample(const float* logits, int64_t vocab) {
  int32_t token;
  if (params_.temperature <= 0.0f) {
    token = static_cast<int32_t>(std::max_element(logits, logits + vocab) - logits);
  } else {
    token = SampleFromDistribution(logits, vocab);
  }
  return {token, LogProb(logits, vocab, token)};
}

int32_t Sampler::SampleFromDistribution(const float* logits, int64_t vocab) {
  // Shift by the largest logit before dividing: every tempered value is then <= 0 (at worst -inf,
  // probability 0), so no temperature can overflow to inf - inf = NaN.
  const double top = *std::max_element(logits, logits + vocab);
  scratch_.resize(vocab);
  for (int64_t i = 0; i < vocab; ++i) {
    scratch_[i] = {static_cast<float>((logits[i] - top) / params_.temperature),
                   static_cast<int32_t>(i)};
  }
  auto by_logit = [](const auto& x, const auto& y) {
    return x.first > y.first || (x.first == y.first && x.second < y.second);
  };
  int64_t keep = vocab;
  if (params_.top_k > 0 && params_.top_k < vocab) keep = params_.top_k;
  const bool use_top_p = params_.top_p > 0.0f && params_.top_p < 1.0f;
  if (keep < vocab || use_top_p) {
    const int64_t sorted = use_top_p ? vocab : keep;
    std::partial_sort(scratch_.begin(), scratch_.begin() + sorted, scratch_.end(), by_logit);
  }
  std::vector<double> probs(keep);
  const double max =
      std::max_element(scratch_.begin(), scratch_.begin() + keep, [](const auto& x, const auto& y) {
        return x.first < y.first;
      })->first;
  double total = 0;
  for (int64_t i = 0; i < keep; ++i) total += probs[i] = std::exp(scratch_[i].first - max);
  if (use_top_p) {
    // Smallest prefix of the sorted distribution whose mass reaches top_p (at least one token).
    double mass = 0;
    int64_t nucleus = 0;
    while (nucleus < keep && mass < params_.top_p * total) mass += probs[nucleus++];
    keep = std::max<int64_t>(1, nucleus);
    total = mass;
  }
  double u = std::uniform_real_distribution<double>(0.0, total)(rng_);
  for (int64_t i = 0; i < keep; ++i) {
    if (u < probs[i]) return scratch_[i].second;
    u -= probs[i];
  }
  return scratch_[keep - 1].second;
}

}  // namespace loramux
