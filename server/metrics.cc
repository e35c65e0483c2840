#include "server/metrics.h"

#include <iterator>

#include <utility>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include "common/http_endpoint.h"
#include "server/status_mapping.h"

namespace loramux {
namespace {

constexpr Rpc kAllRpcs[] = {Rpc::kGenerate,
                            Rpc::kScore,
                            Rpc::kTokenize,
                            Rpc::kDetokenize,
                            Rpc::kUpload,
                            Rpc::kList,
                            Rpc::kGet,
                            Rpc::kDelete,
                            Rpc::kLoad,
                            Rpc::kUnload,
                            Rpc::kOpenAiCompletions,
                            Rpc::kOpenAiChatCompletions};
static_assert(std::size(kAllRpcs) == kNumRpcs, "every Rpc has a request-latency histogram");

// Seconds; spans a fast unary call (~1 ms) to a long generation or a big upload (minutes).
prometheus::Histogram::BucketBoundaries RequestBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};
}
// Seconds; token latencies sit between ~100 us (tiny models) and a few seconds (cold adapters).
prometheus::Histogram::BucketBoundaries TokenBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
          0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};
}

prometheus::MetricFamily Family(std::string name, std::string help, prometheus::MetricType type) {
  prometheus::MetricFamily family;
  family.name = std::move(name);
  family.help = std::move(help);
  family.type = type;
  return family;
}

void AddSample(prometheus::MetricFamily& family, double value,
               std::vector<prometheus::ClientMetric::Label> labels = {}) {
  prometheus::ClientMetric metric;
  metric.label = std::move(labels);
  if (family.type == prometheus::MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  family.metric.push_back(std::move(metric));
}

}  // namespace

const char* RpcName(Rpc rpc) {
  switch (rpc) {
    case Rpc::kGenerate: return "Generate";
    case Rpc::kTokenize: return "Tokenize";
    case Rpc::kDetokenize: return "Detokenize";
    case Rpc::kScore: return "Score";
    case Rpc::kUpload: return "Upload";
    case Rpc::kList: return "List";
    case Rpc::kGet: return "Get";
    case Rpc::kDelete: return "Delete";
    case Rpc::kLoad: return "Load";
    case Rpc::kUnload: return "Unload";
    case Rpc::kOpenAiCompletions: return "openai.completions";
    case Rpc::kOpenAiChatCompletions: return "openai.chat.completions";
  }
  return "unknown";
}

// Engine state read at scrape time: scheduler gauges, KV cache, adapter cache counters.
class Metrics::EngineCollector final : public prometheus::Collectable {
 public:
  EngineCollector(std::function<SchedulerStats()> scheduler_stats,
                  std::function<RegistryStats()> registry_stats)
      : scheduler_stats_(std::move(scheduler_stats)), registry_stats_(std::move(registry_stats)) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    using prometheus::MetricType;
    std::vector<prometheus::MetricFamily> out;
    auto add = [&out](const char* name, const char* help, MetricType type, double value) {
      out.push_back(Family(name, help, type));
      AddSample(out.back(), value);
    };
    if (scheduler_stats_) {
      const SchedulerStats s = scheduler_stats_();
      add("loramux_queue_depth", "Requests waiting to be admitted by the scheduler.",
          MetricType::Gauge, s.queued);
      add("loramux_running_requests", "Requests admitted and running in the batch.",
          MetricType::Gauge, s.running);
      add("loramux_batch_tokens", "Tokens (prefill and decode) in the last forward step.",
          MetricType::Gauge, s.last_batch_tokens);
      add("loramux_batch_sequences", "Sequences in the last forward step.", MetricType::Gauge,
          s.last_batch_sequences);
      add("loramux_scheduler_steps_total", "Forward steps run by the scheduler.",
          MetricType::Counter, s.steps);
      add("loramux_kv_cache_used_blocks", "KV cache blocks in use.", MetricType::Gauge,
          s.kv_used_blocks);
      add("loramux_kv_cache_capacity_blocks", "KV cache blocks allocated in all.",
          MetricType::Gauge, s.kv_total_blocks);
      add("loramux_kv_cache_block_tokens", "Tokens held by one KV cache block.", MetricType::Gauge,
          s.kv_block_tokens);
    }
    if (registry_stats_) {
      const RegistryStats r = registry_stats_();
      add("loramux_adapter_cache_hits_total",
          "Adapter acquisitions that found the adapter resident on the device.",
          MetricType::Counter, r.hits);
      add("loramux_adapter_cache_misses_total", "Adapter acquisitions that had to wait for a load.",
          MetricType::Counter, r.misses);
      add("loramux_adapter_loads_total", "Adapter loads completed.", MetricType::Counter, r.loads);
      add("loramux_adapter_load_failures_total", "Adapter loads that failed.", MetricType::Counter,
          r.load_failures);
      add("loramux_adapter_evictions_total", "Adapters evicted from a cache tier.",
          MetricType::Counter, r.evictions);
      out.push_back(Family("loramux_adapter_resident_bytes",
                           "Bytes of adapters resident per tier (budgets: "
                           "--max_host_adapter_bytes, --max_device_adapter_bytes).",
                           MetricType::Gauge));
      AddSample(out.back(), r.host_bytes, {{"tier", "host"}});
      AddSample(out.back(), r.device_bytes, {{"tier", "device"}});
      out.push_back(Family("loramux_adapters_resident", "Adapter versions resident per tier.",
                           MetricType::Gauge));
      AddSample(out.back(), r.host_count, {{"tier", "host"}});
      AddSample(out.back(), r.device_count, {{"tier", "device"}});
    }
    return out;
  }

 private:
  std::function<SchedulerStats()> scheduler_stats_;
  std::function<RegistryStats()> registry_stats_;
};

