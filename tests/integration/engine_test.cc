// The engine end to end in-process: store -> registry -> scheduler -> model, with requests over
// several adapters (LoRA, DoRA) and the base in flight together, checked against golden tokens.
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <unistd.h>

#include "absl/synchronization/notification.h"
#include "common/sha256.h"
#include "engine/engine.h"
#include "formats/safetensors.h"
#include "nlohmann/json.hpp"
#include "tests/status_matchers.h"
#include "tests/test_util.h"

namespace loramux {
namespace {

using ::loramux::testing::DataPath;
using ::loramux::testing::DeviceName;
using ::loramux::testing::LoadGolden;
using ::loramux::testing::ReadFile;
using ::loramux::testing::TestDevices;
using ::loramux::testing::ToVector;

// Collects one request's results; Wait() blocks the test thread until OnFinish.
class Collector : public RequestObserver {
 public:
  void OnTokens(const std::vector<int32_t>& tokens, const std::vector<float>& logprobs,
                const std::string& text) override {
    std::lock_guard<std::mutex> lock(mu_);
    this->tokens.insert(this->tokens.end(), tokens.begin(), tokens.end());
  }
  void OnScore(ScoreResult result) override { score = std::move(result); }
  void OnFinish(const absl::Status& s, FinishReason r, const Usage& u,
                const std::string& v) override {
    status = s;
    reason = r;
    usage = u;
    version = v;
    done.Notify();
  }
  bool Wait(absl::Duration timeout = absl::Seconds(60)) {
    return done.WaitForNotificationWithTimeout(timeout);
  }

  std::mutex mu_;
  std::vector<int32_t> tokens;
  ScoreResult score;
  absl::Status status;
  FinishReason reason = FinishReason::kLength;
  Usage usage;
  std::string version;
  absl::Notification done;
};

// Every test runs on each device of TestDevices() (the CPU; also a GPU where LibTorch sees one).
class EngineTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    store_dir_ = ::testing::TempDir() + "/engine_store_" + std::to_string(::getpid());
    std::filesystem::remove_all(store_dir_);
    EngineOptions options;
    options.model_dir = DataPath("llama-tiny");
    options.device = GetParam();
    options.adapter_store = store_dir_;
    options.scheduler.kv_cache_bytes = kv_cache_bytes_;
    options.scheduler.max_running_requests = 16;
    options.scheduler.max_batch_tokens = 64;  // forces chunked prefill sometimes
    auto engine = Engine::Create(options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = *std::move(engine);
    results_ = nlohmann::json::parse(ReadFile(DataPath("cases/results.json")));
  }
  void TearDown() override {
    engine_.reset();
    std::filesystem::remove_all(store_dir_);
  }

  StoredAdapter Upload(const std::string& name) {
    return Upload(name, ReadFile(DataPath("adapters/" + name + "/adapter_config.json")),
                  ReadFile(DataPath("adapters/" + name + "/adapter_model.safetensors")));
  }

  StoredAdapter Upload(const std::string& name, const std::string& config_json,
                       const std::string& weights) {
    AdapterManifest manifest;
    manifest.name = name;
    manifest.config_json = config_json;
    manifest.size_bytes = weights.size();
    manifest.sha256 = Sha256Hex(weights);
    auto stored = engine_->store().Put(manifest, weights, engine_->registry().Validator());
    EXPECT_TRUE(stored.ok()) << stored.status();
    return *stored;
  }

  // Golden greedy tokens of `model/adapter` for prompt p.
  std::pair<std::vector<int32_t>, std::vector<int32_t>> Golden(const std::string& run, int p) {
    const auto& entry = results_["generation"][run][p];
    return {entry["input_ids"].get<std::vector<int32_t>>(),
            entry["new_tokens"].get<std::vector<int32_t>>()};
  }

  std::shared_ptr<Collector> Generate(const std::string& adapter, std::vector<int32_t> prompt,
                                      int max_new = 12,
                                      absl::Duration deadline = absl::InfiniteDuration()) {
    InferenceRequest r;
    r.adapter = adapter;
    r.tokens = std::move(prompt);
    r.sampling.max_new_tokens = max_new;
    r.deadline = absl::Now() + deadline;
    auto c = std::make_shared<Collector>();
    auto id = engine_->scheduler().Submit(r, c);
    if (!id.ok()) {
      c->OnFinish(id.status(), FinishReason::kCancelled, {}, "");
    } else {
      last_id_ = *id;
    }
    return c;
  }

