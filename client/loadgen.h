// A load generator for a loramux server: N concurrent request loops (one thread each, blocking
// stubs; fine up to a few hundred) spread round-robin over a list of adapters, each sending
// fixed-length random prompts, for a fixed number of requests or a duration, whichever ends first.
//
// Generate mode measures overall generated tokens/s, time to first token (request start to the
// first message carrying tokens) p50/p99 and inter-token latency p50 (gap between messages divided
// over the tokens they carry, since the server may coalesce tokens). Score mode measures
// whole-call latency. Failed calls are counted, not retried; the first error is kept.
//
// Thread-safety: RunLoad is self-contained; call it from one thread at a time.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/loramux_client.h"

namespace loramux {

struct LoadgenOptions {
  enum class Rpc { kGenerate, kScore };
  Rpc rpc = Rpc::kGenerate;
  int streams = 8;                           // concurrent request loops
  std::vector<std::string> adapters = {""};  // round-robin per request; "" = the base model
  int prompt_len = 16;                       // tokens per prompt (Score: tokens scored)
  int max_new_tokens = 32;
  float temperature = 0;                        // 0 = greedy
  uint64_t seed = 1;                            // prompts (and sampling seeds) derive from it
  int64_t requests = 0;                         // total requests; 0 = until `duration`
  absl::Duration duration = absl::Seconds(10);  // InfiniteDuration: until `requests`
  int vocab_size = 0;       // prompt ids drawn from [1, vocab); 0 = ask the server
  int channels = 1;         // separate connections, streams spread over them
  bool preload = false;     // Load every named adapter first (admin call)
  int warmup_requests = 0;  // sequential untimed requests first, one per adapter
                            // in turn
  absl::Duration request_timeout = absl::Seconds(120);
};

struct LoadgenResult {
  int64_t requests_ok = 0;
  int64_t errors = 0;
  std::string first_error;  // "CODE: message" of the first failure
  int64_t tokens = 0;       // generated (Generate) or scored (Score) tokens
  double seconds = 0;       // wall time from the first request to the last reply
  double tokens_per_s = 0;
  double requests_per_s = 0;
  double ttft_p50_ms = 0, ttft_p99_ms = 0;                             // Generate only
  double itl_p50_ms = 0;                                               // Generate only
  double latency_mean_ms = 0, latency_p50_ms = 0, latency_p99_ms = 0;  // whole call
};

// Runs the load against the server `client_options` names. Errors only for setup failures
// (bad options, vocab query or preload failing); request failures are counted in the result.
absl::StatusOr<LoadgenResult> RunLoad(const ClientOptions& client_options,
                                      const LoadgenOptions& options);

// The q-quantile (0..1) of `values` by nearest rank; 0 for none.
double Percentile(std::vector<double> values, double q);

// A markdown table header (two lines, with the trailing newline) and one row for a result.
std::string MarkdownHeader(LoadgenOptions::Rpc rpc);
std::string MarkdownRow(const std::string& label, const LoadgenOptions& options,
                        const LoadgenResult& result);

}  // namespace loramux
