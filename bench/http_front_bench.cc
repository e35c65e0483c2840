// http_front_bench: the same load through the OpenAI-compatible HTTP front (streamed
// /v1/completions, Server-Sent Events) and through gRPC (Generate, client/loadgen), alternately,
// against one running server; prints a table with the HTTP/gRPC ratios.
//
//   http_front_bench --server 127.0.0.1:50051 --http 127.0.0.1:8000 --base_model base
//       --adapters a0,...,a7 --streams 64 --duration_s 5 --rounds 2
//
// Both sides send prompts of --prompt_len random ids from [1, vocab) and ask for
// --max_new_tokens greedy tokens, one request after another per stream, adapters round-robin.
// HTTP counts tokens from the chunks' token_ids (return_token_ids) and time to first token as
// request start to the first chunk that carries one. bench/http_front_bench.sh runs it end to end.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_split.h"
#include "client/loadgen.h"

ABSL_FLAG(std::string, server, "127.0.0.1:50051", "gRPC address.");
ABSL_FLAG(std::string, http, "127.0.0.1:8000", "HTTP front address.");
ABSL_FLAG(std::string, base_model, "base",
          "The base model's id on the HTTP front (--served_model_name).");
ABSL_FLAG(std::string, adapters, "",
          "Comma-separated adapters, round-robin; \"base\" = the base model.");
ABSL_FLAG(int32_t, streams, 64, "Concurrent request loops.");
ABSL_FLAG(int32_t, prompt_len, 16, "Prompt tokens per request.");
ABSL_FLAG(int32_t, max_new_tokens, 32, "Greedy tokens per request.");
ABSL_FLAG(int32_t, vocab_size, 320, "Prompt ids come from [1, vocab).");
ABSL_FLAG(double, duration_s, 5, "Seconds per measurement.");
ABSL_FLAG(int32_t, rounds, 2, "gRPC/HTTP pairs, alternating.");

namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

struct HttpResult {
  int64_t requests = 0, errors = 0, tokens = 0;
  std::string first_error;
  double seconds = 0;
  std::vector<double> ttft_ms;
};

// One stream's request: POST /v1/completions with stream: true; counts the tokens of each chunk.
void OneHttpRequest(httplib::Client& client, const std::string& model,
                    const std::vector<int>& prompt, HttpResult& out) {
  const Json body = {
      {"model", model},   {"prompt", prompt}, {"max_tokens", absl::GetFlag(FLAGS_max_new_tokens)},
      {"temperature", 0}, {"stream", true},   {"return_token_ids", true}};
  const Clock::time_point start = Clock::now();
  std::string buffer;
  bool first = true;
  int64_t tokens = 0;
  httplib::Request request;
  request.method = "POST";
  request.path = "/v1/completions";
  request.headers = {{"Content-Type", "application/json"}};
  request.body = body.dump();
  request.content_receiver = [&](const char* data, size_t size, uint64_t, uint64_t) {
    buffer.append(data, size);
    for (size_t end; (end = buffer.find("\n\n")) != std::string::npos; buffer.erase(0, end + 2)) {
      if (buffer.compare(0, 6, "data: ") != 0 || buffer.compare(6, 6, "[DONE]") == 0) continue;
      const Json chunk = Json::parse(
          buffer.begin() + 6, buffer.begin() + static_cast<std::ptrdiff_t>(end), nullptr, false);
      if (chunk.is_discarded() || chunk.contains("error") || chunk["choices"].empty()) continue;
      const size_t n = chunk["choices"][0]["token_ids"].size();
      if (n > 0 && first) {
        out.ttft_ms.push_back(Ms(Clock::now() - start));
        first = false;
      }
      tokens += static_cast<int64_t>(n);
    }
    return true;
  };
  httplib::Result result = client.send(request);
  if (!result || result->status != 200) {
    if (out.errors++ == 0) {
      out.first_error =
          result ? std::to_string(result->status) : httplib::to_string(result.error());
    }
    return;
  }
  ++out.requests;
  out.tokens += tokens;
}

