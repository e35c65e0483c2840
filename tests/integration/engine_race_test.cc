// Many threads against one in-process Engine at once: Generate and Score requests over five
// adapters and the base, cancellations and past deadlines, admin loads (pinned and not), unloads
// and LRU evictions through the registry, and stats() reads. Every honest request must still give
// exactly what a quiet run gives.
//
// Its main use is under ThreadSanitizer (scripts/test_tsan.sh builds this one binary with
// -fsanitize=thread): TSan sees every access the threads make to loramux's shared state and fails
// the run on a data race. In the ordinary and ASan builds it runs as a bounded stress test.
// Bounded: a fixed number of requests per thread, each wait has a timeout.
#include <atomic>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <unistd.h>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/sha256.h"
#include "engine/engine.h"
#include "nlohmann/json.hpp"
#include "tests/status_matchers.h"
#include "tests/test_files.h"

namespace loramux {
namespace {

using ::loramux::testing::ReadFile;
// Torch-free on purpose (engine.h is), so the TSan build compiles no LibTorch header here.
std::string DataPath(const std::string& relative) {
  return std::string(LORAMUX_TEST_DATA) + "/" + relative;
}
const std::vector<std::string> kAdapters = {"lora-qv-r8", "dora-qkvo-r8", "lora-all-r4-rslora",
                                            "lora-pattern", "dora-mlp-r4"};
constexpr int kGeneratorThreads = 4;
constexpr int kRequestsPerGenerator = 12;
constexpr int kCancellations = 10;
constexpr int kAdminRounds = 10;
constexpr int kGoldenSteps = 12;
const absl::Duration kWait = absl::Seconds(300);  // per request; generous for sanitizer builds

// One request's results. The scheduler thread writes; the test thread reads after Wait().
class Collector : public RequestObserver {
 public:
  void OnTokens(const std::vector<int32_t>& new_tokens, const std::vector<float>&,
                const std::string&) override {
    tokens.insert(tokens.end(), new_tokens.begin(), new_tokens.end());
  }
  void OnScore(ScoreResult result) override { score = std::move(result); }
  void OnFinish(const absl::Status& s, FinishReason r, const Usage&, const std::string&) override {
    status = s;
    reason = r;
    done.Notify();
  }
  bool Wait() { return done.WaitForNotificationWithTimeout(kWait); }

  std::vector<int32_t> tokens;
  ScoreResult score;
  absl::Status status;
  FinishReason reason = FinishReason::kLength;
  absl::Notification done;
};

// What a quiet run gives for one target ("" = base) and prompt.
struct Expected {
  std::string adapter;
  std::vector<int32_t> prompt;
  std::vector<int32_t> tokens;        // greedy, kGoldenSteps (golden data)
  std::vector<float> score_logprobs;  // Score of prompt + tokens, measured before the storm
};

class EngineRaceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_dir_ = ::testing::TempDir() + "/engine_race_store_" + std::to_string(::getpid());
    std::filesystem::remove_all(store_dir_);
    // Budgets that hold about two adapters, so that the storm keeps evicting: measured on an
    // engine with room for all of them.
    int64_t largest_device = 0;
    int64_t largest_file = 0;
    {
      auto probe = MakeEngine(1ll << 30, 1ll << 30);
      ASSERT_NE(probe, nullptr);
      for (const std::string& name : kAdapters) {
        const int64_t before = probe->registry().stats().device_bytes;
        auto loaded = probe->registry().Load(name, /*pin=*/false);
        ASSERT_TRUE(loaded.ok()) << loaded.status();
        largest_device = std::max(largest_device, probe->registry().stats().device_bytes - before);
        largest_file = std::max(largest_file, static_cast<int64_t>(loaded->stored.size_bytes));
      }
    }
    std::filesystem::remove_all(store_dir_);
    engine_ = MakeEngine(largest_device * 5 / 2, largest_file * 5 / 2);
    ASSERT_NE(engine_, nullptr);

