#include "server/metrics.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>
#include <utility>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include "absl/strings/numbers.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "server/status_mapping.h"

namespace loramux {
namespace {

constexpr Rpc kAllRpcs[] = {Rpc::kGenerate, Rpc::kScore,  Rpc::kTokenize, Rpc::kDetokenize,
                            Rpc::kUpload,   Rpc::kList,   Rpc::kGet,      Rpc::kDelete,
                            Rpc::kLoad,     Rpc::kUnload};

// Seconds; spans a fast unary call (~1 ms) to a long generation or a big upload (minutes).
prometheus::Histogram::BucketBoundaries RequestBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};
}
// Seconds; token latencies sit between ~100 us (tiny models) and a few seconds (cold adapters).
prometheus::Histogram::BucketBoundaries TokenBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
          0.1,    0.25,    0.5,    1,     2.5,    5,     10};
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
      add("loramux_kv_cache_block_tokens", "Tokens held by one KV cache block.",
          MetricType::Gauge, s.kv_block_tokens);
    }
    if (registry_stats_) {
      const RegistryStats r = registry_stats_();
      add("loramux_adapter_cache_hits_total",
          "Adapter acquisitions that found the adapter resident on the device.",
          MetricType::Counter, r.hits);
      add("loramux_adapter_cache_misses_total",
          "Adapter acquisitions that had to wait for a load.", MetricType::Counter, r.misses);
      add("loramux_adapter_loads_total", "Adapter loads completed.", MetricType::Counter,
          r.loads);
      add("loramux_adapter_load_failures_total", "Adapter loads that failed.",
          MetricType::Counter, r.load_failures);
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

// A minimal HTTP/1.x endpoint for scrapes: one thread accepts a connection at a time, reads the
// request head (bounded size and time), answers GET/HEAD /metrics with the page and closes.
class Metrics::HttpEndpoint {
 public:
  static absl::StatusOr<std::unique_ptr<HttpEndpoint>> Listen(std::string host, int port,
                                                              std::function<std::string()> render) {
    const std::string flag_value = absl::StrCat(host, ":", port);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
      host = host.substr(1, host.size() - 2);
    }
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo* found = nullptr;
    if (int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), std::to_string(port).c_str(),
                             &hints, &found);
        rc != 0) {
      return absl::InvalidArgumentError(absl::StrCat("--metrics_listen=", flag_value,
                                                     ": cannot resolve the host (",
                                                     gai_strerror(rc), ")"));
    }
    int fd = -1;
    std::string error = "no address";
    for (addrinfo* a = found; a != nullptr && fd < 0; a = a->ai_next) {
      fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
      if (fd < 0) continue;
      const int one = 1;
      setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
      if (bind(fd, a->ai_addr, a->ai_addrlen) != 0 || listen(fd, 64) != 0) {
        error = std::strerror(errno);
        close(fd);
        fd = -1;
      }
    }
    freeaddrinfo(found);
    if (fd < 0) {
      return absl::UnavailableError(absl::StrCat(
          "--metrics_listen=", flag_value, ": cannot listen (", error,
          "); is the port in use? pick another one, or port 0 for any free port"));
    }
    sockaddr_storage bound{};
    socklen_t bound_size = sizeof(bound);
    getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &bound_size);
    const int bound_port =
        ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                          : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
    return std::unique_ptr<HttpEndpoint>(new HttpEndpoint(fd, bound_port, std::move(render)));
  }

  ~HttpEndpoint() {
    const char byte = 0;
    (void)!write(wake_[1], &byte, 1);
    thread_.join();
    close(wake_[0]);
    close(wake_[1]);
    close(listen_fd_);
  }

  int port() const { return port_; }

 private:
  HttpEndpoint(int listen_fd, int port, std::function<std::string()> render)
      : listen_fd_(listen_fd), port_(port), render_(std::move(render)) {
    if (pipe2(wake_, O_CLOEXEC) != 0) wake_[0] = wake_[1] = -1;
    thread_ = std::thread([this] { Loop(); });
  }

  void Loop() {
    while (true) {
      pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
      if (poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        return;
      }
      if (fds[1].revents != 0) return;
      if ((fds[0].revents & POLLIN) == 0) continue;
      const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      Answer(fd);
      close(fd);
    }
  }

  void Answer(int fd) {
    const timeval timeout{5, 0};  // a stuck scraper cannot hold the endpoint for long
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
    std::string head;
    char buffer[2048];
    while (head.find("\r\n\r\n") == std::string::npos && head.find("\n\n") == std::string::npos &&
           head.size() < 16384) {
      const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
      if (n <= 0) return;
      head.append(buffer, static_cast<size_t>(n));
    }
    const absl::string_view line = absl::string_view(head).substr(0, head.find_first_of("\r\n"));
    const std::vector<absl::string_view> parts = absl::StrSplit(line, ' ', absl::SkipEmpty());
    std::string status = "200 OK", type = "text/plain; version=0.0.4; charset=utf-8", body;
    const bool head_only = !parts.empty() && parts[0] == "HEAD";
    if (parts.size() < 2 || (parts[0] != "GET" && !head_only)) {
      status = "405 Method Not Allowed";
      body = "use GET /metrics\n";
    } else if (parts[1] != "/metrics" && !absl::StartsWith(parts[1], "/metrics?")) {
      status = "404 Not Found";
      body = "the metrics are at /metrics\n";
    } else {
      body = render_();
    }
    if (status[0] != '2') type = "text/plain; charset=utf-8";
    std::string reply = absl::StrCat("HTTP/1.1 ", status, "\r\nContent-Type: ", type,
                                     "\r\nContent-Length: ", body.size(),
                                     "\r\nConnection: close\r\n\r\n");
    if (!head_only) reply += body;
    for (size_t sent = 0; sent < reply.size();) {
      const ssize_t n = send(fd, reply.data() + sent, reply.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return;
      sent += static_cast<size_t>(n);
    }
  }

  const int listen_fd_;
  const int port_;
  int wake_[2] = {-1, -1};
  std::function<std::string()> render_;
  std::thread thread_;
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
  const size_t colon = listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(absl::string_view(listen).substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--metrics_listen=", listen, ": expected HOST:PORT such as 127.0.0.1:9090 (port 0 picks a ",
        "free port; an empty value turns metrics off)"));
  }
  absl::StatusOr<std::unique_ptr<HttpEndpoint>> http =
      HttpEndpoint::Listen(listen.substr(0, colon), port, [this] { return Render(); });
  if (!http.ok()) return http.status();
  http_ = *std::move(http);
  address_ = absl::StrCat(listen.substr(0, colon), ":", http_->port());
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
