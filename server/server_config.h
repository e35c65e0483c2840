// Server settings: the command-line flags, checked and turned into EngineOptions plus what the
// gRPC layer needs (addresses, tokens, TLS material, drain timeout).
//
// Flags (absl): --model_dir --listen --metrics_listen --adapter_store --device --dtype --pack_weights
// --admin_token_file --inference_token_file --tls_cert_file --tls_key_file
// --max_host_adapter_bytes --max_device_adapter_bytes --kv_cache_bytes --max_batch_tokens
// --max_running_requests --max_queue, and --drain_timeout_s --max_upload_bytes --max_rank
// --adapter_dtype --default_max_new_tokens --max_new_tokens_limit --max_prompt_tokens
// --max_concurrent_uploads --upload_idle_timeout, and the HTTP front's --http_listen
// --served_model_name --max_http_body_bytes --http_threads. Byte sizes
// accept a plain count or a suffix: 512MiB, 2GiB, 100MB, 1G (K/M/G/T are binary).
//
// Thread-safety: ServerConfigFromFlags reads global flags; call it once from main.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/engine.h"

namespace loramux {

struct ServerConfig {
  EngineOptions engine;
  std::string listen = "127.0.0.1:50051";         // HOST:PORT; port 0 picks a free port
  std::string metrics_listen = "127.0.0.1:9090";  // "" turns the metrics endpoint off
  std::string admin_token;                        // "" = the Adapters service needs no token
  std::string inference_token;                    // "" = the Inference service needs no token
  std::string tls_cert_pem;                       // both set: TLS; both empty: plaintext
  std::string tls_key_pem;
  absl::Duration drain_timeout = absl::Seconds(30);
  int max_receive_message_bytes = 4 << 20;
  size_t max_chunk_bytes = 1 << 20;
  int max_concurrent_uploads = 16;                         // more Upload calls: RESOURCE_EXHAUSTED
  absl::Duration upload_idle_timeout = absl::Seconds(60);  // no message for this long: aborted
  std::string http_listen;        // the OpenAI-compatible HTTP front; "" = off
  std::string served_model_name;  // the base model's id there; "" = the model directory's name
  int64_t max_http_body_bytes = 8 << 20;
  int http_threads = 128;  // HTTP requests served at once
};

// The model served when --model_dir is empty: the tiny Llama under the source tree's test data,
// so a fresh checkout runs with no download.
std::string DefaultModelDir();

// Reads the flags, the token and certificate files. INVALID_ARGUMENT naming the flag at fault.
absl::StatusOr<ServerConfig> ServerConfigFromFlags();

// Parses a byte size: "1048576", "512MiB", "512M", "2GiB", "100MB" (decimal), "64KiB".
absl::StatusOr<int64_t> ParseByteSize(const std::string& text);

}  // namespace loramux