HttpResult RunHttp(const std::vector<std::string>& models, uint64_t seed) {
  const std::string address = absl::GetFlag(FLAGS_http);
  const size_t colon = address.rfind(':');
  const int streams = absl::GetFlag(FLAGS_streams);
  const auto deadline =
      Clock::now() + std::chrono::duration<double>(absl::GetFlag(FLAGS_duration_s));
  std::atomic<uint64_t> next{0};
  std::vector<HttpResult> results(static_cast<size_t>(streams));
  std::vector<std::thread> threads;
  const Clock::time_point start = Clock::now();
  for (int s = 0; s < streams; ++s) {
    threads.emplace_back([&, s] {
      httplib::Client client(address.substr(0, colon), std::stoi(address.substr(colon + 1)));
      client.set_read_timeout(120, 0);
      client.set_keep_alive(true);
      client.set_tcp_nodelay(true);
      std::mt19937_64 rng(seed + static_cast<uint64_t>(s));
      std::uniform_int_distribution<int> id(1, absl::GetFlag(FLAGS_vocab_size) - 1);
      while (Clock::now() < deadline) {
        std::vector<int> prompt(static_cast<size_t>(absl::GetFlag(FLAGS_prompt_len)));
        for (int& t : prompt) t = id(rng);
        OneHttpRequest(client, models[next++ % models.size()], prompt,
                       results[static_cast<size_t>(s)]);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  HttpResult total;
  total.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  for (const HttpResult& r : results) {
    total.requests += r.requests;
    if (total.first_error.empty()) total.first_error = r.first_error;
    total.errors += r.errors;
    total.tokens += r.tokens;
    total.ttft_ms.insert(total.ttft_ms.end(), r.ttft_ms.begin(), r.ttft_ms.end());
  }
  return total;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  std::vector<std::string> adapters =
      absl::StrSplit(absl::GetFlag(FLAGS_adapters), ',', absl::SkipEmpty());
  if (adapters.empty()) adapters = {"base"};
  std::vector<std::string> grpc_adapters, http_models;
  for (const std::string& a : adapters) {
    grpc_adapters.push_back(a == "base" ? "" : a);
    http_models.push_back(a == "base" ? absl::GetFlag(FLAGS_base_model) : a);
  }
  loramux::ClientOptions client;
  client.target = absl::GetFlag(FLAGS_server);
  loramux::LoadgenOptions load;
  load.streams = absl::GetFlag(FLAGS_streams);
  load.adapters = grpc_adapters;
  load.prompt_len = absl::GetFlag(FLAGS_prompt_len);
  load.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  load.vocab_size = absl::GetFlag(FLAGS_vocab_size);
  load.duration = absl::Seconds(absl::GetFlag(FLAGS_duration_s));
  load.channels = load.streams >= 64 ? 4 : 1;

  std::printf("| round | front | requests | errors | tokens/s | TTFT p50 ms | TTFT p99 ms |\n");
  std::printf("|---:|---|---:|---:|---:|---:|---:|\n");
  double grpc_tps = 0, http_tps = 0, grpc_ttft = 0, http_ttft = 0;
  const int rounds = absl::GetFlag(FLAGS_rounds);
  for (int round = 1; round <= rounds; ++round) {
    load.seed = static_cast<uint64_t>(round);
    absl::StatusOr<loramux::LoadgenResult> grpc = loramux::RunLoad(client, load);
    if (!grpc.ok()) {
      std::fprintf(stderr, "gRPC load failed: %s\n", std::string(grpc.status().message()).c_str());
      return 1;
    }
    std::printf("| %d | gRPC | %lld | %lld | %.0f | %.1f | %.1f |\n", round,
                static_cast<long long>(grpc->requests_ok), static_cast<long long>(grpc->errors),
                grpc->tokens_per_s, grpc->ttft_p50_ms, grpc->ttft_p99_ms);
    const HttpResult http = RunHttp(http_models, static_cast<uint64_t>(round) * 1000);
    const double tps = static_cast<double>(http.tokens) / http.seconds;
    const double p50 = loramux::Percentile(http.ttft_ms, 0.5),
                 p99 = loramux::Percentile(http.ttft_ms, 0.99);
    std::printf("| %d | HTTP | %lld | %lld | %.0f | %.1f | %.1f |\n", round,
                static_cast<long long>(http.requests), static_cast<long long>(http.errors), tps,
                p50, p99);
    if (!http.first_error.empty())
      std::fprintf(stderr, "first HTTP error: %s\n", http.first_error.c_str());
    grpc_tps += grpc->tokens_per_s / rounds;
    http_tps += tps / rounds;
    grpc_ttft += grpc->ttft_p50_ms / rounds;
    http_ttft += p50 / rounds;
    std::fflush(stdout);
  }
  std::printf("\nHTTP / gRPC over %d rounds: tokens/s %.3f (cost %.1f%%), TTFT p50 %.2fx\n", rounds,
              http_tps / grpc_tps, 100.0 * (1.0 - http_tps / grpc_tps), http_ttft / grpc_ttft);
  return 0;
}
