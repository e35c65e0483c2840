#include "engine/sampler.h"

#include <algorithm>
#include <cmath>

namespace loramux {

LogitsRow SummarizeLogits(const float* logits, int64_t vocab) {
  const float* top = std::max_element(logits, logits + vocab);
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - *top);
  return {logits, vocab, static_cast<int32_t>(top - logits), *top + std::log(sum)};
}

std::vector<std::pair<int32_t, float>> TopLogProbs(const LogitsRow& row, int n) {
  const float* logits = row.logits;
  const int64_t vocab = row.vocab;
  std::vector<int32_t> ids(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i) ids[static_cast<size_t>(i)] = static_cast<int32_t>(i);
  const size_t k = std::min(static_cast<size_t>(std::max(n, 0)), ids.size());
  std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(k), ids.end(),
                    [&](int32_t a, int32_t b) {
                      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
                    });
  std::vector<std::pair<int32_t, float>> top;
  top.reserve(k);
  for (size_t i = 0; i < k; ++i) top.emplace_back(ids[i], LogProb(row, ids[i]));
  return top;
}

Sampler::Sampler(const SamplingParams& params)
    : params_(params), rng_(params.has_seed ? params.seed : std::random_device{}()) {}

SampledToken Sampler::Sample(const LogitsRow& row) {
  const int32_t token =
      params_.temperature <= 0.0f ? row.argmax : SampleFromDistribution(row.logits, row.vocab);
  return {token, LogProb(row, token)};
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