Metrics::Metrics(std::function<SchedulerStats()> scheduler_stats,
                 std::function<RegistryStats()> registry_stats)
    : registry_(std::make_shared<prometheus::Registry>()),
      engine_collector_(std::make_shared<EngineCollector>(std::move(scheduler_stats),
                                                          std::move(registry_stats))) {
  requests_ = &prometheus::BuildCounter()
                   .Name("loramux_requests_total")
                   .Help("Finished RPCs by method and gRPC status code.")
                   .Register(*registry_);
  auto& request_seconds = prometheus::BuildHistogram()
                              .Name("loramux_request_duration_seconds")
                              .Help("RPC wall time from arrival to the final status, by method.")
                              .Register(*registry_);
  for (Rpc rpc : kAllRpcs) {
    request_seconds_[static_cast<size_t>(rpc)] =
        &request_seconds.Add({{"rpc", RpcName(rpc)}}, RequestBuckets());
  }
  ttft_ = &prometheus::BuildHistogram()
               .Name("loramux_time_to_first_token_seconds")
               .Help("Generate: time from arrival to the first generated token.")
               .Register(*registry_)
               .Add({}, TokenBuckets());
  inter_token_ = &prometheus::BuildHistogram()
                      .Name("loramux_inter_token_latency_seconds")
                      .Help("Generate: time between consecutive generated tokens.")
                      .Register(*registry_)
                      .Add({}, TokenBuckets());
  generated_tokens_ = &prometheus::BuildCounter()
                           .Name("loramux_generated_tokens_total")
                           .Help("Tokens generated and streamed to clients.")
                           .Register(*registry_)
                           .Add({});
  prompt_tokens_ = &prometheus::BuildCounter()
                        .Name("loramux_prompt_tokens_total")
                        .Help("Prompt tokens of finished Generate requests.")
                        .Register(*registry_)
                        .Add({});
}

Metrics::~Metrics() { StopServing(); }

absl::Status Metrics::Serve(const std::string& listen) {
  HttpRoute page{"GET", "/metrics", [this](const HttpRequest&) {
                   HttpResponse response;
                   response.content_type = "text/plain; version=0.0.4; charset=utf-8";
                   response.body = Render();
                   return response;
                 }};
  absl::StatusOr<std::unique_ptr<HttpEndpoint>> http =
      HttpEndpoint::Listen(listen, "--metrics_listen", {std::move(page)});
  if (!http.ok()) return http.status();
  http_ = *std::move(http);
  address_ = http_->address();
  return absl::OkStatus();
}

void Metrics::StopServing() { http_.reset(); }

void Metrics::RecordRpc(Rpc rpc, grpc::StatusCode code, absl::Duration latency) {
  requests_->Add({{"rpc", RpcName(rpc)}, {"code", GrpcCodeName(code)}}).Increment();
  request_seconds_[static_cast<size_t>(rpc)]->Observe(absl::ToDoubleSeconds(latency));
}

void Metrics::RecordTimeToFirstToken(absl::Duration latency) {
  ttft_->Observe(absl::ToDoubleSeconds(latency));
}

void Metrics::RecordInterTokenLatency(absl::Duration latency, int64_t tokens) {
  if (tokens <= 0) return;
  const double each = absl::ToDoubleSeconds(latency) / static_cast<double>(tokens);
  for (int64_t i = 0; i < tokens; ++i) inter_token_->Observe(each);
}

void Metrics::AddGeneratedTokens(int64_t tokens) {
  generated_tokens_->Increment(static_cast<double>(tokens));
}

void Metrics::AddPromptTokens(int64_t tokens) {
  prompt_tokens_->Increment(static_cast<double>(tokens));
}

std::string Metrics::Render() const {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  for (auto& family : engine_collector_->Collect()) families.push_back(std::move(family));
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace loramux
