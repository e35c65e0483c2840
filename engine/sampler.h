// Next-token selection for one request: greedy, or temperature sampling with top-k / top-p, driven
// by a per-request seeded generator (same seed and logits, same tokens, on any device).
// Torch-free: works on a row of float32 logits copied to the host.
// Thread-safety: one Sampler per request, used by one thread at a time.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace loramux {

struct SamplingParams {
  int32_t max_new_tokens = 16;
  float temperature = 0.0f;  // 0 = greedy
  int32_t top_k = 0;         // 0 = off
  float top_p = 1.0f;        // >= 1 (or 0) = off
  uint64_t seed = 0;
  bool has_seed = false;  // false: seeded from std::random_device
};

// One row of float32 logits [vocab] on the host, with its argmax (the lowest id on ties) and its
// log normaliser log(sum_i exp(logits[i])). The scheduler computes the last two for a whole batch
// of rows at once (vectorised); SummarizeLogits does it for one row.
struct LogitsRow {
  const float* logits = nullptr;
  int64_t vocab = 0;
  int32_t argmax = 0;
  double log_normalizer = 0;
};

// Argmax and log normaliser of one row, accumulated in double.
LogitsRow SummarizeLogits(const float* logits, int64_t vocab);

// log softmax(row)[token].
inline float LogProb(const LogitsRow& row, int64_t token) {
  return static_cast<float>(row.logits[token] - row.log_normalizer);
}

struct SampledToken {
  int32_t token = 0;
  float logprob = 0.0f;  // log p(token) under the model's raw (untempered) distribution
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);

  // Picks a token from `row`.
  SampledToken Sample(const LogitsRow& row);

 private:
  int32_t SampleFromDistribution(const float* logits, int64_t vocab);

  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> scratch_;
};

// The `n` likeliest tokens with their log softmax, likeliest first (ties: lower id first).
std::vector<std::pair<int32_t, float>> TopLogProbs(const LogitsRow& row, int n);

}  // namespace loramux
