// The base model against HuggingFace transformers golden data (tests/data, see its README).
#include <cctype>
#include <fstream>
#include <tuple>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace loramux {
namespace {

using ::loramux::testing::DataPath;
using ::loramux::testing::LoadGolden;
using ::loramux::testing::LoadModel;
using ::loramux::testing::MaxAbsDiff;
using ::loramux::testing::ReadFile;
using ::loramux::testing::RunBatch;
using ::loramux::testing::TestDevices;
using ::loramux::testing::TestSequence;
using ::loramux::testing::ToVector;

constexpr double kLogitTolerance = 1e-4;  // on the CPU
constexpr int kSteps = 12;

// Parameterised over (model, device, packed): the CPU, and cuda:0 where LibTorch sees a GPU (issue
// 13: golden logits within 1e-3 in float32 on CUDA, whose reductions run in another order; 1e-4 on
// the CPU as before; bfloat16 within the same relative bound on both); the weights plain, or
// packed for oneDNN as the server serves them (LlamaModel::PackWeights: a no-op off the CPU).
class GoldenModelTest
    : public ::testing::TestWithParam<std::tuple<std::string, std::string, bool>> {
 protected:
  const std::string& Name() const { return std::get<0>(GetParam()); }
  std::unique_ptr<LlamaModel> Load(torch::ScalarType dtype = torch::kFloat32) const {
    auto model = LoadModel(Name(), dtype, std::get<1>(GetParam()));
    if (std::get<2>(GetParam()) && std::get<1>(GetParam()) == "cpu") {
      EXPECT_GT(model->PackWeights(), 0) << "this build packs no weight (oneDNN missing?)";
    }
    return model;
  }
  double LogitTolerance() const {
    return std::get<1>(GetParam()) == "cpu" ? kLogitTolerance : 1e-3;
  }
};

TEST_P(GoldenModelTest, EachPromptAloneMatchesLogitsAndGreedyTokens) {
  auto model = Load();
  auto golden = LoadGolden("cases/" + Name() + "/base.safetensors");
  const double tolerance = LogitTolerance();
  for (int p = 0; p < 3; ++p) {
    const std::string key = "p" + std::to_string(p) + ".";
    auto run = RunBatch(*model, {TestSequence{ToVector(golden[key + "input_ids"])}}, kSteps);
    EXPECT_LE(MaxAbsDiff(run.prompt_logits[0], golden[key + "logits"]), tolerance) << key;
    EXPECT_LE(MaxAbsDiff(run.step_logits[0], golden[key + "gen_scores"]), tolerance) << key;
    EXPECT_EQ(run.tokens[0], ToVector(golden[key + "gen_tokens"])) << key;
  }
}

TEST_P(GoldenModelTest, PackedBatchMatchesEachPromptAlone) {
  auto model = Load();
  auto golden = LoadGolden("cases/" + Name() + "/base.safetensors");
  const double tolerance = LogitTolerance();
  std::vector<TestSequence> batch;
  for (int p = 0; p < 3; ++p)
    batch.push_back({ToVector(golden["p" + std::to_string(p) + ".input_ids"])});
  auto together = RunBatch(*model, batch, kSteps);
  for (int p = 0; p < 3; ++p) {
    auto alone = RunBatch(*model, {batch[p]}, kSteps);
    EXPECT_LE(MaxAbsDiff(together.prompt_logits[p], alone.prompt_logits[0]), tolerance);
    EXPECT_LE(MaxAbsDiff(together.step_logits[p], alone.step_logits[0]), tolerance);
    EXPECT_EQ(together.tokens[p], alone.tokens[0]);
    const std::string key = "p" + std::to_string(p) + ".";
    EXPECT_LE(MaxAbsDiff(together.step_logits[p], golden[key + "gen_scores"]), tolerance);
  }
}

// Batching invariance, bit for bit, in both dtypes, as the server computes (weights packed): every
// step of a row (its GEMM rows, the per-row fused steps, decode attention over its own slots) is
// independent of its batch-mates, so a prompt's logits and greedy tokens are the same bits alone
// and in a batch. (Plain weights go through OpenBLAS, whose float32 blocking follows the row
// count: there the test above bounds the difference instead.)
TEST_P(GoldenModelTest, BatchedLogitsAreTheSameBitsAsEachPromptAlone) {
  if (std::get<1>(GetParam()) != "cpu" || !std::get<2>(GetParam())) {
    GTEST_SKIP() << "bit-exactness is the packed CPU path's contract";
  }
  auto golden = LoadGolden("cases/" + Name() + "/base.safetensors");
  std::vector<TestSequence> batch;
  for (int p = 0; p < 3; ++p)
    batch.push_back({ToVector(golden["p" + std::to_string(p) + ".input_ids"])});
  for (torch::ScalarType dtype : {torch::kFloat32, torch::kBFloat16}) {
    auto model = Load(dtype);
    auto together = RunBatch(*model, batch, kSteps);
    for (int p = 0; p < 3; ++p) {
      auto alone = RunBatch(*model, {batch[p]}, kSteps);
      EXPECT_TRUE(torch::equal(together.prompt_logits[p], alone.prompt_logits[0])) << dtype << p;
      EXPECT_TRUE(torch::equal(together.step_logits[p], alone.step_logits[0])) << dtype << p;
      EXPECT_EQ(together.tokens[p], alone.tokens[0]) << dtype << p;
    }
  }
}

TEST_P(GoldenModelTest, Bfloat16StaysCloseToFloat32) {
  auto model = Load(torch::kBFloat16);
  auto golden = LoadGolden("cases/" + Name() + "/base.safetensors");
  for (int p = 0; p < 3; ++p) {
    const std::string key = "p" + std::to_string(p) + ".";
    auto run = RunBatch(*model, {TestSequence{ToVector(golden[key + "input_ids"])}}, 1);
    const torch::Tensor ref = golden[key + "logits"];
    const double relative =
        (run.prompt_logits[0] - ref).norm().item<double>() / ref.norm().item<double>();
    EXPECT_LE(relative, 3e-2) << key;
  }
}

INSTANTIATE_TEST_SUITE_P(Models, GoldenModelTest,
                         ::testing::Combine(::testing::Values("llama-tiny", "qwen2-tiny"),
                                            ::testing::ValuesIn(TestDevices()), ::testing::Bool()),
                         [](const ::testing::TestParamInfo<GoldenModelTest::ParamType>& info) {
                           std::string name;  // e.g. llamatiny_cpu, qwen2tiny_cuda0_packed
                           for (char c : std::get<0>(info.param) + "_" + std::get<1>(info.param)) {
                             if (std::isalnum(static_cast<unsigned char>(c)) || c == '_') name += c;
                           }
                           return std::get<2>(info.param) ? name + "_packed" : name;
                         });

// Isolation finding 1: decode padded shorter contexts with cache slot 0, which belongs to another
// sequence, and masked only the scores, so 0 x inf = NaN reached every padded batch-mate (and kept
// reaching them after the attacker left). Padding now reads the cache's zero slot.
TEST(KvIsolationTest, NonFiniteValuesInOneSequenceNeverReachItsBatchMates) {
  auto model = LoadModel("llama-tiny");
  KvCache cache(model->config(), 1 << 20, model->device(), model->dtype());
  std::vector<int64_t> attacker, victim = {5, 9, 11};
  for (int64_t i = 0; i < 20; ++i) attacker.push_back(i * 7 % 320);
  // The attacker reserves first and so owns block 0 (slot 0), the old padding slot.
  ASSERT_TRUE(cache.Reserve(0, 21));
  ASSERT_TRUE(cache.Reserve(1, 4));
  ForwardBatch prefill;
  prefill.token_ids = attacker;
  prefill.token_ids.insert(prefill.token_ids.end(), victim.begin(), victim.end());
  prefill.chunks = {{0, 0, 0, 20, false}, {1, 0, 20, 3, false}};
  auto first = model->Forward(prefill, cache);
  ASSERT_TRUE(first.ok()) << first.status();
  std::vector<int64_t> attacker_slots;
  cache.AppendSlots(0, 0, 21, attacker_slots);
  const torch::Tensor poisoned = torch::tensor(attacker_slots);
  for (int64_t l = 0; l < model->config().num_layers; ++l) {
    cache.keys(l).index_fill_(0, poisoned, std::numeric_limits<float>::infinity());
    cache.values(l).index_fill_(0, poisoned, std::numeric_limits<float>::infinity());
  }
  ForwardBatch decode;
  decode.token_ids = {first->select(0, 0).argmax().item<int64_t>(),
                      first->select(0, 1).argmax().item<int64_t>()};
  decode.chunks = {{0, 20, 0, 1, false}, {1, 3, 1, 1, false}};
  auto second = model->Forward(decode, cache);
  ASSERT_TRUE(second.ok()) << second.status();
  const torch::Tensor victim_row = second->select(0, 1);
  ASSERT_TRUE(victim_row.isfinite().all().item<bool>());
  auto alone = RunBatch(*model, {TestSequence{victim}}, 2);
  EXPECT_LE(MaxAbsDiff(victim_row, alone.step_logits[0].select(0, 1)), kLogitTolerance);
}

}  // namespace
}  // namespace loramux
