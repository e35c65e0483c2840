// The base model against HuggingFace transformers golden data (tests/data, see its README).
#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace loramux {
namespace {

using ::loramux::testing::DataPath;
using ::loramux::testing::ReadFile;
using ::loramux::testing::ToVector;
using ::loramux::testing::LoadGolden;
using ::loramux::testing::LoadModel;
using ::loramux::testing::MaxAbsDiff;
using ::loramux::testing::RunBatch;
using ::loramux::testing::TestSequence;

constexpr double kLogitTolerance = 1e-4;
constexpr int kSteps = 12;

class GoldenModelTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenModelTest, EachPromptAloneMatchesLogitsAndGreedyTokens) {
  auto model = LoadModel(GetParam());
  auto golden = LoadGolden("cases/" + GetParam() + "/base.safetensors");
  for (int p = 0; p < 3; ++p) {
    const std::string key = "p" + std::to_string(p) + ".";
    auto run = RunBatch(*model, {TestSequence{ToVector(golden[key + "input_ids"])}}, kSteps);
    EXPECT_LE(MaxAbsDiff(run.prompt_logits[0], golden[key + "logits"]), kLogitTolerance) << key;
    EXPECT_LE(MaxAbsDiff(run.step_logits[0], golden[key + "gen_scores"]), kLogitTolerance) << key;
    EXPECT_EQ(run.tokens[0], ToVector(golden[key + "gen_tokens"])) << key;
  }
}

TEST_P(GoldenModelTest, PackedBatchMatchesEachPromptAlone) {
  auto model = LoadModel(GetParam());
  auto golden = LoadGolden("cases/" + GetParam() + "/base.safetensors");
  std::vector<TestSequence> batch;
  for (int p = 0; p < 3; ++p) batch.push_back({ToVector(golden["p" + std::to_string(p) + ".input_ids"])});
  auto together = RunBatch(*model, batch, kSteps);
  for (int p = 0; p < 3; ++p) {
    auto alone = RunBatch(*model, {batch[p]}, kSteps);
    EXPECT_LE(MaxAbsDiff(together.prompt_logits[p], alone.prompt_logits[0]), kLogitTolerance);
    EXPECT_LE(MaxAbsDiff(together.step_logits[p], alone.step_logits[0]), kLogitTolerance);
    EXPECT_EQ(together.tokens[p], alone.tokens[0]);
    const std::string key = "p" + std::to_string(p) + ".";
    EXPECT_LE(MaxAbsDiff(together.step_logits[p], golden[key + "gen_scores"]), kLogitTolerance);
  }
}

TEST_P(GoldenModelTest, Bfloat16StaysCloseToFloat32) {
  auto model = LoadModel(GetParam(), torch::kBFloat16);
  auto golden = LoadGolden("cases/" + GetParam() + "/base.safetensors");
  for (int p = 0; p < 3; ++p) {
    const std::string key = "p" + std::to_string(p) + ".";
    auto run = RunBatch(*model, {TestSequence{ToVector(golden[key + "input_ids"])}}, 1);
    const torch::Tensor ref = golden[key + "logits"];
    const double relative = (run.prompt_logits[0] - ref).norm().item<double>() / ref.norm().item<double>();
    EXPECT_LE(relative, 3e-2) << key;
  }
}

INSTANTIATE_TEST_SUITE_P(Models, GoldenModelTest, ::testing::Values("llama-tiny", "qwen2-tiny"));

}  // namespace
}  // namespace loramux
