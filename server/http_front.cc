#include "server/http_front.h"

#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "adapters/adapter_import.h"
#include "common/http_endpoint.h"
#include "common/json_value.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "server/openai_api.h"

namespace loramux {
namespace {

// JSON text; bytes that are not UTF-8 (a token's partial character) become U+FFFD.
std::string Dump(const Json& json) {
  return json.dump(-1, ' ', /*ensure_ascii=*/false, Json::error_handler_t::replace);
}

HttpResponse JsonResponse(int status, const Json& body) {
  HttpResponse response;
  response.status = status;
  response.content_type = "application/json";
  response.body = Dump(body);
  return response;
}

HttpResponse ErrorResponse(const absl::Status& status) {
  HttpResponse response = JsonResponse(HttpStatusFor(status.code()), ErrorBody(status));
  if (status.code() == absl::StatusCode::kResourceExhausted)
    response.headers.emplace_back("Retry-After", "1");
  return response;
}

std::string RandomId(const char* prefix) {
  thread_local std::mt19937_64 rng(std::random_device{}());
  return absl::StrFormat("%s%016x%08x", prefix, rng(), static_cast<uint32_t>(rng()));
}

std::string BaseName(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// What one generation produced since the last Take.
struct Progress {
  std::vector<int32_t> token_ids;
  std::vector<float> logprobs;
  std::vector<std::vector<std::pair<int32_t, float>>> top;  // per token, with top_logprobs
  std::string text;
  bool finished = false;
  absl::Status status;  // when finished
  FinishReason reason = FinishReason::kLength;
  Usage usage;
  std::string adapter_version;
  bool empty() const { return token_ids.empty() && text.empty() && !finished; }
};

// The scheduler's observer of one HTTP request: queues what arrives (never blocks the scheduler
// thread); the request's HTTP thread takes it.
class Generation final : public RequestObserver {
 public:
  void OnTokens(const std::vector<int32_t>& tokens, const std::vector<float>& logprobs,
                const std::string& text) override {
    absl::MutexLock lock(&mu_);
    if (!got_tokens_ && !tokens.empty()) first_token_at_ = absl::Now();
    got_tokens_ = got_tokens_ || !tokens.empty();
    pending_.token_ids.insert(pending_.token_ids.end(), tokens.begin(), tokens.end());
    pending_.logprobs.insert(pending_.logprobs.end(), logprobs.begin(), logprobs.end());
    pending_.text += text;
  }
  void OnTopLogprobs(const std::vector<std::pair<int32_t, float>>& top) override {
    absl::MutexLock lock(&mu_);
    pending_.top.push_back(top);
  }
  void OnFinish(const absl::Status& status, FinishReason reason, const Usage& usage,
                const std::string& adapter_version) override {
    absl::MutexLock lock(&mu_);
    pending_.finished = true;
    pending_.status = status;
    pending_.reason = reason;
    pending_.usage = usage;
    pending_.adapter_version = adapter_version;
  }

  // Waits up to `timeout` for news, and takes it (an empty Progress when none came).
  Progress Take(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(this, &Generation::HasNews), timeout);
    Progress taken = std::move(pending_);
    pending_ = Progress();
    done_ = done_ || taken.finished;
    return taken;
  }
  bool done() {
    absl::MutexLock lock(&mu_);
    return done_;
  }
  // When the first token came (InfinitePast before).
  absl::Time first_token_at() {
    absl::MutexLock lock(&mu_);
    return got_tokens_ ? first_token_at_ : absl::InfinitePast();
  }

 private:
  bool HasNews() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !pending_.empty(); }

  absl::Mutex mu_;
  Progress pending_ ABSL_GUARDED_BY(mu_);
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  bool got_tokens_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time first_token_at_ ABSL_GUARDED_BY(mu_);
};

constexpr absl::Duration kPoll = absl::Milliseconds(200);

}  // namespace

