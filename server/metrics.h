// Prometheus metrics for the server, served over HTTP at /metrics.
//
// The metrics are prometheus-cpp's (Registry, Counter, Histogram, TextSerializer), but the page is
// served by common/http_endpoint (cpp-httplib: a thread pool, per-read and per-write timeouts)
// rather than prometheus-cpp's civetweb Exposer: Debian's civetweb starts its threads with a fixed
// 100 KiB stack, less than the static TLS that LibTorch, OpenBLAS and glog need together, so
// pthread_create fails (EINVAL) in this process. A slow or silent client holds one of the
// endpoint's threads, never the endpoint, so it cannot stall scrapes.
//
// Request-path metrics (RPC counts and latency, time to first token, inter-token latency, tokens)
// are recorded by the services as calls end. Engine state (queue, running requests, batch size,
// KV cache blocks, adapter cache counters and resident bytes) is read from the engine's stats on
// every scrape, so the page is never stale and no background thread is needed.
//
// Every label is bounded: `rpc` is one of the kNumRpcs RPC names, `code` one of the 17 gRPC codes,
// `tier` host/device. Adapter names never become labels (there may be thousands).
//
// Thread-safety: all methods are thread-safe. The stats callbacks run on the endpoint's HTTP
// threads, possibly several at once, and must be thread-safe too.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "adapters/adapter_registry.h"
#include "engine/scheduler.h"

namespace prometheus {
class Counter;
class Histogram;
class Registry;
template <typename T>
class Family;
}  // namespace prometheus

namespace loramux {

class HttpEndpoint;

// The RPCs, as they appear in the `rpc` label.
// The HTTP front's completions count as RPCs too ("openai.completions", "openai.chat.completions").
enum class Rpc {
  kGenerate,
  kScore,
  kTokenize,
  kDetokenize,
  kUpload,
  kList,
  kGet,
  kDelete,
  kLoad,
  kUnload,
  kOpenAiCompletions,
  kOpenAiChatCompletions
};
inline constexpr size_t kNumRpcs = static_cast<size_t>(Rpc::kOpenAiChatCompletions) + 1;
const char* RpcName(Rpc rpc);

class Metrics {
 public:
  Metrics(std::function<SchedulerStats()> scheduler_stats,
          std::function<RegistryStats()> registry_stats);
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // Serves /metrics on `listen` ("host:port"; port 0 picks a free port). INVALID_ARGUMENT or
  // UNAVAILABLE naming the address when it cannot listen. Call at most once.
  absl::Status Serve(const std::string& listen);
  // "host:port" actually bound ("" before Serve).
  std::string address() const { return address_; }
  // Stops serving (idempotent).
  void StopServing();

  // One finished RPC: its final code and wall time from arrival to the final status.
  void RecordRpc(Rpc rpc, grpc::StatusCode code, absl::Duration latency);
  // Generate: arrival to first token; gap between two token deliveries (divided evenly when one
  // delivery carries several tokens).
  void RecordTimeToFirstToken(absl::Duration latency);
  void RecordInterTokenLatency(absl::Duration latency, int64_t tokens);
  void AddGeneratedTokens(int64_t tokens);
  void AddPromptTokens(int64_t tokens);

  // The text page, as a scrape would see it (for tests and debugging).
  std::string Render() const;

 private:
  class EngineCollector;

  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<EngineCollector> engine_collector_;
  prometheus::Family<prometheus::Counter>* requests_ = nullptr;
  std::array<prometheus::Histogram*, kNumRpcs> request_seconds_{};  // by Rpc
  prometheus::Histogram* ttft_ = nullptr;
  prometheus::Histogram* inter_token_ = nullptr;
  prometheus::Counter* generated_tokens_ = nullptr;
  prometheus::Counter* prompt_tokens_ = nullptr;
  std::unique_ptr<HttpEndpoint> http_;
  std::string address_;
};

}  // namespace loramux
