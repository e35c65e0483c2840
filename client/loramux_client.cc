#include "client/loramux_client.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <random>
#include <sstream>
#include <utility>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/sha256.h"

namespace loramux {
namespace {

// Reads a whole file; NOT_FOUND / INVALID_ARGUMENT naming the path.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot open \"", path, "\"; check the path"));
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("error reading \"", path, "\""));
  return buffer.str();
}

// Size and hex sha256 of a file, read once in chunks.
absl::Status HashFile(const std::string& path, uint64_t* size, std::string* sha256) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("cannot open weights file \"", path, "\"; check the path"));
  }
  Sha256 hasher;
  std::string buffer(LoramuxClient::kChunkBytes, '\0');
  *size = 0;
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    const std::streamsize n = in.gcount();
    if (n <= 0) break;
    hasher.Update(std::string_view(buffer.data(), static_cast<size_t>(n)));
    *size += static_cast<uint64_t>(n);
  }
  if (in.bad()) return absl::DataLossError(absl::StrCat("error reading \"", path, "\""));
  *sha256 = hasher.HexDigest();
  return absl::OkStatus();
}

}  // namespace

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  const int code = static_cast<int>(status.error_code());
  const absl::StatusCode absl_code =
      (code > 0 && code <= 16) ? static_cast<absl::StatusCode>(code) : absl::StatusCode::kUnknown;
  return absl::Status(absl_code, status.error_message());
}

std::string FormatName(v1::AdapterFormat format) {
  return format == v1::SEED ? "SEED" : format == v1::PEFT ? "PEFT" : absl::StrCat(format);
}

std::string ResidencyName(v1::Residency residency) {
  switch (residency) {
    case v1::STORED: return "STORED";
    case v1::HOST: return "HOST";
    case v1::DEVICE: return "DEVICE";
    default: return absl::StrCat(static_cast<int>(residency));
  }
}

std::string FinishReasonName(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_LENGTH: return "LENGTH";
    case v1::FINISH_REASON_STOP: return "STOP";
    case v1::FINISH_REASON_CANCELLED: return "CANCELLED";
    default: return "UNSPECIFIED";
  }
}

absl::StatusOr<std::string> ReadSecretFile(const std::string& path, const std::string& what,
                                           bool trim) {
  absl::StatusOr<std::string> content = ReadWholeFile(path);
  if (!content.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, "=", path, ": ", content.status().message()));
  }
  std::string value = *std::move(content);
  if (trim) value = std::string(absl::StripAsciiWhitespace(value));
  if (value.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, "=", path, ": the file is empty"));
  }
  return value;
}

absl::StatusOr<std::unique_ptr<LoramuxClient>> LoramuxClient::Connect(
    const ClientOptions& options) {
  if (options.target.empty()) {
    return absl::InvalidArgumentError("the server address is empty; give host:port");
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (options.tls || !options.tls_root_cert_pem.empty()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options.tls_root_cert_pem;
    credentials = grpc::SslCredentials(ssl);
  } else {
    credentials = grpc::InsecureChannelCredentials();
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  if (!options.tls_server_name.empty()) args.SetSslTargetNameOverride(options.tls_server_name);
  if (options.channel_id != 0) {
    // A private subchannel pool gives this channel its own connection.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt("loramux.channel_id", options.channel_id);
  }
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(options.target, credentials, args);
  if (channel == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot create a channel to \"", options.target, "\""));
  }
  return std::unique_ptr<LoramuxClient>(new LoramuxClient(options, std::move(channel)));
}

LoramuxClient::LoramuxClient(ClientOptions options, std::shared_ptr<grpc::Channel> channel)
    : options_(std::move(options)),
      channel_(std::move(channel)),
      inference_(v1::Inference::NewStub(channel_)),
      adapters_(v1::Adapters::NewStub(channel_)),
      health_(grpc::health::v1::Health::NewStub(channel_)) {}

bool LoramuxClient::WaitForConnected(absl::Duration timeout) {
  return channel_->WaitForConnected(std::chrono::system_clock::now() +
                                    absl::ToChronoMilliseconds(timeout));
}