  int64_t kv_cache_bytes_ = 4 << 20;
  std::string store_dir_;
  std::unique_ptr<Engine> engine_;
  nlohmann::json results_;
  uint64_t last_id_ = 0;
};

TEST_P(EngineTest, ConcurrentRequestsOverAdaptersAndBaseMatchGoldenTokens) {
  const std::vector<std::string> adapters = {"lora-qv-r8", "dora-qkvo-r8", "lora-all-r4-rslora",
                                             "lora-pattern", "dora-mlp-r4"};
  for (const auto& a : adapters) Upload(a);
  struct Expect {
    std::shared_ptr<Collector> c;
    std::vector<int32_t> tokens;
  };
  std::vector<Expect> expects;
  for (int round = 0; round < 2; ++round) {
    for (int p = 0; p < 3; ++p) {
      auto [prompt, tokens] = Golden("llama-tiny/base", p);
      expects.push_back({Generate("", prompt), tokens});
      for (const auto& a : adapters) {
        auto [ap, at] = Golden("llama-tiny/" + a, p);
        expects.push_back({Generate(a, ap), at});
      }
    }
  }
  for (auto& e : expects) {
    ASSERT_TRUE(e.c->Wait());
    EXPECT_TRUE(e.c->status.ok()) << e.c->status;
    EXPECT_EQ(e.c->tokens, e.tokens);
    EXPECT_EQ(e.c->usage.generated_tokens, 12);
  }
  EXPECT_EQ(engine_->registry().stats().loads, static_cast<int64_t>(adapters.size()));
}

// lora-qv-r8 with both factors multiplied by `factor`: finite values, so the upload is valid, but
// at 1e20 its delta (~1e40) overflows float32 and its own activations and KV entries turn infinite.
std::string ScaledAdapterWeights(const std::string& name, float factor) {
  auto tensors = LoadGolden("adapters/" + name + "/adapter_model.safetensors");
  std::vector<torch::Tensor> keep;
  std::vector<TensorView> views;
  for (const auto& [key, t] : tensors) {
    keep.push_back((t * factor).contiguous());
    TensorView v;
    v.name = key;
    v.dtype = DType::kF32;
    v.shape = keep.back().sizes().vec();
    v.data = static_cast<const uint8_t*>(keep.back().data_ptr());
    v.nbytes = keep.back().numel() * 4;
    views.push_back(v);
  }
  return SerializeSafetensors(views);
}

// Isolation findings 1 and 2: a request whose own activations overflow used to poison the KV
// slot its batch-mates padded with (their tokens turned to garbage, even after it left) or, with
// adapter_scale 3e38, to fail the whole batch with INTERNAL. Now it fails alone and clearly.
TEST_P(EngineTest, HostileRequestFailsAloneAndNeverChangesOthersTokens) {
  Upload("lora-qv-r8");
  Upload("hostile", ReadFile(DataPath("adapters/lora-qv-r8/adapter_config.json")),
         ScaledAdapterWeights("lora-qv-r8", 1e20f));
  struct Expect {
    std::shared_ptr<Collector> c;
    std::vector<int32_t> tokens;
  };
  for (int round = 0; round < 2; ++round) {
    std::vector<std::shared_ptr<Collector>> hostile;
    std::vector<Expect> honest;
    if (round == 0) {  // submitted first, so the attacker owns KV block 0 (the old padding slot)
      auto [prompt, unused] = Golden("llama-tiny/base", 0);
      hostile.push_back(Generate("hostile", {prompt.begin(), prompt.begin() + 2}, 12));
      hostile.push_back(Generate("hostile", prompt, 12));
    }
    for (int p = 0; p < 3; ++p) {
      auto [prompt, tokens] = Golden("llama-tiny/base", p);
      honest.push_back({Generate("", prompt), tokens});
      auto [ap, at] = Golden("llama-tiny/lora-qv-r8", p);
      honest.push_back({Generate("lora-qv-r8", ap), at});
    }
    InferenceRequest huge;
    huge.adapter = "lora-qv-r8";
    huge.adapter_scale = 3e38;
    huge.tokens = {1, 2, 3};
    EXPECT_THAT(engine_->scheduler().Submit(huge, std::make_shared<Collector>()).status(),
                StatusIs(absl::StatusCode::kInvalidArgument));
    for (auto& c : hostile) {
      ASSERT_TRUE(c->Wait());
      EXPECT_THAT(c->status, StatusIs(absl::StatusCode::kInvalidArgument)) << c->status;
      EXPECT_NE(std::string(c->status.message()).find("not finite"), std::string::npos)
          << c->status;
    }
    for (auto& e : honest) {
      ASSERT_TRUE(e.c->Wait());
      EXPECT_TRUE(e.c->status.ok()) << "round " << round << ": " << e.c->status;
      EXPECT_EQ(e.c->tokens, e.tokens) << "round " << round;
    }
  }
  for (int i = 0; i < 200 && engine_->scheduler().stats().kv_used_blocks > 0; ++i)
    absl::SleepFor(absl::Milliseconds(10));
  EXPECT_EQ(engine_->scheduler().stats().kv_used_blocks, 0);
}

TEST_P(EngineTest, HundredRequestsForOneColdAdapterCauseOneLoad) {
  Upload("dora-qkvo-r8");
  auto [prompt, tokens] = Golden("llama-tiny/dora-qkvo-r8", 1);
  std::vector<std::shared_ptr<Collector>> runs;
  for (int i = 0; i < 100; ++i) runs.push_back(Generate("dora-qkvo-r8", prompt));
  for (auto& c : runs) {
    ASSERT_TRUE(c->Wait());
    EXPECT_TRUE(c->status.ok()) << c->status;
    EXPECT_EQ(c->tokens, tokens);
  }
  const RegistryStats stats = engine_->registry().stats();
  EXPECT_EQ(stats.loads, 1);
  EXPECT_EQ(stats.misses, 1);  // one request found it cold; the rest waited for that load
  EXPECT_EQ(stats.device_count, 1);
}

TEST_P(EngineTest, ScoreMatchesGoldenLogits) {
  Upload("dora-qkvo-r8");
  auto golden = LoadGolden("cases/llama-tiny/dora-qkvo-r8.safetensors");
  auto [prompt, tokens] = Golden("llama-tiny/dora-qkvo-r8", 2);
  InferenceRequest r;
  r.kind = InferenceRequest::Kind::kScore;
  r.adapter = "dora-qkvo-r8";
  r.tokens = prompt;
  r.return_logits = true;
  auto c = std::make_shared<Collector>();
  ASSERT_TRUE(engine_->scheduler().Submit(r, c).ok());
  ASSERT_TRUE(c->Wait());
  ASSERT_TRUE(c->status.ok()) << c->status;
  const torch::Tensor logits =
      torch::from_blob(c->score.logits.data(), {static_cast<int64_t>(prompt.size()), 320}).clone();
  EXPECT_LE(::loramux::testing::MaxAbsDiff(logits, golden["p2.logits"]), 1e-4);
  ASSERT_EQ(c->score.token_logprobs.size(), prompt.size() - 1);
  const torch::Tensor logp = torch::log_softmax(golden["p2.logits"], -1);
  for (size_t i = 0; i + 1 < prompt.size(); ++i) {
    EXPECT_NEAR(c->score.token_logprobs[i], logp[i][prompt[i + 1]].item<float>(), 1e-4);
  }
}

TEST_P(EngineTest, HotSwapServesNewVersionToNewRequests) {
  // Upload lora-qv-r8's weights under "task", then lora-pattern's under the same name.
  AdapterManifest m;
  m.name = "task";
  for (const char* source : {"lora-qv-r8", "lora-pattern"}) {
    m.config_json = ReadFile(DataPath(std::string("adapters/") + source + "/adapter_config.json"));
    const std::string w =
        ReadFile(DataPath(std::string("adapters/") + source + "/adapter_model.safetensors"));
    m.size_bytes = w.size();
    m.sha256 = Sha256Hex(w);
    ASSERT_TRUE(engine_->store().Put(m, w, engine_->registry().Validator()).ok());
    auto [prompt, tokens] = Golden(std::string("llama-tiny/") + source, 0);
    auto c = Generate("task", prompt);
    ASSERT_TRUE(c->Wait());
    EXPECT_EQ(c->tokens, tokens) << source;
    EXPECT_EQ(c->version, m.sha256);
  }
}

TEST_P(EngineTest, ErrorsHaveTheRightCodes) {
  EXPECT_THAT(engine_->scheduler().Submit({}, std::make_shared<Collector>()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  auto unknown = Generate("nope", {1, 2, 3});
  ASSERT_TRUE(unknown->Wait());
  EXPECT_THAT(unknown->status, StatusIs(absl::StatusCode::kNotFound));
  auto oov = Generate("", {1, 320});
  ASSERT_TRUE(oov->Wait());
  EXPECT_THAT(oov->status, StatusIs(absl::StatusCode::kInvalidArgument));
  auto huge = Generate("", {1, 2}, 100000);
  ASSERT_TRUE(huge->Wait());
  EXPECT_THAT(huge->status, StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_P(EngineTest, CancelAndDeadlineStopRequestsAndFreeTheCache) {
  auto running = Generate("", {5, 6, 7}, 400);
  engine_->scheduler().Cancel(last_id_);
  ASSERT_TRUE(running->Wait());
  EXPECT_EQ(running->reason, FinishReason::kCancelled);
  auto late = Generate("", {5, 6, 7}, 400, absl::Milliseconds(1));
  ASSERT_TRUE(late->Wait());
  EXPECT_THAT(late->status, StatusIs(absl::StatusCode::kDeadlineExceeded));
  InferenceRequest score;
  score.kind = InferenceRequest::Kind::kScore;
  score.tokens = {5, 6, 7};
  score.deadline = absl::Now() - absl::Milliseconds(1);  // expired before it is scheduled
  auto expired = std::make_shared<Collector>();
  ASSERT_TRUE(engine_->scheduler().Submit(score, expired).ok());
  ASSERT_TRUE(expired->Wait());
  EXPECT_THAT(expired->status, StatusIs(absl::StatusCode::kDeadlineExceeded));
  for (int i = 0; i < 100 && !engine_->scheduler().Idle(); ++i)
    absl::SleepFor(absl::Milliseconds(10));
  EXPECT_EQ(engine_->scheduler().stats().kv_used_blocks, 0);
  // The server still serves.
  auto [prompt, tokens] = Golden("llama-tiny/base", 1);
  auto ok = Generate("", prompt);
  ASSERT_TRUE(ok->Wait());
  EXPECT_EQ(ok->tokens, tokens);
}

// A KV cache that holds two sequences at a time: the rest wait for blocks, none fails, and every
// request still gets its exact tokens.
class SmallKvCacheTest : public EngineTest {
 protected:
  void SetUp() override {
    kv_cache_bytes_ = 5 * 16 * 512;  // 5 blocks of 16 tokens x 512 bytes per token (llama-tiny)
    EngineTest::SetUp();
  }
};

TEST_P(SmallKvCacheTest, RequestsThatDoNotFitWaitForBlocks) {
  EXPECT_EQ(engine_->scheduler().stats().kv_total_blocks, 5);
  std::vector<std::pair<std::shared_ptr<Collector>, std::vector<int32_t>>> runs;
  for (int i = 0; i < 8; ++i) {
    auto [prompt, tokens] = Golden("llama-tiny/base", i % 3);
    runs.push_back({Generate("", prompt), tokens});
  }
  for (auto& [c, tokens] : runs) {
    ASSERT_TRUE(c->Wait());
    EXPECT_TRUE(c->status.ok()) << c->status;
    EXPECT_EQ(c->tokens, tokens);
  }
  EXPECT_EQ(engine_->scheduler().stats().kv_total_blocks, 5);
  // A request that could never fit is refused up front rather than waiting forever.
  auto too_big = Generate("", {1, 2, 3}, 200);
  ASSERT_TRUE(too_big->Wait());
  EXPECT_THAT(too_big->status, StatusIs(absl::StatusCode::kResourceExhausted));
}

INSTANTIATE_TEST_SUITE_P(Devices, EngineTest, ::testing::ValuesIn(TestDevices()), DeviceName);
INSTANTIATE_TEST_SUITE_P(Devices, SmallKvCacheTest, ::testing::ValuesIn(TestDevices()), DeviceName);

}  // namespace
}  // namespace loramux