    const auto results = nlohmann::json::parse(ReadFile(DataPath("cases/results.json")));
    std::vector<std::string> targets = {""};
    targets.insert(targets.end(), kAdapters.begin(), kAdapters.end());
    for (const std::string& target : targets) {
      const std::string run = "llama-tiny/" + (target.empty() ? "base" : target);
      for (int p = 0; p < 3; ++p) {
        const auto& entry = results.at("generation").at(run).at(p);
        Expected e{target,
                   entry.at("input_ids").get<std::vector<int32_t>>(),
                   entry.at("new_tokens").get<std::vector<int32_t>>(),
                   {}};
        ASSERT_EQ(static_cast<int>(e.tokens.size()), kGoldenSteps);
        auto quiet = Submit(ScoreRequest(e));
        ASSERT_TRUE(quiet->Wait());
        ASSERT_TRUE(quiet->status.ok()) << quiet->status;
        e.score_logprobs = quiet->score.token_logprobs;
        expected_.push_back(std::move(e));
      }
    }
  }

  void TearDown() override {
    engine_.reset();
    std::filesystem::remove_all(store_dir_);
  }

  // An engine on store_dir_ holding kAdapters, with one LibTorch thread (LibTorch's OpenMP pool
  // is not instrumented; see scripts/test_tsan.sh).
  std::unique_ptr<Engine> MakeEngine(int64_t max_device_bytes, int64_t max_host_bytes) {
    EngineOptions options;
    options.model_dir = DataPath("llama-tiny");
    options.adapter_store = store_dir_;
    options.threads = 1;
    options.registry.max_device_bytes = max_device_bytes;
    options.registry.max_host_bytes = max_host_bytes;
    options.scheduler.kv_cache_bytes = 4 << 20;
    options.scheduler.max_running_requests = 8;
    options.scheduler.max_batch_tokens = 48;  // chunked prefill now and then
    auto engine = Engine::Create(options);
    EXPECT_TRUE(engine.ok()) << engine.status();
    if (!engine.ok()) return nullptr;
    for (const std::string& name : kAdapters) {
      const std::string dir = DataPath("adapters/" + name);
      AdapterManifest manifest;
      manifest.name = name;
      manifest.config_json = ReadFile(dir + "/adapter_config.json");
      const std::string weights = ReadFile(dir + "/adapter_model.safetensors");
      manifest.size_bytes = weights.size();
      manifest.sha256 = Sha256Hex(weights);
      auto stored = (*engine)->store().Put(manifest, weights, (*engine)->registry().Validator());
      EXPECT_TRUE(stored.ok()) << stored.status();
    }
    return *std::move(engine);
  }

  static InferenceRequest GenerateRequest(const Expected& e, int max_new_tokens) {
    InferenceRequest r;
    r.adapter = e.adapter;
    r.tokens = e.prompt;
    r.sampling.max_new_tokens = max_new_tokens;
    return r;
  }
  static InferenceRequest ScoreRequest(const Expected& e) {
    InferenceRequest r;
    r.kind = InferenceRequest::Kind::kScore;
    r.adapter = e.adapter;
    r.tokens = e.prompt;
    r.tokens.insert(r.tokens.end(), e.tokens.begin(), e.tokens.end());
    return r;
  }

  // Submits `r`; a refused submission finishes the collector at once. *id gets the request id.
  std::shared_ptr<Collector> Submit(InferenceRequest r, uint64_t* id = nullptr) {
    auto c = std::make_shared<Collector>();
    auto submitted = engine_->scheduler().Submit(std::move(r), c);
    if (!submitted.ok()) {
      c->OnFinish(submitted.status(), FinishReason::kCancelled, {}, "");
    } else if (id != nullptr) {
      *id = *submitted;
    }
    return c;
  }

  std::string store_dir_;
  std::unique_ptr<Engine> engine_;
  std::vector<Expected> expected_;
};

