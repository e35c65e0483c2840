// The in-process half of the gRPC-overhead measurement in bench/service_bench.sh: the mean time
// from Scheduler::Submit to the observer's OnFinish for a Score of `tokens` ids on the base model,
// with no gRPC in between. The script runs the same Score through the server and subtracts.
//
//   ./build/bench/score_inprocess_bench MODEL_DIR [calls=200] [tokens=8]
//
// Prints one markdown row and a last line `mean_ms=X` for scripts.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "engine/engine.h"
#include "engine/request.h"

using namespace loramux;

namespace {

// Signals when the request ends; keeps its status.
class Waiter final : public RequestObserver {
 public:
  void OnScore(ScoreResult result) override { logprobs_ = result.token_logprobs.size(); }
  void OnFinish(const absl::Status& status, FinishReason, const Usage&,
                const std::string&) override {
    status_ = status;
    done_.Notify();
  }
  bool Wait(absl::Duration timeout) { return done_.WaitForNotificationWithTimeout(timeout); }
  const absl::Status& status() const { return status_; }
  size_t logprobs() const { return logprobs_; }

 private:
  absl::Notification done_;
  absl::Status status_;
  size_t logprobs_ = 0;
};

double Percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const size_t rank = std::max<size_t>(1, static_cast<size_t>(q * v.size() + 0.999999));
  return v[std::min(rank, v.size()) - 1];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL_DIR [calls=200] [tokens=8]\n", argv[0]);
    return 2;
  }
  const int calls = argc > 2 ? std::max(1, std::atoi(argv[2])) : 200;
  const int tokens = argc > 3 ? std::max(2, std::atoi(argv[3])) : 8;

  std::string store = (std::filesystem::temp_directory_path() / "loramux-score-bench-XXXXXX");
  if (mkdtemp(store.data()) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  int exit_code = 0;
  {
    EngineOptions options;
    options.model_dir = argv[1];
    options.adapter_store = store;
    absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(options);
    if (!engine.ok()) {
      std::fprintf(stderr, "score_inprocess_bench: %s\n", engine.status().ToString().c_str());
      std::filesystem::remove_all(store);
      return 1;
    }
    Scheduler& scheduler = (*engine)->scheduler();
    const int64_t vocab = scheduler.vocab_size();
    std::mt19937_64 rng(1);
    std::uniform_int_distribution<int32_t> token(1, static_cast<int32_t>(vocab - 1));

    std::vector<double> ms;
    const int warmup = 10;
    for (int i = 0; i < warmup + calls && exit_code == 0; ++i) {
      InferenceRequest request;
      request.kind = InferenceRequest::Kind::kScore;
      for (int t = 0; t < tokens; ++t) request.tokens.push_back(token(rng));
      auto waiter = std::make_shared<Waiter>();
      const auto start = std::chrono::steady_clock::now();
      absl::StatusOr<uint64_t> id = scheduler.Submit(std::move(request), waiter);
      if (!id.ok() || !waiter->Wait(absl::Seconds(30)) || !waiter->status().ok() ||
          waiter->logprobs() != static_cast<size_t>(tokens - 1)) {
        std::fprintf(
            stderr, "score_inprocess_bench: call %d failed: %s\n", i,
            !id.ok() ? id.status().ToString().c_str() : waiter->status().ToString().c_str());
        exit_code = 1;
        break;
      }
      const double elapsed =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
              .count();
      if (i >= warmup) ms.push_back(elapsed);
    }
    if (exit_code == 0) {
      const double mean = std::accumulate(ms.begin(), ms.end(), 0.0) / ms.size();
      std::printf(
          "| in-process Score | %d calls | %d tokens | mean %.3f ms | p50 %.3f ms | "
          "p99 %.3f ms |\n",
          calls, tokens, mean, Percentile(ms, 0.5), Percentile(ms, 0.99));
      std::printf("mean_ms=%.4f\n", mean);
    }
  }
  std::filesystem::remove_all(store);
  return exit_code;
}