// The adapter name (without @version) as metadata, so a load balancer can route each adapter to
// the replica that has it resident (deploy/nginx.conf hashes on it).
constexpr char kAdapterHeader[] = "x-loramux-adapter";

void LoramuxClient::Prepare(grpc::ClientContext& context, bool admin,
                            const std::string& adapter) const {
  if (options_.timeout != absl::InfiniteDuration()) {
    context.set_deadline(std::chrono::system_clock::now() +
                         absl::ToChronoMilliseconds(options_.timeout));
  }
  const std::string& token = admin ? options_.admin_token : options_.inference_token;
  if (!token.empty()) context.AddMetadata("authorization", absl::StrCat("Bearer ", token));
  if (!adapter.empty()) context.AddMetadata(kAdapterHeader, adapter.substr(0, adapter.find('@')));
}

namespace {
// UNAVAILABLE, or a stream reset on the way: a proxy (nginx) that lost its backend mid-call
// resets the HTTP/2 stream, which gRPC reports as INTERNAL "Received RST_STREAM ..."; no server
// gave a verdict on the call.
bool IsRetryable(const absl::Status& status) {
  return status.code() == absl::StatusCode::kUnavailable ||
         (status.code() == absl::StatusCode::kInternal &&
          absl::StartsWith(status.message(), "Received RST_STREAM"));
}

template <typename T>
const absl::Status& StatusOf(const absl::StatusOr<T>& result) {
  return result.status();
}
}  // namespace

template <typename Call>
auto LoramuxClient::Retrying(const Call& call) const -> decltype(call()) {
  absl::Duration backoff = options_.initial_backoff;
  for (int attempt = 1;; ++attempt) {
    auto result = call();
    if (!IsRetryable(StatusOf(result)) || attempt >= options_.max_attempts) {
      return result;
    }
    // Up to 25% jitter, so clients that failed together do not come back together.
    static thread_local std::mt19937 random(std::random_device{}());
    std::uniform_real_distribution<double> jitter(1.0, 1.25);
    absl::SleepFor(backoff * jitter(random));
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
}

absl::StatusOr<std::string> LoramuxClient::CheckHealth(const std::string& service) {
  return Retrying([&]() -> absl::StatusOr<std::string> {
    grpc::ClientContext context;
    Prepare(context, /*admin=*/false);
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    const grpc::Status status = health_->Check(&context, request, &response);
    if (!status.ok()) return FromGrpcStatus(status);
    return grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status());
  });
}

absl::StatusOr<GenerateResult> LoramuxClient::Generate(const v1::GenerateRequest& request,
                                                       const ResponseCallback& on_response) {
  bool delivered = false;
  return Retrying([&]() -> absl::StatusOr<GenerateResult> {
    absl::StatusOr<GenerateResult> result = GenerateOnce(request, on_response, &delivered);
    // Tokens already handed to the caller cannot be taken back: no retry after the first one.
    if (!result.ok() && delivered && IsRetryable(result.status())) {
      return absl::Status(result.status().code(),
                          absl::StrCat(result.status().message(),
                                       " (not retried: the stream had already produced output)"));
    }
    return result;
  });
}

absl::StatusOr<GenerateResult> LoramuxClient::GenerateOnce(const v1::GenerateRequest& request,
                                                           const ResponseCallback& on_response,
                                                           bool* delivered) {
  grpc::ClientContext context;
  Prepare(context, /*admin=*/false, request.adapter());
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
      inference_->Generate(&context, request);
  GenerateResult result;
  v1::GenerateResponse response;
  bool cancelled = false;
  while (reader->Read(&response)) {
    result.token_ids.insert(result.token_ids.end(), response.token_ids().begin(),
                            response.token_ids().end());
    result.text += response.text();
    result.logprobs.insert(result.logprobs.end(), response.logprobs().begin(),
                           response.logprobs().end());
    if (response.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
      result.finish_reason = response.finish_reason();
      result.usage = response.usage();
    }
    if (!response.adapter_version().empty()) result.adapter_version = response.adapter_version();
    if (on_response) {
      *delivered = true;
      if (!on_response(response)) {
        context.TryCancel();
        cancelled = true;
        break;
      }
    }
  }
  const grpc::Status status = reader->Finish();
  if (cancelled) return absl::CancelledError("the stream was cancelled by the caller");
  if (!status.ok()) return FromGrpcStatus(status);
  return result;
}

