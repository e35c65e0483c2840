#include "client/loadgen.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <memory>
#include <numeric>
#include <random>
#include <set>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"

namespace loramux {
namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// What one request loop measured.
struct Samples {
  std::vector<double> ttft_ms;
  std::vector<double> itl_ms;
  std::vector<double> latency_ms;
  int64_t ok = 0;
  int64_t errors = 0;
  int64_t tokens = 0;
  std::string first_error;
};

std::vector<int32_t> Prompt(uint64_t seed, int64_t index, int length, int vocab) {
  std::mt19937_64 rng(seed * 1000003u + static_cast<uint64_t>(index));
  std::uniform_int_distribution<int32_t> token(1, std::max(1, vocab - 1));
  std::vector<int32_t> prompt(static_cast<size_t>(length));
  for (int32_t& t : prompt) t = token(rng);
  return prompt;
}

// Sends request number `index` and records it in `samples`.
void OneRequest(LoramuxClient& client, const LoadgenOptions& options, int vocab, int64_t index,
                Samples& samples) {
  const std::string& adapter =
      options.adapters[static_cast<size_t>(index) % options.adapters.size()];
  const std::vector<int32_t> prompt = Prompt(options.seed, index, options.prompt_len, vocab);
  const Clock::time_point start = Clock::now();
  absl::Status status;
  if (options.rpc == LoadgenOptions::Rpc::kScore) {
    v1::ScoreRequest request;
    request.set_adapter(adapter);
    request.mutable_token_ids()->Add(prompt.begin(), prompt.end());
    absl::StatusOr<v1::ScoreResponse> response = client.Score(request);
    status = response.status();
    if (status.ok()) samples.tokens += static_cast<int64_t>(prompt.size());
  } else {
    v1::GenerateRequest request;
    request.set_adapter(adapter);
    request.mutable_prompt_token_ids()->Add(prompt.begin(), prompt.end());
    request.mutable_sampling()->set_max_new_tokens(options.max_new_tokens);
    request.mutable_sampling()->set_temperature(options.temperature);
    request.mutable_sampling()->set_seed(options.seed + static_cast<uint64_t>(index));
    request.mutable_sampling()->set_has_seed(true);
    Clock::time_point last = start;
    bool first = true;
    std::vector<double> ttft, itl;
    absl::StatusOr<GenerateResult> result =
        client.Generate(request, [&](const v1::GenerateResponse& response) {
          const int n = response.token_ids_size();
          if (n == 0) return true;
          const Clock::time_point now = Clock::now();
          if (first) {
            ttft.push_back(Ms(now - start));
            first = false;
            // Tokens beyond the first in the first message arrived with no gap.
            for (int i = 1; i < n; ++i) itl.push_back(0);
          } else {
            const double gap = Ms(now - last) / n;
            for (int i = 0; i < n; ++i) itl.push_back(gap);
          }
          last = now;
          return true;
        });
    status = result.status();
    if (status.ok()) {
      samples.tokens += static_cast<int64_t>(result->token_ids.size());
      samples.ttft_ms.insert(samples.ttft_ms.end(), ttft.begin(), ttft.end());
      samples.itl_ms.insert(samples.itl_ms.end(), itl.begin(), itl.end());
    }
  }
  if (status.ok()) {
    ++samples.ok;
    samples.latency_ms.push_back(Ms(Clock::now() - start));
  } else {
    ++samples.errors;
    if (samples.first_error.empty()) {
      samples.first_error =
          absl::StrCat(absl::StatusCodeToString(status.code()), ": ", status.message());
    }
  }
}

}  // namespace

double Percentile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  q = std::min(1.0, std::max(0.0, q));
  size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(values.size())));
  rank = std::min(values.size(), std::max<size_t>(1, rank));
  std::nth_element(values.begin(), values.begin() + static_cast<ptrdiff_t>(rank - 1), values.end());
  return values[rank - 1];
}