TEST_F(EngineRaceTest, EverythingAtOnceGivesQuietResults) {
  std::atomic<bool> stop_readers{false};
  std::vector<std::thread> threads;

  // Generators: greedy Generate and Score over all targets, checked against the quiet results.
  for (int t = 0; t < kGeneratorThreads; ++t) {
    threads.emplace_back([this, t] {
      for (int i = 0; i < kRequestsPerGenerator; ++i) {
        const Expected& e = expected_[(t * 5 + i * 7) % expected_.size()];
        const bool score = (t + i) % 3 == 0;
        auto c = Submit(score ? ScoreRequest(e) : GenerateRequest(e, kGoldenSteps));
        ASSERT_TRUE(c->Wait()) << "request " << i << " of generator " << t << " never finished";
        ASSERT_TRUE(c->status.ok()) << c->status;
        if (score) {
          ASSERT_EQ(c->score.token_logprobs.size(), e.score_logprobs.size());
          for (size_t k = 0; k < e.score_logprobs.size(); ++k) {
            EXPECT_NEAR(c->score.token_logprobs[k], e.score_logprobs[k], 1e-4)
                << "adapter '" << e.adapter << "' position " << k;
          }
        } else {
          EXPECT_EQ(c->tokens, e.tokens) << "adapter '" << e.adapter << "'";
        }
      }
    });
  }

  // Canceller: long generations cancelled after a short random delay, and requests whose
  // deadline has passed.
  threads.emplace_back([this] {
    std::mt19937 random(7);
    for (int i = 0; i < kCancellations; ++i) {
      const Expected& e = expected_[(i * 3) % expected_.size()];
      uint64_t id = 0;
      auto c = Submit(GenerateRequest(e, 400), &id);
      absl::SleepFor(absl::Microseconds(random() % 5000));
      engine_->scheduler().Cancel(id);
      InferenceRequest late = GenerateRequest(e, 4);
      late.deadline = absl::Now() - absl::Milliseconds(1);
      auto expired = Submit(late);
      ASSERT_TRUE(c->Wait());
      EXPECT_TRUE(c->status.ok()) << c->status;
      ASSERT_TRUE(expired->Wait());
      EXPECT_THAT(expired->status, StatusIs(absl::StatusCode::kDeadlineExceeded))
          << expired->status;
    }
  });

  // Admin: loads (some pinned), descriptions and unloads, racing the requests' own loads and the
  // evictions they cause.
  threads.emplace_back([this] {
    for (int i = 0; i < kAdminRounds; ++i) {
      const std::string& name = kAdapters[i % kAdapters.size()];
      auto loaded = engine_->registry().Load(name, /*pin=*/i % 2 == 0);
      EXPECT_TRUE(loaded.ok() || loaded.status().code() == absl::StatusCode::kUnavailable)
          << loaded.status();
      auto described = engine_->registry().Describe(name);
      EXPECT_TRUE(described.ok()) << described.status();
      auto unloaded = engine_->registry().Unload(name);
      EXPECT_TRUE(unloaded.ok()) << unloaded.status();
    }
  });

  // Readers: the metrics and health paths, until the others are done.
  std::thread reader([this, &stop_readers] {
    int64_t reads = 0;
    while (!stop_readers.load()) {
      const SchedulerStats s = engine_->scheduler().stats();
      const RegistryStats r = engine_->registry().stats();
      EXPECT_LE(s.kv_used_blocks, s.kv_total_blocks);
      EXPECT_GE(r.device_bytes, 0);
      (void)engine_->scheduler().Idle();
      ++reads;
      absl::SleepFor(absl::Milliseconds(1));
    }
    EXPECT_GT(reads, 0);
  });

  for (std::thread& t : threads) t.join();
  stop_readers = true;
  reader.join();

  // Everything released: no request left, no KV block held, evictions happened.
  for (int i = 0; i < 1000 && !engine_->scheduler().Idle(); ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_TRUE(engine_->scheduler().Idle());
  EXPECT_EQ(engine_->scheduler().stats().kv_used_blocks, 0);
  EXPECT_GT(engine_->registry().stats().evictions, 0);
}

}  // namespace
}  // namespace loramux