class HttpFront::Handlers {
 public:
  Handlers(Engine& engine, Metrics& metrics, TokenAuth inference_auth, TokenAuth admin_auth,
           const HttpFrontOptions& options, const std::atomic<bool>& serving)
      : engine_(engine),
        metrics_(metrics),
        inference_auth_(std::move(inference_auth)),
        admin_auth_(std::move(admin_auth)),
        options_(options),
        base_id_(options.served_model_name.empty() ? BaseName(options.model_dir)
                                                   : options.served_model_name),
        started_(absl::ToUnixSeconds(absl::Now())),
        serving_(serving) {}

  std::vector<HttpRoute> Routes() {
    auto bind = [this](HttpResponse (Handlers::*method)(const HttpRequest&)) {
      return [this, method](const HttpRequest& request) { return (this->*method)(request); };
    };
    return {
        {"GET", "/v1/models", bind(&Handlers::Models)},
        {"POST", "/v1/completions",
         [this](const HttpRequest& r) { return Complete(OpenAiEndpoint::kCompletions, r); }},
        {"POST", "/v1/chat/completions",
         [this](const HttpRequest& r) { return Complete(OpenAiEndpoint::kChatCompletions, r); }},
        {"POST", "/v1/load_lora_adapter", bind(&Handlers::LoadAdapter)},
        {"POST", "/v1/unload_lora_adapter", bind(&Handlers::UnloadAdapter)},
        {"GET", "/health", bind(&Handlers::Health)},
        {"GET", "/metrics", bind(&Handlers::MetricsPage)}};
  }

 private:
  HttpResponse Health(const HttpRequest&) {
    const bool serving = serving_.load();
    HttpResponse response;
    response.status = serving ? 200 : 503;
    response.body = serving ? "serving\n" : "draining\n";
    return response;
  }

  HttpResponse MetricsPage(const HttpRequest&) {
    HttpResponse response;
    response.content_type = "text/plain; version=0.0.4; charset=utf-8";
    response.body = metrics_.Render();
    return response;
  }

  HttpResponse Models(const HttpRequest& request) {
    if (absl::Status auth = inference_auth_.CheckHeader(request.Header("authorization"));
        !auth.ok()) {
      return ErrorResponse(auth);
    }
    std::vector<ServedModel> adapters;
    std::string token;
    do {
      absl::StatusOr<AdapterStore::Page> page = engine_.store().List(token, 1000);
      if (!page.ok()) return ErrorResponse(page.status());
      for (const StoredAdapter& a : page->adapters)
        adapters.push_back({a.name, absl::ToUnixSeconds(a.created)});
      token = page->next_page_token;
    } while (!token.empty());
    return JsonResponse(
        200, ModelList({base_id_, started_}, adapters, engine_.scheduler().max_context_tokens()));
  }

  // POST /v1/load_lora_adapter {"lora_name", "lora_path"}.
  HttpResponse LoadAdapter(const HttpRequest& request) {
    absl::StatusOr<std::pair<std::string, std::string>> named =
        AdapterBody(request, /*need_path=*/true);
    if (!named.ok()) return ErrorResponse(named.status());
    absl::StatusOr<StoredAdapter> stored = ImportPeftDirectory(
        engine_.store(), named->first, named->second, engine_.registry().Validator());
    if (!stored.ok()) return ErrorResponse(WithParam(stored.status(), "lora_path"));
    LogInfo("http: imported adapter %s@%s from %s", stored->name, stored->version, named->second);
    return JsonResponse(200, {{"object", "lora_adapter"},
                              {"id", stored->name},
                              {"version", stored->version},
                              {"message", absl::StrCat("adapter ", stored->name,
                                                       " is served as model ", stored->name)}});
  }

  // POST /v1/unload_lora_adapter {"lora_name"}.
  HttpResponse UnloadAdapter(const HttpRequest& request) {
    absl::StatusOr<std::pair<std::string, std::string>> named =
        AdapterBody(request, /*need_path=*/false);
    if (!named.ok()) return ErrorResponse(named.status());
    if (absl::Status deleted = engine_.registry().Delete(named->first); !deleted.ok()) {
      return ErrorResponse(WithParam(deleted, "lora_name"));
    }
    return JsonResponse(200, {{"object", "lora_adapter"}, {"id", named->first}, {"deleted", true}});
  }

