#include "server/server_config.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/durable_file.h"
#include "server/auth.h"

#ifndef LORAMUX_SOURCE_DIR
#define LORAMUX_SOURCE_DIR "."
#endif

namespace loramux {

// A byte count given on the command line, with optional unit suffix.
struct ByteSizeFlag {
  int64_t bytes = 0;
};

bool AbslParseFlag(absl::string_view text, ByteSizeFlag* flag, std::string* error) {
  absl::StatusOr<int64_t> bytes = ParseByteSize(std::string(text));
  if (!bytes.ok()) {
    *error = std::string(bytes.status().message());
    return false;
  }
  flag->bytes = *bytes;
  return true;
}

std::string AbslUnparseFlag(ByteSizeFlag flag) {
  for (const auto& [unit, size] : {std::pair<const char*, int64_t>{"TiB", 1ll << 40},
                                   {"GiB", 1ll << 30},
                                   {"MiB", 1ll << 20},
                                   {"KiB", 1ll << 10}}) {
    if (flag.bytes != 0 && flag.bytes % size == 0) return absl::StrCat(flag.bytes / size, unit);
  }
  return absl::StrCat(flag.bytes);
}

}  // namespace loramux

using loramux::ByteSizeFlag;

ABSL_FLAG(std::string, model_dir, "",
          "Base model directory (config.json + model.safetensors). Empty: the built-in tiny "
          "Llama from the source tree's tests/data/llama-tiny.");
ABSL_FLAG(std::string, listen, "127.0.0.1:50051",
          "gRPC address HOST:PORT; port 0 picks a free port (printed as `listening on`).");
ABSL_FLAG(std::string, metrics_listen, "127.0.0.1:9090",
          "Prometheus /metrics address HOST:PORT; empty turns metrics off.");
ABSL_FLAG(std::string, adapter_store, "./loramux-store",
          "Adapter store directory (created if missing; may be shared by several servers).");
ABSL_FLAG(std::string, device, "cpu", "Device: cpu, cuda or cuda:N.");
ABSL_FLAG(std::string, dtype, "auto",
          "Compute dtype: auto (bfloat16 where the CPU multiplies it natively, float32 elsewhere; "
          "the choice and both GEMM rates are logged at start-up), float32 (exact to the float32 "
          "references), bfloat16 or float16.");
ABSL_FLAG(bool, pack_weights, true,
          "On the CPU, store the base model's linear weights once in the layout a matmul kernel "
          "reads (packed at load for loramux's panel kernels on AVX-512 CPUs, oneDNN's elsewhere: "
          "faster than the plain weights at every batch size); false multiplies the plain weights "
          "through LibTorch.");
ABSL_FLAG(std::string, admin_token_file, "",
          "File holding the bearer token the Adapters service requires (empty: no token).");
ABSL_FLAG(std::string, inference_token_file, "",
          "File holding the bearer token the Inference service requires (empty: no token).");
ABSL_FLAG(std::string, tls_cert_file, "", "PEM certificate chain; with --tls_key_file, serve TLS.");
ABSL_FLAG(std::string, tls_key_file, "", "PEM private key for --tls_cert_file.");
ABSL_FLAG(ByteSizeFlag, max_host_adapter_bytes, ByteSizeFlag{1ll << 30},
          "Budget for adapter weights held in host memory (e.g. 1GiB).");
ABSL_FLAG(ByteSizeFlag, max_device_adapter_bytes, ByteSizeFlag{1ll << 30},
          "Budget for adapter weights resident on the device (e.g. 1GiB).");
ABSL_FLAG(ByteSizeFlag, kv_cache_bytes, ByteSizeFlag{256ll << 20},
          "Bytes of KV cache to allocate (e.g. 256MiB).");
ABSL_FLAG(int64_t, max_batch_tokens, 2048, "Tokens per forward step (prefill is chunked).");
ABSL_FLAG(int64_t, max_running_requests, 64, "Requests decoding at once.");
ABSL_FLAG(int64_t, max_queue, 1024,
          "Requests waiting for admission; beyond this Generate/Score get RESOURCE_EXHAUSTED.");
ABSL_FLAG(double, drain_timeout_s, 30,
          "On SIGTERM, seconds to let running requests finish before shutting down.");
