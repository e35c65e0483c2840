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

struct SampledToken {
  int32_t token = 0;
  float logprob = 0.0f;  // log p(token) under the model's raw (untempered) distribution
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);

  // Picks a token from `logits` [vocab].
  SampledToken Sample(const float* logits, int64_t vocab);

 private:
  int32_t SampleFromDistribution(const float* logits, int64_t vocab);

  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> scratch_;
};

// log softmax(logits)[token], computed in double.
float LogProb(const float* logits, int64_t vocab, int64_t token);

// The `n` likeliest tokens with their log softmax, likeliest first (ties: lower id first).
std::vector<std::pair<int32_t, float>> TopLogProbs(const float* logits, int64_t vocab, int n);

}  // namespace loramux