  // The admin check and {"lora_name", "lora_path"} of the adapter routes.
  absl::StatusOr<std::pair<std::string, std::string>> AdapterBody(const HttpRequest& request,
                                                                  bool need_path) {
    RETURN_IF_ERROR(admin_auth_.CheckHeader(request.Header("authorization")));
    ASSIGN_OR_RETURN(const Json doc,
                     JsonValue::ParseObject(request.body, "request body", request.body.size()));
    const JsonValue root(doc, "request body");
    for (const auto& item : doc.items()) {
      if (item.key() != "lora_name" && item.key() != "lora_path" && item.key() != "load_inplace") {
        return WithParam(absl::InvalidArgumentError(
                             absl::StrCat("\"", item.key(), "\": unrecognized request argument")),
                         item.key());
      }
    }
    absl::StatusOr<std::string> name = root["lora_name"].String();
    if (!name.ok()) return WithParam(name.status(), "lora_name");
    if (!need_path) return std::make_pair(*name, std::string());
    absl::StatusOr<std::string> path = root["lora_path"].String();
    if (!path.ok()) return WithParam(path.status(), "lora_path");
    return std::make_pair(*name, *path);
  }

  // The adapter reference `model` names: "" for the base.
  absl::StatusOr<std::string> AdapterOf(const std::string& model) const {
    if (model == base_id_) return std::string();
    const std::string name = model.substr(0, model.find('@'));
    if (!ValidateAdapterName(name).ok()) {
      return WithParam(absl::NotFoundError(absl::StrCat("the model `", model,
                                                        "` does not exist; GET /v1/models lists "
                                                        "the base model and its adapters")),
                       "model");
    }
    return model;
  }

  // Encodes and submits; returns the request id, with `generation` observing it, and the version
  // of the adapter `model` names now (for system_fingerprint; "" for the base).
  absl::StatusOr<uint64_t> Submit(OpenAiRequest& request,
                                  const std::shared_ptr<Generation>& generation,
                                  std::string& version) {
    ASSIGN_OR_RETURN(request.engine.adapter, AdapterOf(request.model));
    if (!request.engine.adapter.empty()) {
      absl::StatusOr<StoredAdapter> stored = engine_.registry().Resolve(request.engine.adapter);
      if (!stored.ok()) return WithParam(stored.status(), "model");
      version = stored->version;
    }
    if (request.text_prompt) {
      absl::StatusOr<EncodedPrompt> encoded = engine_.text().Encode(*request.text_prompt);
      if (!encoded.ok()) {
        return WithParam(encoded.status(), request.endpoint == OpenAiEndpoint::kChatCompletions
                                               ? "messages"
                                               : "prompt");
      }
      request.prompt_token_ids = std::move(encoded->token_ids);
    }
    request.engine.tokens = request.prompt_token_ids;
    if (request.max_tokens_given &&
        request.engine.sampling.max_new_tokens > options_.max_tokens_limit) {
      return WithParam(absl::InvalidArgumentError(
                           absl::StrCat("max_tokens is ", request.engine.sampling.max_new_tokens,
                                        "; this server's limit is ", options_.max_tokens_limit)),
                       "max_tokens");
    }
    if (!request.max_tokens_given) {
      request.engine.sampling.max_new_tokens = DefaultMaxTokens(
          request, options_.default_max_tokens, engine_.scheduler().max_context_tokens(),
          static_cast<int64_t>(request.prompt_token_ids.size()), options_.max_tokens_limit);
    }
    absl::StatusOr<uint64_t> id = engine_.scheduler().Submit(request.engine, generation);
    if (absl::IsNotFound(id.status())) return WithParam(id.status(), "model");
    return id;
  }

