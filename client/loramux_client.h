// LoramuxClient: a small C++ client for the loramux gRPC API (proto/loramux/v1/loramux.proto).
//
// One client holds one channel (HTTP/2 connection, reconnected by gRPC as needed) and stubs for
// the Inference and Adapters services. Every call is blocking and returns absl::Status /
// absl::StatusOr; a failed RPC keeps its gRPC code and message (absl and gRPC share the numeric
// codes), so `absl::StatusCodeToString(status.code())` prints "NOT_FOUND", "UNAUTHENTICATED", ...
//
// Retries: calls that are safe to repeat (Score, Tokenize, Detokenize, List, Get, Load, Unload,
// health, Upload — the store is content-addressed, so the same bytes publish the same version —
// and Generate until its first message reached the caller) are retried up to `max_attempts` in
// all, with exponential backoff and jitter, when they fail UNAVAILABLE or their stream was reset
// on the way (INTERNAL "Received RST_STREAM ...": a proxy lost its backend mid-call, so no server
// gave a verdict). Delete is never retried.
// Load-balancer affinity: every call that names an adapter carries its name (without @version)
// as `x-loramux-adapter` metadata (deploy/nginx.conf hashes on it).
//
// Auth: when a token is set, each call of the matching service carries
// `authorization: Bearer <token>` (admin token for Adapters, inference token for Inference).
// TLS: set `tls` (and optionally a PEM root certificate; empty means the system roots).
//
// Thread-safety: a connected LoramuxClient is safe to use from many threads at once; each call is
// independent. The object must outlive the calls running on it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/channel.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "loramux/v1/loramux.grpc.pb.h"

namespace loramux {

struct ClientOptions {
  std::string target = "127.0.0.1:50051";  // "host:port" or any gRPC target URI
  bool tls = false;                        // true: TLS; implied when tls_root_cert_pem is set
  std::string tls_root_cert_pem;           // PEM roots to trust; "" = the system roots
  std::string tls_server_name;             // overrides the name checked in the server cert
  std::string admin_token;                 // "" = send no token to the Adapters service
  std::string inference_token;             // "" = send no token to the Inference service
  // Deadline of each call, from its start. InfiniteDuration = none. Generate streams count as
  // one call, so long generations need a long timeout.
  absl::Duration timeout = absl::InfiniteDuration();
  // Largest reply accepted (Score with return_logits is [len, vocab] floats).
  int max_receive_message_bytes = 256 << 20;
  // Attempts per retryable call on UNAVAILABLE (1 = no retry); the waits between them start at
  // initial_backoff and double up to max_backoff, each with up to 25% random jitter.
  int max_attempts = 1;
  absl::Duration initial_backoff = absl::Milliseconds(200);
  absl::Duration max_backoff = absl::Seconds(5);
  // Distinct channel_id values force separate TCP connections to the same target (load tests).
  int channel_id = 0;
};

// Reads a token or certificate file; a token is the file content with surrounding whitespace
// trimmed. INVALID_ARGUMENT naming `what` (e.g. "--token_file") when missing, unreadable or empty.
absl::StatusOr<std::string> ReadSecretFile(const std::string& path, const std::string& what,
                                           bool trim);

// A whole Generate stream collected.
struct GenerateResult {
  std::vector<int32_t> token_ids;
  std::string text;             // the messages' text, concatenated (needs a tokenizer)
  std::vector<float> logprobs;  // one per token when the request asked for logprobs
  v1::FinishReason finish_reason = v1::FINISH_REASON_UNSPECIFIED;
  v1::Usage usage;
  std::string adapter_version;  // hex sha256; "" for the base model
};

// What to upload: the weights as bytes in memory or as a file path (exactly one of them).
struct UploadSpec {
  std::string name;
  v1::AdapterFormat format = v1::PEFT;
  std::string config_json;
  std::string weights;       // the bytes, when weights_path is ""
  std::string weights_path;  // a file, streamed from disk without holding it in memory
  // Called on the calling thread after each chunk is written: bytes sent so far of `total`.
  std::function<void(uint64_t sent, uint64_t total)> on_progress;
};

class LoramuxClient {
 public:
  // Creates the channel. Does not wait for the server (the first call connects); use
  // WaitForConnected to check reachability up front. INVALID_ARGUMENT for an empty target.
  static absl::StatusOr<std::unique_ptr<LoramuxClient>> Connect(const ClientOptions& options);