absl::StatusOr<LoadgenResult> RunLoad(const ClientOptions& client_options,
                                      const LoadgenOptions& options) {
  if (options.streams < 1) return absl::InvalidArgumentError("streams must be at least 1");
  if (options.adapters.empty()) {
    return absl::InvalidArgumentError("give at least one adapter (\"\" for the base model)");
  }
  if (options.prompt_len < 1) return absl::InvalidArgumentError("prompt_len must be at least 1");
  if (options.requests <= 0 && options.duration == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError("give a request count or a duration, or both");
  }
  ClientOptions base_options = client_options;
  base_options.timeout = options.request_timeout;
  std::vector<std::unique_ptr<LoramuxClient>> clients;
  for (int c = 0; c < std::max(1, options.channels); ++c) {
    ClientOptions per_channel = base_options;
    per_channel.channel_id = options.channels > 1 ? c + 1 : 0;
    absl::StatusOr<std::unique_ptr<LoramuxClient>> client = LoramuxClient::Connect(per_channel);
    if (!client.ok()) return client.status();
    clients.push_back(*std::move(client));
  }

  int vocab = options.vocab_size;
  if (vocab <= 0) {
    v1::ScoreRequest probe;
    probe.add_token_ids(1);
    probe.add_token_ids(1);
    absl::StatusOr<v1::ScoreResponse> response = clients[0]->Score(probe);
    if (!response.ok()) {
      return absl::Status(response.status().code(),
                          absl::StrCat("asking the server for its vocabulary size (a Score of two "
                                       "tokens): ",
                                       response.status().message()));
    }
    vocab = response->vocab_size();
  }
  if (options.preload) {
    std::set<std::string> named(options.adapters.begin(), options.adapters.end());
    named.erase("");
    for (const std::string& name : named) {
      absl::StatusOr<v1::AdapterInfo> loaded = clients[0]->LoadAdapter(name);
      if (!loaded.ok()) {
        return absl::Status(loaded.status().code(),
                            absl::StrCat("preloading \"", name, "\": ", loaded.status().message()));
      }
    }
  }
  LoadgenOptions warmup = options;
  warmup.seed = options.seed ^ 0x9e3779b97f4a7c15ull;  // prompts apart from the measured ones
  for (int i = 0; i < options.warmup_requests; ++i) {
    Samples ignored;
    OneRequest(*clients[0], warmup, vocab, i, ignored);
  }

  std::atomic<int64_t> next{0};
  const Clock::time_point start = Clock::now();
  const Clock::time_point end = options.duration == absl::InfiniteDuration()
                                    ? Clock::time_point::max()
                                    : start + std::chrono::duration_cast<Clock::duration>(
                                                  absl::ToChronoNanoseconds(options.duration));
  std::vector<Samples> samples(static_cast<size_t>(options.streams));
  std::vector<std::thread> threads;
  threads.reserve(samples.size());
  for (int s = 0; s < options.streams; ++s) {
    threads.emplace_back([&, s] {
      LoramuxClient& client = *clients[static_cast<size_t>(s) % clients.size()];
      while (Clock::now() < end) {
        const int64_t index = next.fetch_add(1);
        if (options.requests > 0 && index >= options.requests) break;
        OneRequest(client, options, vocab, index, samples[static_cast<size_t>(s)]);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();

  LoadgenResult result;
  Samples all;
  for (Samples& s : samples) {
    all.ok += s.ok;
    all.errors += s.errors;
    all.tokens += s.tokens;
    if (all.first_error.empty()) all.first_error = s.first_error;
    all.ttft_ms.insert(all.ttft_ms.end(), s.ttft_ms.begin(), s.ttft_ms.end());
    all.itl_ms.insert(all.itl_ms.end(), s.itl_ms.begin(), s.itl_ms.end());
    all.latency_ms.insert(all.latency_ms.end(), s.latency_ms.begin(), s.latency_ms.end());
  }
  result.requests_ok = all.ok;
  result.errors = all.errors;
  result.first_error = all.first_error;
  result.tokens = all.tokens;
  result.seconds = seconds;
  result.tokens_per_s = seconds > 0 ? static_cast<double>(all.tokens) / seconds : 0;
  result.requests_per_s = seconds > 0 ? static_cast<double>(all.ok) / seconds : 0;
  result.ttft_p50_ms = Percentile(all.ttft_ms, 0.50);
  result.ttft_p99_ms = Percentile(all.ttft_ms, 0.99);
  result.itl_p50_ms = Percentile(all.itl_ms, 0.50);
  if (!all.latency_ms.empty()) {
    result.latency_mean_ms = std::accumulate(all.latency_ms.begin(), all.latency_ms.end(), 0.0) /
                             static_cast<double>(all.latency_ms.size());
  }
  result.latency_p50_ms = Percentile(all.latency_ms, 0.50);
  result.latency_p99_ms = Percentile(all.latency_ms, 0.99);
  return result;
}

std::string MarkdownHeader(LoadgenOptions::Rpc rpc) {
  if (rpc == LoadgenOptions::Rpc::kScore) {
    return "| run | streams | adapters | requests | errors | tokens/s | req/s | mean ms | p50 ms "
           "| p99 ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  }
  return "| run | streams | adapters | requests | errors | tokens/s | TTFT p50 ms | TTFT p99 ms "
         "| ITL p50 ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
}

std::string MarkdownRow(const std::string& label, const LoadgenOptions& options,
                        const LoadgenResult& result) {
  std::set<std::string> distinct(options.adapters.begin(), options.adapters.end());
  const std::string adapters =
      distinct.size() == 1 && distinct.count("") ? "base" : absl::StrCat(distinct.size());
  if (options.rpc == LoadgenOptions::Rpc::kScore) {
    return absl::StrFormat("| %s | %d | %s | %d | %d | %.1f | %.1f | %.3f | %.3f | %.3f |", label,
                           options.streams, adapters, result.requests_ok, result.errors,
                           result.tokens_per_s, result.requests_per_s, result.latency_mean_ms,
                           result.latency_p50_ms, result.latency_p99_ms);
  }
  return absl::StrFormat("| %s | %d | %s | %d | %d | %.1f | %.2f | %.2f | %.2f |", label,
                         options.streams, adapters, result.requests_ok, result.errors,
                         result.tokens_per_s, result.ttft_p50_ms, result.ttft_p99_ms,
                         result.itl_p50_ms);
}

}  // namespace loramux