  // A token's text for logprobs ("token_id:N" without a tokenizer, as vLLM writes it).
  std::string TokenText(int32_t id) const {
    if (!engine_.text().has_tokenizer()) return absl::StrCat("token_id:", id);
    absl::StatusOr<std::string> text =
        engine_.text().Decode({&id, 1}, /*skip_special_tokens=*/false);
    return text.ok() ? *text : absl::StrCat("token_id:", id);
  }

  // Token texts and logprobs of what a generation produced.
  CompletionPiece ToPiece(const OpenAiRequest& request, Progress& progress) const {
    CompletionPiece piece;
    piece.text = std::move(progress.text);
    piece.token_ids = progress.token_ids;
    if (!request.logprobs) return piece;
    for (size_t i = 0; i < progress.token_ids.size() && i < progress.logprobs.size(); ++i) {
      TokenLogprob t{TokenText(progress.token_ids[i]), progress.logprobs[i], {}};
      if (i < progress.top.size()) {
        for (const auto& [id, logprob] : progress.top[i])
          t.top.emplace_back(TokenText(id), logprob);
      }
      piece.logprobs.push_back(std::move(t));
    }
    return piece;
  }

  HttpResponse Complete(OpenAiEndpoint endpoint, const HttpRequest& http) {
    const absl::Time start = absl::Now();
    const Rpc rpc = endpoint == OpenAiEndpoint::kChatCompletions ? Rpc::kOpenAiChatCompletions
                                                                 : Rpc::kOpenAiCompletions;
    auto fail = [&](const absl::Status& status) {
      metrics_.RecordRpc(rpc, static_cast<grpc::StatusCode>(status.code()), absl::Now() - start);
      return ErrorResponse(status);
    };
    if (absl::Status auth = inference_auth_.CheckHeader(http.Header("authorization")); !auth.ok())
      return fail(auth);
    absl::StatusOr<OpenAiRequest> request = ParseOpenAiRequest(endpoint, http.body);
    if (!request.ok()) return fail(request.status());
    auto generation = std::make_shared<Generation>();
    std::string version;
    absl::StatusOr<uint64_t> id = Submit(*request, generation, version);
    if (!id.ok()) return fail(id.status());

    // The status line waits for the first news, so an adapter that fails to load is a real error
    // status, not a broken stream.
    Progress first = generation->Take(kPoll);
    while (first.empty()) first = generation->Take(kPoll);
    if (first.finished && !first.status.ok()) return fail(first.status);
    ResponseHeader header{
        RandomId(endpoint == OpenAiEndpoint::kChatCompletions ? "chatcmpl-" : "cmpl-"),
        absl::ToUnixSeconds(absl::Now()), request->model, version};
    if (!request->stream) return Whole(*request, header, std::move(first), *generation, rpc, start);
    HttpResponse response;
    response.content_type = "text/event-stream";
    response.headers.emplace_back("Cache-Control", "no-cache");
    response.headers.emplace_back("X-Accel-Buffering", "no");  // nginx: pass events through at once
    response.stream = [this, request = *std::move(request), header, first = std::move(first),
                       generation, id = *id, rpc, start](const HttpWrite& write) mutable {
      Stream(request, header, std::move(first), *generation, id, rpc, start, write);
    };
    return response;
  }

  // The non-streaming reply: waits for the end.
  HttpResponse Whole(const OpenAiRequest& request, ResponseHeader header, Progress progress,
                     Generation& generation, Rpc rpc, absl::Time start) {
    CompletionPiece output = ToPiece(request, progress);
    while (!progress.finished) {
      progress = generation.Take(kPoll);
      output.Append(ToPiece(request, progress));
    }
    RecordGenerated(rpc, progress, generation, start);
    if (!progress.status.ok()) return ErrorResponse(progress.status);
    if (progress.reason == FinishReason::kCancelled)
      return ErrorResponse(absl::CancelledError("the request was cancelled"));
    header.system_fingerprint = progress.adapter_version;
    return JsonResponse(200, CompletionResponse(request, header, request.prompt_token_ids, output,
                                                progress.reason, progress.usage));
  }