absl::StatusOr<v1::ScoreResponse> LoramuxClient::Score(const v1::ScoreRequest& request) {
  return Retrying([&]() -> absl::StatusOr<v1::ScoreResponse> {
    grpc::ClientContext context;
    Prepare(context, /*admin=*/false, request.adapter());
    v1::ScoreResponse response;
    const grpc::Status status = inference_->Score(&context, request, &response);
    if (!status.ok()) return FromGrpcStatus(status);
    return response;
  });
}

absl::StatusOr<v1::TokenizeResponse> LoramuxClient::Tokenize(const v1::TokenizeRequest& request) {
  return Retrying([&]() -> absl::StatusOr<v1::TokenizeResponse> {
    grpc::ClientContext context;
    Prepare(context, /*admin=*/false);
    v1::TokenizeResponse response;
    const grpc::Status status = inference_->Tokenize(&context, request, &response);
    if (!status.ok()) return FromGrpcStatus(status);
    return response;
  });
}

absl::StatusOr<v1::DetokenizeResponse> LoramuxClient::Detokenize(
    const v1::DetokenizeRequest& request) {
  return Retrying([&]() -> absl::StatusOr<v1::DetokenizeResponse> {
    grpc::ClientContext context;
    Prepare(context, /*admin=*/false);
    v1::DetokenizeResponse response;
    const grpc::Status status = inference_->Detokenize(&context, request, &response);
    if (!status.ok()) return FromGrpcStatus(status);
    return response;
  });
}

absl::StatusOr<v1::AdapterInfo> LoramuxClient::UploadAdapter(const UploadSpec& spec) {
  const bool from_file = !spec.weights_path.empty();
  if (from_file && !spec.weights.empty()) {
    return absl::InvalidArgumentError(
        "UploadSpec has both weights bytes and a weights_path; set exactly one");
  }
  v1::UploadRequest manifest_message;
  v1::UploadManifest* manifest = manifest_message.mutable_manifest();
  manifest->set_name(spec.name);
  manifest->set_format(spec.format);
  manifest->set_config_json(spec.config_json);
  if (from_file) {
    uint64_t size = 0;
    std::string sha256;
    if (absl::Status s = HashFile(spec.weights_path, &size, &sha256); !s.ok()) return s;
    manifest->set_size_bytes(size);
    manifest->set_sha256(sha256);
  } else {
    manifest->set_size_bytes(spec.weights.size());
    manifest->set_sha256(Sha256Hex(spec.weights));
  }
  return Retrying([&]() { return UploadOnce(spec, manifest_message); });
}

absl::StatusOr<v1::AdapterInfo> LoramuxClient::UploadOnce(const UploadSpec& spec,
                                                          const v1::UploadRequest& manifest) {
  const bool from_file = !spec.weights_path.empty();
  const uint64_t total = manifest.manifest().size_bytes();
  uint64_t sent = 0;
  grpc::ClientContext context;
  Prepare(context, /*admin=*/true, spec.name);
  v1::AdapterInfo info;
  std::unique_ptr<grpc::ClientWriter<v1::UploadRequest>> writer =
      adapters_->Upload(&context, &info);
  // A failed Write means the server ended the call early; Finish() then says why.
  bool open = writer->Write(manifest);
  v1::UploadRequest chunk;
  auto send = [&](const char* data, size_t n) {
    chunk.set_chunk(data, n);
    open = writer->Write(chunk);
    sent += n;
    if (open && spec.on_progress) spec.on_progress(sent, total);
  };
  absl::Status local = absl::OkStatus();
  if (from_file) {
    std::ifstream in(spec.weights_path, std::ios::binary);
    if (!in) {
      local =
          absl::NotFoundError(absl::StrCat("cannot open weights file \"", spec.weights_path, "\""));
    }
    std::string buffer(kChunkBytes, '\0');
    while (open && local.ok() && in) {
      in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
      const std::streamsize n = in.gcount();
      if (n <= 0) break;
      send(buffer.data(), static_cast<size_t>(n));
    }
    if (local.ok() && in.bad()) {
      local = absl::DataLossError(absl::StrCat("error reading \"", spec.weights_path, "\""));
    }
  } else {
    for (size_t at = 0; open && at < spec.weights.size(); at += kChunkBytes) {
      send(spec.weights.data() + at, std::min(kChunkBytes, spec.weights.size() - at));
    }
  }
  if (!local.ok()) {
    // Do not commit a partial upload: cancel instead of half-closing.
    context.TryCancel();
    writer->Finish();
    return local;
  }
  if (open) writer->WritesDone();
  const grpc::Status status = writer->Finish();
  if (!status.ok()) return FromGrpcStatus(status);
  return info;
}

