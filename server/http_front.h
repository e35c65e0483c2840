// The OpenAI-compatible HTTP front (`--http_listen`): the same engine as gRPC, spoken to as vLLM's
// and LoRAX's servers are, with `model` naming the adapter.
//
//   GET  /v1/models                 the base model and every stored adapter ("parent": the base)
//   POST /v1/completions            prompt (text or token ids) -> text; `stream` as Server-Sent
//   Events POST /v1/chat/completions       messages, rendered with the model's chat template POST
//   /v1/load_lora_adapter      {"lora_name", "lora_path"}: imports a PEFT directory on this
//                                   server's file system into the store (admin token)
//   POST /v1/unload_lora_adapter    {"lora_name"}: deletes the adapter from the store, so it is no
//                                   longer served by any replica (admin token)
//   GET  /health                    200 while serving, 503 while draining
//   GET  /metrics                   the Prometheus page, as on --metrics_listen
//
// `model` is the base model's id (--served_model_name, else the model directory's name), an
// adapter name, or name@version. Requests go through the scheduler's one validator, exactly as
// gRPC ones do (openai_api.h maps the JSON). Errors are OpenAI's JSON with the matching status:
// 400 bad body, 401 auth, 404 unknown model, 429 full queue (Retry-After), 503 draining.
//
// Each request holds one of the endpoint's threads while it runs (the stream is written from it):
// --http_threads bounds the requests served at once; more wait in the accept queue. A client that
// disconnects mid-stream is noticed at the next write, and its sequence is cancelled within one
// step. Bodies are bounded (--max_http_body_bytes); slow or idle connections time out.
//
// Thread-safety: handlers run concurrently on the endpoint's threads; SetServing is thread-safe.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/engine.h"
#include "server/auth.h"
#include "server/metrics.h"

namespace loramux {

class HttpEndpoint;

struct HttpFrontOptions {
  std::string listen;             // HOST:PORT; port 0 picks a free port
  std::string served_model_name;  // the base model's id; "" = the model directory's name
  std::string model_dir;          // for the default id
  size_t max_body_bytes = 8 << 20;
  int threads = 128;
  absl::Duration read_timeout = absl::Seconds(30);   // per read: a client trickling its body
  absl::Duration write_timeout = absl::Seconds(30);  // per write: a client that stopped reading
  int32_t default_max_tokens = 16;                   // completions without max_tokens
  int32_t max_tokens_limit = 4096;
  std::string tls_cert_pem;  // both set: HTTPS
  std::string tls_key_pem;
};

class HttpFront {
 public:
  // `engine` and `metrics` must outlive the front. Stop the scheduler before destroying it, so
  // that every request still streaming ends.
  static absl::StatusOr<std::unique_ptr<HttpFront>> Start(Engine& engine, Metrics& metrics,
                                                          TokenAuth inference_auth,
                                                          TokenAuth admin_auth,
                                                          HttpFrontOptions options);
  ~HttpFront();
  HttpFront(const HttpFront&) = delete;
  HttpFront& operator=(const HttpFront&) = delete;

  // "HOST:PORT" as bound.
  const std::string& address() const;
  // /health answers 503 once false.
  void SetServing(bool serving) { serving_.store(serving); }

  class Handlers;  // the routes (http_front.cc)

 private:
  HttpFront() = default;

  std::atomic<bool> serving_{true};
  std::unique_ptr<Handlers> handlers_;
  std::unique_ptr<HttpEndpoint> endpoint_;  // destroyed first: its threads use the handlers
};

}  // namespace loramux