  // Server-Sent Events until the end, or until a write fails (the client left): then the
  // sequence is cancelled at once.
  void Stream(const OpenAiRequest& request, const ResponseHeader& header, Progress progress,
              Generation& generation, uint64_t id, Rpc rpc, absl::Time start,
              const HttpWrite& write) {
    auto send = [&](const Json& event) {
      return write(absl::StrCat("data: ", Dump(event), "\n\n"));
    };
    bool open = request.endpoint != OpenAiEndpoint::kChatCompletions ||
                send(FirstChatChunk(request, header));
    while (open) {
      const bool has_output = !progress.token_ids.empty() || !progress.text.empty();
      if (progress.finished && progress.status.ok() &&
          progress.reason != FinishReason::kCancelled) {
        open = send(ChoiceChunk(request, header, ToPiece(request, progress), progress.reason)) &&
               (!request.include_usage || send(UsageChunk(request, header, progress.usage))) &&
               write("data: [DONE]\n\n");
        break;
      }
      if (has_output)
        open = send(ChoiceChunk(request, header, ToPiece(request, progress), std::nullopt));
      if (progress
              .finished) {  // an engine error after the first token: an error event ends the stream
        const absl::Status status = progress.status.ok()
                                        ? absl::CancelledError("the request was cancelled")
                                        : progress.status;
        if (open) send(ErrorBody(status));
        break;
      }
      if (open) progress = generation.Take(kPoll);
    }
    if (!open && !generation.done()) {
      engine_.scheduler().Cancel(id);
      while (!progress.finished)
        progress = generation.Take(kPoll);  // the scheduler lets go within a step
    }
    RecordGenerated(rpc, progress, generation, start);
  }

  void RecordGenerated(Rpc rpc, const Progress& last, Generation& generation, absl::Time start) {
    const absl::Status status = last.status.ok() && last.reason == FinishReason::kCancelled
                                    ? absl::CancelledError("cancelled")
                                    : last.status;
    metrics_.RecordRpc(rpc, static_cast<grpc::StatusCode>(status.code()), absl::Now() - start);
    if (generation.first_token_at() != absl::InfinitePast()) {
      metrics_.RecordTimeToFirstToken(generation.first_token_at() - start);
    }
    metrics_.AddGeneratedTokens(last.usage.generated_tokens);
    if (status.ok()) metrics_.AddPromptTokens(last.usage.prompt_tokens);
  }

  Engine& engine_;
  Metrics& metrics_;
  const TokenAuth inference_auth_;
  const TokenAuth admin_auth_;
  const HttpFrontOptions options_;
  const std::string base_id_;
  const int64_t started_;
  const std::atomic<bool>& serving_;
};

absl::StatusOr<std::unique_ptr<HttpFront>> HttpFront::Start(Engine& engine, Metrics& metrics,
                                                            TokenAuth inference_auth,
                                                            TokenAuth admin_auth,
                                                            HttpFrontOptions options) {
  auto front = std::unique_ptr<HttpFront>(new HttpFront());
  front->handlers_ = std::make_unique<Handlers>(engine, metrics, std::move(inference_auth),
                                                std::move(admin_auth), options, front->serving_);
  HttpEndpointOptions endpoint;
  endpoint.threads = options.threads;
  endpoint.read_timeout = options.read_timeout;
  endpoint.write_timeout = options.write_timeout;
  endpoint.max_body_bytes = options.max_body_bytes;
  // Clients (SDKs, load balancers) keep their connections: recycling one every 100 requests made
  // all of them reconnect at once, past the listen backlog (SYN retried after 1 s).
  endpoint.keep_alive_max_requests = 1 << 20;
  endpoint.tls_cert_pem = options.tls_cert_pem;
  endpoint.tls_key_pem = options.tls_key_pem;
  ASSIGN_OR_RETURN(front->endpoint_, HttpEndpoint::Listen(options.listen, "--http_listen",
                                                          front->handlers_->Routes(), endpoint));
  return front;
}

HttpFront::~HttpFront() = default;

const std::string& HttpFront::address() const { return endpoint_->address(); }

}  // namespace loramux