ABSL_FLAG(ByteSizeFlag, max_upload_bytes, ByteSizeFlag{1ll << 30},
          "Largest adapter weights file an Upload may declare (e.g. 1GiB).");
ABSL_FLAG(int64_t, max_rank, 256, "Largest adapter rank accepted.");
ABSL_FLAG(std::string, adapter_dtype, "auto",
          "How a float32 CPU server keeps adapter factors: auto (files stored in bfloat16 or "
          "float16 stay 16-bit, exactly; others float32), float32, or bfloat16/float16 (halves "
          "memory and decode bandwidth, rounding float32 factors). Other servers use --dtype.");
ABSL_FLAG(int32_t, default_max_new_tokens, 16,
          "Tokens generated when a request leaves max_new_tokens at 0.");
ABSL_FLAG(int32_t, max_new_tokens_limit, 4096, "Largest max_new_tokens a request may ask for.");
ABSL_FLAG(int32_t, max_concurrent_uploads, 16,
          "Adapters.Upload calls in progress at once; more get RESOURCE_EXHAUSTED. Each one holds "
          "a staging directory but no file descriptor while it waits for the client.");
ABSL_FLAG(absl::Duration, upload_idle_timeout, absl::Seconds(60),
          "An Upload that sends no message for this long (e.g. 30s, 2m) is ended with "
          "DEADLINE_EXCEEDED and its staged bytes are removed.");
ABSL_FLAG(int64_t, max_prompt_tokens, 0,
          "Longest prompt accepted; 0 = the model's max_position_embeddings.");
ABSL_FLAG(ByteSizeFlag, max_score_logits_bytes, ByteSizeFlag{256ll << 20},
          "Largest logits array a Score request may ask for with return_logits "
          "(tokens x vocabulary x 4 bytes; e.g. 256MiB).");

ABSL_FLAG(std::string, http_listen, "",
          "OpenAI-compatible HTTP API address HOST:PORT (/v1/completions, /v1/chat/completions, "
          "/v1/models, /health, /metrics); empty turns it off; port 0 picks a free port (printed "
          "as `http listening on`). Uses the same tokens and TLS files as gRPC.");
ABSL_FLAG(std::string, served_model_name, "",
          "The base model's id on the HTTP API (`model`); empty: the model directory's name.");
ABSL_FLAG(ByteSizeFlag, max_http_body_bytes, ByteSizeFlag{8ll << 20},
          "Largest HTTP request body accepted (larger get 413).");
ABSL_FLAG(int32_t, http_threads, 128,
          "HTTP requests served at once (each holds a thread while it generates); more wait.");

namespace loramux {
namespace {

// A certificate or key file (PEM, at most 1 MiB).
absl::StatusOr<std::string> ReadWholeFile(const std::string& path, const std::string& flag) {
  absl::StatusOr<std::string> text = ReadSmallFile(path, 1 << 20);
  if (!text.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(flag, "=", path, ": ", text.status().message(),
                                                   "; check the path and permissions"));
  }
  if (text->empty())
    return absl::InvalidArgumentError(absl::StrCat(flag, "=", path, ": the file is empty"));
  return text;
}

absl::Status RequirePositive(const char* flag, int64_t value) {
  if (value > 0) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("--", flag, "=", value, ": must be a positive number"));
}

absl::Status CheckHostPort(const char* flag, const std::string& value) {
  const size_t colon = value.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(absl::string_view(value).substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", flag, "=", value, ": expected HOST:PORT such as 127.0.0.1:50051 or [::]:0"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<int64_t> ParseByteSize(const std::string& text) {
  const std::string trimmed(absl::StripAsciiWhitespace(text));
  size_t digits_end = 0;
  while (digits_end < trimmed.size() &&
         (absl::ascii_isdigit(static_cast<unsigned char>(trimmed[digits_end])) ||
          trimmed[digits_end] == '.')) {
    ++digits_end;
  }
  double number = 0;
  const std::string suffix = absl::AsciiStrToLower(trimmed.substr(digits_end));
  double unit = 0;
  if (suffix.empty() || suffix == "b")
    unit = 1;
  else if (suffix == "k" || suffix == "kib")
    unit = 1024.0;
  else if (suffix == "m" || suffix == "mib")
    unit = 1024.0 * 1024;
  else if (suffix == "g" || suffix == "gib")
    unit = 1024.0 * 1024 * 1024;
  else if (suffix == "t" || suffix == "tib")
    unit = 1024.0 * 1024 * 1024 * 1024;
  else if (suffix == "kb")
    unit = 1e3;
  else if (suffix == "mb")
    unit = 1e6;
  else if (suffix == "gb")
    unit = 1e9;
  else if (suffix == "tb")
    unit = 1e12;
  if (digits_end == 0 || unit == 0 ||
      !absl::SimpleAtod(absl::string_view(trimmed).substr(0, digits_end), &number) ||
      !std::isfinite(number * unit) ||
      number * unit > static_cast<double>(std::numeric_limits<int64_t>::max() / 2)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", text, "\" is not a byte size; write a count such as 1048576, 512MiB, 2GiB or 100MB"));
  }
  return static_cast<int64_t>(std::llround(number * unit));
}

