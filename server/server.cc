#include "server/server.h"

#include <pthread.h>
#include <signal.h>

#include <cerrno>
#include <cstring>
#include <iostream>
#include <string>
#include <utility>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "server/adapters_service.h"
#include "server/auth.h"
#include "server/http_front.h"
#include "server/inference_service.h"
#include "server/metrics.h"

namespace loramux {
namespace {

constexpr const char* kServiceNames[] = {"loramux.v1.Inference", "loramux.v1.Adapters"};

std::shared_ptr<grpc::ServerCredentials> Credentials(const ServerConfig& config) {
  if (config.tls_cert_pem.empty()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions options;
  options.pem_key_cert_pairs.push_back({config.tls_key_pem, config.tls_cert_pem});
  return grpc::SslServerCredentials(options);
}

void SetServing(grpc::Server& server, bool serving) {
  grpc::HealthCheckServiceInterface* health = server.GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus(serving);  // "" (the whole server) and every named service
  for (const char* name : kServiceNames) health->SetServingStatus(name, serving);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const ServerConfig& config) {
  auto server = std::unique_ptr<Server>(new Server());
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(config.engine);
  if (!engine.ok()) return engine.status();
  server->engine_ = *std::move(engine);
  LogInfo("engine: %s", server->engine_->description());

  Engine* e = server->engine_.get();
  server->metrics_ = std::make_unique<Metrics>([e] { return e->scheduler().stats(); },
                                               [e] { return e->registry().stats(); });
  if (!config.metrics_listen.empty()) {
    if (absl::Status s = server->metrics_->Serve(config.metrics_listen); !s.ok()) return s;
    LogInfo("metrics on http://%s/metrics", server->metrics_->address());
  }

  server->inference_ = std::make_unique<InferenceService>(
      e->scheduler(), e->text(), *server->metrics_,
      TokenAuth(config.inference_token, "--inference_token_file"));
  AdaptersServiceOptions adapters_options;
  adapters_options.max_chunk_bytes = config.max_chunk_bytes;
  adapters_options.max_concurrent_uploads = config.max_concurrent_uploads;
  adapters_options.upload_idle_timeout = config.upload_idle_timeout;
  server->adapters_ = std::make_unique<AdaptersService>(
      e->registry(), *server->metrics_, TokenAuth(config.admin_token, "--admin_token_file"),
      adapters_options);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(config.listen, Credentials(config), &port);
  builder.SetMaxReceiveMessageSize(config.max_receive_message_bytes);
  builder.RegisterService(server->inference_.get());
  builder.RegisterService(server->adapters_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || port == 0) {
    if (server->server_ != nullptr) server->server_->Shutdown();
    return absl::UnavailableError(absl::StrCat(
        "--listen=", config.listen, ": cannot listen there; is the port in use or the host not ",
        "an address of this machine? pick another, or port 0 for any free port"));
  }
  server->address_ = absl::StrCat(config.listen.substr(0, config.listen.rfind(':')), ":", port);
  if (!config.http_listen.empty()) {
    HttpFrontOptions http;
    http.listen = config.http_listen;
    http.served_model_name = config.served_model_name;
    http.model_dir = config.engine.model_dir;
    http.max_body_bytes = static_cast<size_t>(config.max_http_body_bytes);
    http.threads = config.http_threads;
    http.default_max_tokens = config.engine.scheduler.default_max_new_tokens;
    http.max_tokens_limit = config.engine.scheduler.max_new_tokens_limit;
    http.tls_cert_pem = config.tls_cert_pem;
    http.tls_key_pem = config.tls_key_pem;
    absl::StatusOr<std::unique_ptr<HttpFront>> front = HttpFront::Start(
        *e, *server->metrics_, TokenAuth(config.inference_token, "--inference_token_file"),
        TokenAuth(config.admin_token, "--admin_token_file"), std::move(http));
    if (!front.ok()) {
      server->server_->Shutdown();
      return front.status();
    }
    server->http_ = *std::move(front);
    LogInfo("OpenAI-compatible HTTP API on %s://%s/v1",
            config.tls_cert_pem.empty() ? "http" : "https", server->http_->address());
  }
  SetServing(*server->server_, true);
  LogInfo("serving on %s (%s; Adapters %s; Inference %s)", server->address_,
          config.tls_cert_pem.empty() ? "plaintext" : "TLS",
          config.admin_token.empty() ? "open" : "needs the admin token",
          config.inference_token.empty() ? "open" : "needs the inference token");
  return server;
}

Server::~Server() { Shutdown(); }

std::string Server::metrics_address() const {
  return metrics_ == nullptr ? std::string() : metrics_->address();
}

std::string Server::http_address() const {
  return http_ == nullptr ? std::string() : http_->address();
}

void Server::BeginDrain() {
  if (draining_ || shut_down_) return;
  draining_ = true;
  if (server_ != nullptr) SetServing(*server_, false);
  if (http_ != nullptr) http_->SetServing(false);
  if (engine_ != nullptr) engine_->scheduler().StartDrain();
}

bool Server::Idle() const { return engine_ == nullptr || engine_->scheduler().Idle(); }

void Server::Shutdown(absl::Duration grace) {
  if (shut_down_) return;
  BeginDrain();
  shut_down_ = true;
  if (engine_ != nullptr) {
    const SchedulerStats stats = engine_->scheduler().stats();
    if (stats.queued + stats.running > 0) {
      LogWarning("shutting down with %d queued and %d running requests; ending them", stats.queued,
                 stats.running);
    }
    // Ends every request (UNAVAILABLE), so each reactor can finish its call.
    engine_->scheduler().Stop();
  }
  // Replies already produced are flushed for up to `grace`; then remaining calls are cancelled.
  if (server_ != nullptr)
    server_->Shutdown(std::chrono::system_clock::now() + absl::ToChronoSeconds(grace));
  http_.reset();  // its streams ended with the scheduler
  if (metrics_ != nullptr) metrics_->StopServing();
}

int RunServer(const ServerConfig& config) {
  // Block the signals in this thread before any other starts, so every thread inherits the mask
  // and they are taken only by sigwait below (no work in a signal handler).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(config);
  if (!server.ok()) {
    LogError("cannot start: %s", server.status().ToString());
    return 1;
  }
  if (!(*server)->http_address().empty())
    std::cout << "http listening on " << (*server)->http_address() << "\n";
  std::cout << "listening on " << (*server)->address() << std::endl;  // flushes

  int signal_number = 0;
  while (sigwait(&signals, &signal_number) != 0) {
  }
  LogInfo("%s: draining (up to %s); health is NOT_SERVING and new requests are refused",
          strsignal(signal_number), absl::FormatDuration(config.drain_timeout));
  (*server)->BeginDrain();
  const absl::Time deadline = absl::Now() + config.drain_timeout;
  bool cut_short = false;
  while (!(*server)->Idle() && absl::Now() < deadline && !cut_short) {
    const timespec poll = {0, 20 * 1000 * 1000};
    if (sigtimedwait(&signals, nullptr, &poll) > 0) {
      LogWarning("second signal during the drain: shutting down now");
      cut_short = true;
    }
  }
  if (!(*server)->Idle() && !cut_short) {
    LogWarning("drain timeout (--drain_timeout_s) reached with requests still running");
  }
  (*server)->Shutdown();
  server->reset();
  LogInfo("shut down");
  return 0;
}

}  // namespace loramux