absl::StatusOr<std::vector<v1::AdapterInfo>> LoramuxClient::ListAdapters(int page_size) {
  return Retrying([&]() -> absl::StatusOr<std::vector<v1::AdapterInfo>> {
    std::vector<v1::AdapterInfo> all;
    std::string token;
    // Bounded: a server that kept returning the same token must not loop us forever.
    for (int page = 0; page < 1000000; ++page) {
      grpc::ClientContext context;
      Prepare(context, /*admin=*/true);
      v1::ListAdaptersRequest request;
      request.set_page_size(page_size);
      request.set_page_token(token);
      v1::ListAdaptersResponse response;
      const grpc::Status status = adapters_->List(&context, request, &response);
      if (!status.ok()) return FromGrpcStatus(status);
      for (v1::AdapterInfo& info : *response.mutable_adapters()) all.push_back(std::move(info));
      if (response.next_page_token().empty() || response.next_page_token() == token) break;
      token = response.next_page_token();
    }
    return all;
  });
}

absl::StatusOr<v1::AdapterInfo> LoramuxClient::GetAdapter(const std::string& name) {
  return Retrying([&]() -> absl::StatusOr<v1::AdapterInfo> {
    grpc::ClientContext context;
    Prepare(context, /*admin=*/true, name);
    v1::GetAdapterRequest request;
    request.set_name(name);
    v1::AdapterInfo info;
    const grpc::Status status = adapters_->Get(&context, request, &info);
    if (!status.ok()) return FromGrpcStatus(status);
    return info;
  });
}

absl::Status LoramuxClient::DeleteAdapter(const std::string& name) {
  // Not retried: a delete that took effect before the connection broke would come back
  // NOT_FOUND the second time.
  grpc::ClientContext context;
  Prepare(context, /*admin=*/true, name);
  v1::DeleteAdapterRequest request;
  request.set_name(name);
  v1::DeleteAdapterResponse response;
  return FromGrpcStatus(adapters_->Delete(&context, request, &response));
}

absl::StatusOr<v1::AdapterInfo> LoramuxClient::LoadAdapter(const std::string& name, bool pin) {
  return Retrying([&]() -> absl::StatusOr<v1::AdapterInfo> {
    grpc::ClientContext context;
    Prepare(context, /*admin=*/true, name);
    v1::LoadAdapterRequest request;
    request.set_name(name);
    request.set_pin(pin);
    v1::AdapterInfo info;
    const grpc::Status status = adapters_->Load(&context, request, &info);
    if (!status.ok()) return FromGrpcStatus(status);
    return info;
  });
}

absl::StatusOr<v1::AdapterInfo> LoramuxClient::UnloadAdapter(const std::string& name) {
  return Retrying([&]() -> absl::StatusOr<v1::AdapterInfo> {
    grpc::ClientContext context;
    Prepare(context, /*admin=*/true, name);
    v1::UnloadAdapterRequest request;
    request.set_name(name);
    v1::AdapterInfo info;
    const grpc::Status status = adapters_->Unload(&context, request, &info);
    if (!status.ok()) return FromGrpcStatus(status);
    return info;
  });
}

}  // namespace loramux
