// The one validator every inference request passes, whichever front end (gRPC, HTTP) built it.
// It fills the defaults a front end leaves open and bounds every field, so nothing a client sends
// can make the engine misbehave, grow memory without bound or slow other requests' steps.
// Torch-free. Thread-safety: pure functions.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "engine/request.h"

namespace loramux {

struct RequestLimits {
  int64_t vocab_size = 0;
  int64_t max_prompt_tokens = 0;  // prompt (generate) or scored ids (score)
  int32_t max_new_tokens_limit = 4096;
  int32_t default_max_new_tokens = 16;  // used when max_new_tokens is 0
  int64_t max_stop_token_ids = 1024;
  int32_t max_top_logprobs = 20;                        // alternatives per generated token
  int64_t max_score_logits_bytes = int64_t{256} << 20;  // return_logits: len * vocab * 4 bytes
  double max_abs_adapter_scale = 1000;  // |adapter_scale|; larger multiplies s past any sane use
  bool has_tokenizer = false;           // stop strings need one
  int64_t max_stop_strings = 16;
  int64_t max_stop_string_bytes = 256;
};

// Temperatures below this sample greedily: dividing logits by a smaller one overflows float32
// (1e-45 gave inf - inf = NaN), and the distribution is one-hot long before it.
constexpr float kGreedyBelowTemperature = 1e-5f;

// Fills defaults (max_new_tokens 0 -> the default; temperature below kGreedyBelowTemperature ->
// 0, greedy; top_p 0 -> 1, off) and checks every field against `limits`. INVALID_ARGUMENT naming
// the field, the value and the accepted range.
absl::Status NormalizeAndValidate(InferenceRequest& request, const RequestLimits& limits);

// Whether the adapter's largest per-module scale times the request's scale stays finite in a
// dtype whose largest finite value is `dtype_max` (float32/bfloat16 3.4e38, float16 65504).
// INVALID_ARGUMENT naming both scales when it does not.
absl::Status CheckEffectiveScale(double adapter_max_abs_scale, double request_scale,
                                 double dtype_max);

}  // namespace loramux
