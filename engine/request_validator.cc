#include "engine/request_validator.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace loramux {
namespace {

bool IsGenerate(const InferenceRequest& r) { return r.kind == InferenceRequest::Kind::kGenerate; }

absl::Status CheckTokens(const InferenceRequest& r, const RequestLimits& limits) {
  if (r.tokens.empty()) {
    return absl::InvalidArgumentError(IsGenerate(r)
                                          ? "the prompt is empty; give at least one token"
                                          : "token_ids is empty; give at least one token");
  }
  if (static_cast<int64_t>(r.tokens.size()) > limits.max_prompt_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the prompt has ", r.tokens.size(), " tokens; the limit is ", limits.max_prompt_tokens));
  }
  for (size_t i = 0; i < r.tokens.size(); ++i) {
    if (r.tokens[i] < 0 || r.tokens[i] >= limits.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", r.tokens[i], " at position ", i,
                                                     " is outside the vocabulary [0, ",
                                                     limits.vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckAdapterScale(double scale, const RequestLimits& limits) {
  if (!std::isfinite(scale) || std::abs(scale) > limits.max_abs_adapter_scale) {
    return absl::InvalidArgumentError(
        absl::StrCat("adapter_scale is ", scale, "; use a value in [-",
                     limits.max_abs_adapter_scale, ", ", limits.max_abs_adapter_scale, "]"));
  }
  return absl::OkStatus();
}

absl::Status NormalizeSampling(SamplingParams& s, const RequestLimits& limits) {
  if (s.max_new_tokens == 0) s.max_new_tokens = limits.default_max_new_tokens;
  if (s.max_new_tokens < 0 || s.max_new_tokens > limits.max_new_tokens_limit) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_new_tokens is ", s.max_new_tokens, "; use a value in [1, ",
                     limits.max_new_tokens_limit, "], or 0 for the default (",
                     limits.default_max_new_tokens, ")"));
  }
  if (!std::isfinite(s.temperature) || s.temperature < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature is ", s.temperature, "; use 0 for greedy or a positive value"));
  }
  if (s.temperature < kGreedyBelowTemperature) s.temperature = 0;
  if (s.top_k < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k is ", s.top_k, "; use 0 (off) or a positive count"));
  }
  if (!std::isfinite(s.top_p) || s.top_p < 0 || s.top_p > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_p is ", s.top_p, "; use a value in (0, 1], or 0 for off"));
  }
  if (s.top_p == 0) s.top_p = 1;
  return absl::OkStatus();
}

absl::Status CheckStopStrings(const InferenceRequest& r, const RequestLimits& limits) {
  if (r.stop.empty()) return absl::OkStatus();
  if (!limits.has_tokenizer) {
    return absl::FailedPreconditionError(
        "stop strings need a tokenizer, and this model directory has no tokenizer.json; use "
        "stop_token_ids");
  }
  if (static_cast<int64_t>(r.stop.size()) > limits.max_stop_strings) {
    return absl::InvalidArgumentError(absl::StrCat(
        "stop has ", r.stop.size(), " strings; the limit is ", limits.max_stop_strings));
  }
  for (const std::string& stop : r.stop) {
    if (stop.empty() || static_cast<int64_t>(stop.size()) > limits.max_stop_string_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "a stop string has ", stop.size(), " bytes; use 1 to ", limits.max_stop_string_bytes));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckStopTokens(const InferenceRequest& r, const RequestLimits& limits) {
  if (static_cast<int64_t>(r.stop_token_ids.size()) > limits.max_stop_token_ids) {
    return absl::InvalidArgumentError(absl::StrCat("stop_token_ids has ", r.stop_token_ids.size(),
                                                   " entries; the limit is ",
                                                   limits.max_stop_token_ids));
  }
  for (int32_t t : r.stop_token_ids) {
    if (t < 0 || t >= limits.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "stop token id ", t, " is outside the vocabulary [0, ", limits.vocab_size, ")"));
    }
  }
  return CheckStopStrings(r, limits);
}

absl::Status CheckScoreOutput(const InferenceRequest& r, const RequestLimits& limits) {
  if (!r.return_logits) return absl::OkStatus();
  const int64_t bytes = static_cast<int64_t>(r.tokens.size()) * limits.vocab_size * 4;
  if (bytes > limits.max_score_logits_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("return_logits for ", r.tokens.size(), " tokens x ", limits.vocab_size,
                     " vocabulary is ", bytes, " bytes; the limit is ",
                     limits.max_score_logits_bytes, " (--max_score_logits_bytes): score at most ",
                     limits.max_score_logits_bytes / (limits.vocab_size * 4),
                     " tokens per request with return_logits, or use token_logprobs alone"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status NormalizeAndValidate(InferenceRequest& r, const RequestLimits& limits) {
  RETURN_IF_ERROR(CheckTokens(r, limits));
  RETURN_IF_ERROR(CheckAdapterScale(r.adapter_scale, limits));
  if (!IsGenerate(r)) return CheckScoreOutput(r, limits);
  RETURN_IF_ERROR(NormalizeSampling(r.sampling, limits));
  if (r.top_logprobs < 0 || r.top_logprobs > limits.max_top_logprobs) {
    return absl::InvalidArgumentError(absl::StrCat(
        "top_logprobs is ", r.top_logprobs, "; use a value in [0, ", limits.max_top_logprobs, "]"));
  }
  return CheckStopTokens(r, limits);
}

absl::Status CheckEffectiveScale(double adapter_max_abs_scale, double request_scale,
                                 double dtype_max) {
  const double effective = adapter_max_abs_scale * std::abs(request_scale);
  if (std::isfinite(effective) && effective <= dtype_max) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("adapter_scale ", request_scale, " times the adapter's largest module scale ",
                   adapter_max_abs_scale, " is ", effective, ", beyond the serving dtype's range (",
                   dtype_max, "); lower adapter_scale"));
}

}  // namespace loramux
