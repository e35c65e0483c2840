// The loramux gRPC server: the engine, the Inference and Adapters services, the standard
// grpc.health.v1.Health service, server reflection, optional TLS, the Prometheus endpoint, and
// the OpenAI-compatible HTTP front (http_front.h) when --http_listen is set.
//
// Lifecycle: Start() -> serving (health SERVING) -> BeginDrain() (health NOT_SERVING, new
// Generate/Score refused with UNAVAILABLE, running requests go on) -> Shutdown() (the rest are
// ended, in-flight replies flushed, listeners closed). RunServer() drives this from a process:
// it prints `http listening on HOST:PORT` (with the HTTP front) and `listening on HOST:PORT` once
// ready and drains on SIGTERM or SIGINT.
//
// Thread-safety: Start/BeginDrain/Shutdown are for one controlling thread; Idle() is safe from any.
#pragma once

#include <memory>
#include <string>

#include <grpcpp/server.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/engine.h"
#include "server/server_config.h"

namespace loramux {

class AdaptersService;
class HttpFront;
class InferenceService;
class Metrics;

class Server {
 public:
  // Loads the engine and starts listening. Errors name the flag or file at fault (UNAVAILABLE
  // when an address cannot be bound).
  static absl::StatusOr<std::unique_ptr<Server>> Start(const ServerConfig& config);
  ~Server();  // Shutdown()
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // "HOST:PORT" as bound (the real port when --listen asked for port 0).
  const std::string& address() const { return address_; }
  // "HOST:PORT" of /metrics, or "" when metrics are off.
  std::string metrics_address() const;
  // "HOST:PORT" of the HTTP front, or "" when it is off.
  std::string http_address() const;
  Engine& engine() { return *engine_; }

  // Health turns NOT_SERVING and the scheduler refuses new requests (UNAVAILABLE).
  void BeginDrain();
  // True when no request is queued or running.
  bool Idle() const;
  // Ends what still runs (UNAVAILABLE), flushes replies for up to `grace`, stops listening and
  // stops metrics. Idempotent.
  void Shutdown(absl::Duration grace = absl::Seconds(5));

 private:
  Server() = default;

  // Destroyed in reverse order: the gRPC server first, the engine last.
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<InferenceService> inference_;
  std::unique_ptr<AdaptersService> adapters_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<HttpFront> http_;
  std::string address_;
  bool draining_ = false;
  bool shut_down_ = false;
};

// Runs a server process until SIGTERM/SIGINT, then drains for config.drain_timeout (a second
// signal cuts the drain short) and shuts down. Prints `listening on HOST:PORT` on stdout when
// ready. Returns the process exit code: 0 after a clean drain, 1 when the server cannot start.
int RunServer(const ServerConfig& config);

}  // namespace loramux
