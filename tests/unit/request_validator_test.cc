// The one request validator: defaults filled, every field bounded, errors that name the field.
#include "engine/request_validator.h"
#include "tests/status_matchers.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace loramux {
namespace {

using ::testing::HasSubstr;

RequestLimits Limits() {
  RequestLimits limits;
  limits.vocab_size = 320;
  limits.max_prompt_tokens = 64;
  limits.max_new_tokens_limit = 100;
  limits.default_max_new_tokens = 16;
  limits.max_stop_token_ids = 8;
  limits.max_score_logits_bytes = 10 * 320 * 4;
  return limits;
}

InferenceRequest Generate() {
  InferenceRequest r;
  r.tokens = {1, 2, 3};
  return r;
}

void ExpectInvalid(InferenceRequest r, const std::string& message_part) {
  const absl::Status s = NormalizeAndValidate(r, Limits());
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(message_part));
}

TEST(RequestValidatorTest, FillsDefaults) {
  InferenceRequest r = Generate();
  r.sampling.top_p = 0;
  ASSERT_TRUE(NormalizeAndValidate(r, Limits()).ok());
  EXPECT_EQ(r.sampling.max_new_tokens, 16);
  EXPECT_EQ(r.sampling.top_p, 1.0f);
}

// Finding 7: logits / 1e-45 overflowed to inf - inf = NaN and the sampler fell through to the
// last token. Temperatures that small are greedy.
TEST(RequestValidatorTest, TinyTemperaturesAreGreedy) {
  for (float t : {1e-45f, 1e-30f, 1e-6f}) {
    InferenceRequest r = Generate();
    r.sampling.temperature = t;
    ASSERT_TRUE(NormalizeAndValidate(r, Limits()).ok());
    EXPECT_EQ(r.sampling.temperature, 0.0f) << t;
  }
  InferenceRequest r = Generate();
  r.sampling.temperature = 0.7f;
  ASSERT_TRUE(NormalizeAndValidate(r, Limits()).ok());
  EXPECT_EQ(r.sampling.temperature, 0.7f);
}

TEST(RequestValidatorTest, BadSamplingValuesNameTheField) {
  InferenceRequest r = Generate();
  r.sampling.temperature = -1;
  ExpectInvalid(r, "temperature");
  r = Generate();
  r.sampling.temperature = std::numeric_limits<float>::infinity();
  ExpectInvalid(r, "temperature");
  r = Generate();
  r.sampling.top_p = 1.5f;
  ExpectInvalid(r, "top_p");
  r = Generate();
  r.sampling.top_k = -2;
  ExpectInvalid(r, "top_k");
  r = Generate();
  r.sampling.max_new_tokens = 101;
  ExpectInvalid(r, "max_new_tokens");
  r = Generate();
  r.sampling.max_new_tokens = -1;
  ExpectInvalid(r, "max_new_tokens");
}

TEST(RequestValidatorTest, TokensMustBeInTheVocabularyAndWithinTheLimit) {
  InferenceRequest r = Generate();
  r.tokens = {};
  ExpectInvalid(r, "empty");
  r = Generate();
  r.tokens = {1, 320};
  ExpectInvalid(r, "token id 320 at position 1");
  r = Generate();
  r.tokens = {-1};
  ExpectInvalid(r, "token id -1");
  r = Generate();
  r.tokens.assign(65, 1);
  ExpectInvalid(r, "limit is 64");
}

// Finding 5: 2M stop ids per request grew memory and slowed every step.
TEST(RequestValidatorTest, StopTokenIdsAreBoundedAndInTheVocabulary) {
  InferenceRequest r = Generate();
  r.stop_token_ids.assign(8, 5);
  EXPECT_TRUE(NormalizeAndValidate(r, Limits()).ok());
  r.stop_token_ids.assign(9, 5);
  ExpectInvalid(r, "stop_token_ids has 9 entries; the limit is 8");
  r = Generate();
  r.stop_token_ids = {400};
  ExpectInvalid(r, "stop token id 400");
}

// Findings 2 and 3: adapter_scale 3e38 made LibTorch's checked conversion throw inside the step.
TEST(RequestValidatorTest, AdapterScaleIsFiniteAndBounded) {
  for (double scale : {3e38, -1e4, std::numeric_limits<double>::infinity(),
                       std::numeric_limits<double>::quiet_NaN()}) {
    InferenceRequest r = Generate();
    r.adapter_scale = scale;
    ExpectInvalid(r, "adapter_scale");
  }
  for (double scale : {0.0, -1.0, 0.5, 1000.0}) {
    InferenceRequest r = Generate();
    r.adapter_scale = scale;
    EXPECT_TRUE(NormalizeAndValidate(r, Limits()).ok()) << scale;
  }
}

TEST(RequestValidatorTest, EffectiveScaleMustBeFiniteInTheServingDtype) {
  EXPECT_TRUE(CheckEffectiveScale(2.0, 1000, 65504).ok());
  EXPECT_THAT(CheckEffectiveScale(100.0, 1000, 65504),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(CheckEffectiveScale(1e300, 1000, 3.4e38),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_TRUE(CheckEffectiveScale(1e30, -1000, 3.4e38).ok());
}

// Finding 11: Score's logits were len x vocab x 4 bytes with no bound (4 GiB at 8k x 128k).
TEST(RequestValidatorTest, ScoreLogitsAreBounded) {
  InferenceRequest r;
  r.kind = InferenceRequest::Kind::kScore;
  r.tokens.assign(10, 1);
  r.return_logits = true;
  EXPECT_TRUE(NormalizeAndValidate(r, Limits()).ok());
  r.tokens.assign(11, 1);
  ExpectInvalid(r, "return_logits for 11 tokens");
  r.return_logits = false;
  EXPECT_TRUE(NormalizeAndValidate(r, Limits()).ok());
}

}  // namespace
}  // namespace loramux
