// Fuzzes request validation (engine/request_validator.h): every field of an InferenceRequest, as
// any front end (gRPC, HTTP) may fill it from a client's message, against a server's limits.
//
// Checked beyond "no crash, no UB": a refusal is INVALID_ARGUMENT; an accepted request satisfies
// every bound the engine relies on (ids inside the vocabulary, counts and sizes under the limits,
// sampling parameters finite and in range, greedy below kGreedyBelowTemperature); normalizing is
// idempotent. CheckEffectiveScale accepts only products finite and within the dtype's range.
#include <fuzzer/FuzzedDataProvider.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#include "engine/request_validator.h"
#include "tests/fuzz/fuzz_check.h"

namespace loramux {
namespace {

// Mostly ordinary values, sometimes anything (NaN, infinities, denormals, extremes).
double AnyDouble(FuzzedDataProvider& in) {
  switch (in.ConsumeIntegralInRange(0, 3)) {
    case 0: return in.ConsumeFloatingPointInRange(-4.0, 4.0);
    case 1: return in.ConsumeFloatingPoint<double>();
    default: {
      uint64_t bits = in.ConsumeIntegral<uint64_t>();
      double d;
      std::memcpy(&d, &bits, sizeof d);
      return d;
    }
  }
}

std::vector<int32_t> Ids(FuzzedDataProvider& in, int32_t vocab) {
  std::vector<int32_t> ids(in.ConsumeIntegralInRange<size_t>(0, 64));
  for (int32_t& id : ids) {
    id = in.ConsumeBool() ? in.ConsumeIntegralInRange<int32_t>(0, vocab - 1)
                          : in.ConsumeIntegral<int32_t>();
  }
  if (in.ConsumeBool()) ids.resize(in.ConsumeIntegralInRange<size_t>(0, 5000), 1);  // long ones
  return ids;
}

void CheckAccepted(const InferenceRequest& r, const RequestLimits& limits) {
  FUZZ_CHECK(!r.tokens.empty() && static_cast<int64_t>(r.tokens.size()) <= limits.max_prompt_tokens,
             r.tokens.size(), " tokens");
  for (int32_t id : r.tokens) FUZZ_CHECK(id >= 0 && id < limits.vocab_size, "token id ", id);
  FUZZ_CHECK(
      std::isfinite(r.adapter_scale) && std::abs(r.adapter_scale) <= limits.max_abs_adapter_scale,
      "adapter_scale ", r.adapter_scale);
  if (r.kind == InferenceRequest::Kind::kScore) {
    if (r.return_logits) {
      FUZZ_CHECK(static_cast<int64_t>(r.tokens.size()) * limits.vocab_size * 4 <=
                     limits.max_score_logits_bytes,
                 "return_logits for ", r.tokens.size(), " tokens");
    }
    return;
  }
  const SamplingParams& s = r.sampling;
  FUZZ_CHECK(s.max_new_tokens >= 1 && s.max_new_tokens <= limits.max_new_tokens_limit,
             "max_new_tokens ", s.max_new_tokens);
  FUZZ_CHECK(std::isfinite(s.temperature) &&
                 (s.temperature == 0 || s.temperature >= kGreedyBelowTemperature),
             "temperature ", s.temperature);
  FUZZ_CHECK(s.top_k >= 0, "top_k ", s.top_k);
  FUZZ_CHECK(std::isfinite(s.top_p) && s.top_p > 0 && s.top_p <= 1, "top_p ", s.top_p);
  FUZZ_CHECK(static_cast<int64_t>(r.stop_token_ids.size()) <= limits.max_stop_token_ids,
             r.stop_token_ids.size(), " stop ids");
  for (int32_t id : r.stop_token_ids) FUZZ_CHECK(id >= 0 && id < limits.vocab_size, "stop id ", id);
}

// Score requests have no sampling to normalize (it may hold anything, NaN included).
bool SameRequest(const InferenceRequest& a, const InferenceRequest& b) {
  const bool same = a.tokens == b.tokens && a.adapter_scale == b.adapter_scale &&
                    a.stop_token_ids == b.stop_token_ids;
  if (a.kind == InferenceRequest::Kind::kScore) return same;
  return same && a.sampling.max_new_tokens == b.sampling.max_new_tokens &&
         a.sampling.temperature == b.sampling.temperature && a.sampling.top_k == b.sampling.top_k &&
         a.sampling.top_p == b.sampling.top_p;
}

}  // namespace
}  // namespace loramux

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loramux;
  FuzzedDataProvider in(data, size);
  RequestLimits limits;
  limits.vocab_size = in.ConsumeBool() ? 320 : 128256;
  limits.max_prompt_tokens = 4096;

  InferenceRequest r;
  r.kind = in.ConsumeBool() ? InferenceRequest::Kind::kGenerate : InferenceRequest::Kind::kScore;
  r.adapter_scale = AnyDouble(in);
  r.logprobs = in.ConsumeBool();
  r.return_logits = in.ConsumeBool();
  r.sampling.max_new_tokens = in.ConsumeBool() ? in.ConsumeIntegralInRange<int32_t>(-2, 5000)
                                               : in.ConsumeIntegral<int32_t>();
  r.sampling.temperature = static_cast<float>(AnyDouble(in));
  r.sampling.top_k = in.ConsumeIntegral<int32_t>();
  r.sampling.top_p = static_cast<float>(AnyDouble(in));
  r.sampling.has_seed = in.ConsumeBool();
  r.sampling.seed = in.ConsumeIntegral<uint64_t>();
  r.stop_token_ids = Ids(in, static_cast<int32_t>(limits.vocab_size));
  r.tokens = Ids(in, static_cast<int32_t>(limits.vocab_size));

  const absl::Status status = NormalizeAndValidate(r, limits);
  if (!status.ok()) {
    FUZZ_CHECK(status.code() == absl::StatusCode::kInvalidArgument, status.ToString());
  } else {
    CheckAccepted(r, limits);
    InferenceRequest again = r;
    const absl::Status twice = NormalizeAndValidate(again, limits);
    FUZZ_CHECK(twice.ok() && SameRequest(again, r),
               "normalizing twice differs: ", twice.ToString());
  }

  const double adapter_scale = std::abs(AnyDouble(in));
  const double request_scale = AnyDouble(in);
  const double dtype_max = in.ConsumeBool() ? 65504.0 : std::numeric_limits<float>::max();
  const absl::Status effective = CheckEffectiveScale(adapter_scale, request_scale, dtype_max);
  if (effective.ok()) {
    const double product = adapter_scale * std::abs(request_scale);
    FUZZ_CHECK(std::isfinite(product) && product <= dtype_max, "accepted effective scale ",
               product);
  } else {
    FUZZ_CHECK(effective.code() == absl::StatusCode::kInvalidArgument, effective.ToString());
  }
  return 0;
}