  // True once the channel is connected, false when `timeout` passes first.
  bool WaitForConnected(absl::Duration timeout);

  // grpc.health.v1.Health/Check of `service` ("" = the whole server): "SERVING", "NOT_SERVING"
  // (e.g. while draining), "UNKNOWN" or "SERVICE_UNKNOWN"; an error status when the call failed
  // (UNAVAILABLE: nothing answered; NOT_FOUND: no such service).
  absl::StatusOr<std::string> CheckHealth(const std::string& service = "");

  // --- Inference -------------------------------------------------------------------------------

  // Called for each streamed message, on the calling thread; return false to cancel the stream
  // (Generate then returns CANCELLED).
  using ResponseCallback = std::function<bool(const v1::GenerateResponse&)>;

  // Runs one Generate stream, calling `on_response` (may be empty) for each message, and returns
  // all tokens with the final message's finish reason, usage and adapter version. A stream that
  // fails UNAVAILABLE before any message reached `on_response` is retried (see max_attempts).
  absl::StatusOr<GenerateResult> Generate(const v1::GenerateRequest& request,
                                          const ResponseCallback& on_response = nullptr);

  absl::StatusOr<v1::ScoreResponse> Score(const v1::ScoreRequest& request);
  absl::StatusOr<v1::TokenizeResponse> Tokenize(const v1::TokenizeRequest& request);
  absl::StatusOr<v1::DetokenizeResponse> Detokenize(const v1::DetokenizeRequest& request);

  // --- Adapters --------------------------------------------------------------------------------

  // Streams a manifest (name, format, config, size, sha256 of the weights) and then the weights
  // in chunks of at most 1 MiB. Returns the stored adapter's info (its version is the sha256).
  absl::StatusOr<v1::AdapterInfo> UploadAdapter(const UploadSpec& spec);

  // Every adapter, following next_page_token until the end (page_size per call; 0 = server
  // default).
  absl::StatusOr<std::vector<v1::AdapterInfo>> ListAdapters(int page_size = 0);
  absl::StatusOr<v1::AdapterInfo> GetAdapter(const std::string& name);
  absl::Status DeleteAdapter(const std::string& name);
  absl::StatusOr<v1::AdapterInfo> LoadAdapter(const std::string& name, bool pin = false);
  absl::StatusOr<v1::AdapterInfo> UnloadAdapter(const std::string& name);

  const ClientOptions& options() const { return options_; }

  static constexpr size_t kChunkBytes = 1 << 20;

 private:
  LoramuxClient(ClientOptions options, std::shared_ptr<grpc::Channel> channel);
  // Sets the deadline, the bearer token (admin or inference) and, when `adapter` is not empty,
  // the affinity header on a fresh context.
  void Prepare(grpc::ClientContext& context, bool admin, const std::string& adapter = "") const;
  // Runs `call` (returning absl::Status or absl::StatusOr) until it does not fail UNAVAILABLE,
  // at most options_.max_attempts times, sleeping the backoff in between.
  template <typename Call>
  auto Retrying(const Call& call) const -> decltype(call());
  absl::StatusOr<GenerateResult> GenerateOnce(const v1::GenerateRequest& request,
                                              const ResponseCallback& on_response, bool* delivered);
  absl::StatusOr<v1::AdapterInfo> UploadOnce(const UploadSpec& spec,
                                             const v1::UploadRequest& manifest);

  const ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Inference::Stub> inference_;
  std::unique_ptr<v1::Adapters::Stub> adapters_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

// grpc::Status -> absl::Status with the same code and message.
absl::Status FromGrpcStatus(const grpc::Status& status);

// "PEFT" / "SEED", "STORED" / "HOST" / "DEVICE", "LENGTH" / "STOP" / "CANCELLED".
std::string FormatName(v1::AdapterFormat format);
std::string ResidencyName(v1::Residency residency);
std::string FinishReasonName(v1::FinishReason reason);

}  // namespace loramux