std::string DefaultModelDir() { return std::string(LORAMUX_SOURCE_DIR) + "/tests/data/llama-tiny"; }

absl::StatusOr<ServerConfig> ServerConfigFromFlags() {
  ServerConfig config;
  EngineOptions& engine = config.engine;
  engine.model_dir = absl::GetFlag(FLAGS_model_dir);
  if (engine.model_dir.empty()) engine.model_dir = DefaultModelDir();
  engine.adapter_store = absl::GetFlag(FLAGS_adapter_store);
  if (engine.adapter_store.empty()) {
    return absl::InvalidArgumentError(
        "--adapter_store is empty; give a directory for adapters (it is created if missing)");
  }
  engine.device = absl::GetFlag(FLAGS_device);
  engine.dtype = absl::GetFlag(FLAGS_dtype);
  engine.pack_weights = absl::GetFlag(FLAGS_pack_weights);
  if (engine.dtype != "float32" && engine.dtype != "bfloat16" && engine.dtype != "float16" &&
      engine.dtype != "auto") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--dtype=", engine.dtype, ": unknown; use float32, bfloat16, float16 or auto"));
  }

  config.listen = absl::GetFlag(FLAGS_listen);
  if (absl::Status s = CheckHostPort("listen", config.listen); !s.ok()) return s;
  config.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  if (!config.metrics_listen.empty()) {
    if (absl::Status s = CheckHostPort("metrics_listen", config.metrics_listen); !s.ok()) return s;
  }
  config.http_listen = absl::GetFlag(FLAGS_http_listen);
  if (!config.http_listen.empty()) {
    if (absl::Status s = CheckHostPort("http_listen", config.http_listen); !s.ok()) return s;
  }
  config.served_model_name = absl::GetFlag(FLAGS_served_model_name);
  config.max_http_body_bytes = absl::GetFlag(FLAGS_max_http_body_bytes).bytes;
  if (absl::Status s = RequirePositive("max_http_body_bytes", config.max_http_body_bytes); !s.ok())
    return s;
  config.http_threads = absl::GetFlag(FLAGS_http_threads);
  if (absl::Status s = RequirePositive("http_threads", config.http_threads); !s.ok()) return s;

  if (const std::string path = absl::GetFlag(FLAGS_admin_token_file); !path.empty()) {
    absl::StatusOr<std::string> token = ReadTokenFile(path, "--admin_token_file");
    if (!token.ok()) return token.status();
    config.admin_token = *std::move(token);
  }
  if (const std::string path = absl::GetFlag(FLAGS_inference_token_file); !path.empty()) {
    absl::StatusOr<std::string> token = ReadTokenFile(path, "--inference_token_file");
    if (!token.ok()) return token.status();
    config.inference_token = *std::move(token);
  }

  const std::string cert_file = absl::GetFlag(FLAGS_tls_cert_file);
  const std::string key_file = absl::GetFlag(FLAGS_tls_key_file);
  if (cert_file.empty() != key_file.empty()) {
    return absl::InvalidArgumentError(
        "TLS needs both --tls_cert_file and --tls_key_file; give both, or neither for plaintext");
  }
  if (!cert_file.empty()) {
    absl::StatusOr<std::string> cert = ReadWholeFile(cert_file, "--tls_cert_file");
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadWholeFile(key_file, "--tls_key_file");
    if (!key.ok()) return key.status();
    config.tls_cert_pem = *std::move(cert);
    config.tls_key_pem = *std::move(key);
  }

  engine.registry.max_host_bytes = absl::GetFlag(FLAGS_max_host_adapter_bytes).bytes;
  engine.registry.max_device_bytes = absl::GetFlag(FLAGS_max_device_adapter_bytes).bytes;
  engine.registry.limits.max_rank = absl::GetFlag(FLAGS_max_rank);
  absl::StatusOr<FactorPrecision> factors =
      ParseFactorPrecision(absl::GetFlag(FLAGS_adapter_dtype));
  if (!factors.ok())
    return absl::InvalidArgumentError(
        absl::StrCat("--adapter_dtype: ", factors.status().message()));
  engine.registry.limits.factors = *factors;
  engine.max_upload_bytes =
      static_cast<uint64_t>(std::max<int64_t>(0, absl::GetFlag(FLAGS_max_upload_bytes).bytes));
  SchedulerOptions& scheduler = engine.scheduler;
  scheduler.kv_cache_bytes = absl::GetFlag(FLAGS_kv_cache_bytes).bytes;
  scheduler.max_batch_tokens = absl::GetFlag(FLAGS_max_batch_tokens);
  scheduler.max_running_requests = absl::GetFlag(FLAGS_max_running_requests);
  scheduler.max_queue = absl::GetFlag(FLAGS_max_queue);
  scheduler.max_prompt_tokens = absl::GetFlag(FLAGS_max_prompt_tokens);
  scheduler.default_max_new_tokens = absl::GetFlag(FLAGS_default_max_new_tokens);
  scheduler.max_new_tokens_limit = absl::GetFlag(FLAGS_max_new_tokens_limit);
  scheduler.max_score_logits_bytes = absl::GetFlag(FLAGS_max_score_logits_bytes).bytes;
  for (const auto& [flag, value] : {
           std::pair<const char*, int64_t>{"max_host_adapter_bytes",
                                           engine.registry.max_host_bytes},
           {"max_device_adapter_bytes", engine.registry.max_device_bytes},
           {"max_rank", engine.registry.limits.max_rank},
           {"max_upload_bytes", static_cast<int64_t>(engine.max_upload_bytes)},
           {"kv_cache_bytes", scheduler.kv_cache_bytes},
           {"max_batch_tokens", scheduler.max_batch_tokens},
           {"max_running_requests", scheduler.max_running_requests},
           {"max_queue", scheduler.max_queue},
           {"default_max_new_tokens", scheduler.default_max_new_tokens},
           {"max_new_tokens_limit", scheduler.max_new_tokens_limit},
           {"max_score_logits_bytes", scheduler.max_score_logits_bytes},
       }) {
    if (absl::Status s = RequirePositive(flag, value); !s.ok()) return s;
  }
  if (scheduler.max_prompt_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_prompt_tokens=", scheduler.max_prompt_tokens,
                     ": use 0 for the model's context length or a positive count"));
  }
  if (scheduler.default_max_new_tokens > scheduler.max_new_tokens_limit) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--default_max_new_tokens=", scheduler.default_max_new_tokens,
        " is over --max_new_tokens_limit=", scheduler.max_new_tokens_limit, "; lower it"));
  }

  config.max_concurrent_uploads = absl::GetFlag(FLAGS_max_concurrent_uploads);
  if (absl::Status s = RequirePositive("max_concurrent_uploads", config.max_concurrent_uploads);
      !s.ok()) {
    return s;
  }
  config.upload_idle_timeout = absl::GetFlag(FLAGS_upload_idle_timeout);
  if (config.upload_idle_timeout <= absl::ZeroDuration() ||
      config.upload_idle_timeout == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--upload_idle_timeout=", absl::FormatDuration(config.upload_idle_timeout),
                     ": use a positive, finite duration such as 30s or 2m"));
  }

  const double drain_s = absl::GetFlag(FLAGS_drain_timeout_s);
  if (!std::isfinite(drain_s) || drain_s < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--drain_timeout_s=", drain_s, ": use a number of seconds >= 0"));
  }
  config.drain_timeout = absl::Seconds(drain_s);
  return config;
}

}  // namespace loramux
