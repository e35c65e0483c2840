#include "server/inference_service.h"

#include <chrono>
#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "engine/request.h"
#include "server/status_mapping.h"
#include "server/unary_call.h"

namespace loramux {
namespace {

using Deps = InferenceService::Deps;

absl::Time DeadlineOf(const grpc::CallbackServerContext& context) {
  const auto deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(deadline);
}

// proto3 cannot tell an unset adapter_scale from 0: 0 means 1.
double AdapterScale(float scale) { return scale == 0.0f ? 1.0 : static_cast<double>(scale); }

// Copies the fields; the scheduler's validator (request_validator.h) fills defaults and checks
// them.
SamplingParams ToSampling(const v1::SamplingParams& in) {
  SamplingParams out;
  out.max_new_tokens = in.max_new_tokens();
  out.temperature = in.temperature();
  out.top_k = in.top_k();
  out.top_p = in.top_p();
  out.seed = in.seed();
  out.has_seed = in.has_seed() || in.seed() != 0;
  return out;
}

// A conversation from the API's two spellings: ChatMessage list or an OpenAI-style JSON array.
absl::StatusOr<nlohmann::ordered_json> ToMessages(
    const google::protobuf::RepeatedPtrField<v1::ChatMessage>& messages,
    const std::string& messages_json) {
  if (!messages_json.empty()) {
    ASSIGN_OR_RETURN(nlohmann::ordered_json parsed,
                     ParseClientJson(messages_json, "messages_json", nlohmann::ordered_json()));
    if (!parsed.is_array())
      return absl::InvalidArgumentError("messages_json must be a JSON array of messages");
    return parsed;
  }
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (const v1::ChatMessage& m : messages)
    out.push_back({{"role", m.role()}, {"content", m.content()}});
  return out;
}

// The prompt given as text or a conversation (never both, nor with token ids).
struct PromptFields {
  bool has_token_ids;
  const std::string& text;
  const google::protobuf::RepeatedPtrField<v1::ChatMessage>& messages;
  const std::string& messages_json;
  const std::string& kwargs_json;
};

// Text and conversations become token ids here; token ids pass through. INVALID_ARGUMENT unless
// exactly one of the prompt fields is given.
absl::StatusOr<std::optional<EncodedPrompt>> EncodeIfText(const PromptFields& f,
                                                          bool add_special_tokens,
                                                          bool add_generation_prompt,
                                                          const TextCodec& codec) {
  const int given = int{f.has_token_ids} + int{!f.text.empty()} + int{!f.messages.empty()} +
                    int{!f.messages_json.empty()};
  if (given != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "give exactly one of token ids, text, messages and messages_json (got ", given, ")"));
  }
  if (!f.kwargs_json.empty() && f.messages.empty() && f.messages_json.empty()) {
    return absl::InvalidArgumentError("chat_template_kwargs_json applies to a conversation only");
  }
  if (f.has_token_ids) return std::optional<EncodedPrompt>();
  PromptInput input;
  input.add_special_tokens = add_special_tokens;
  input.add_generation_prompt = add_generation_prompt;
  if (!f.text.empty()) {
    input.text = f.text;
  } else {
    ASSIGN_OR_RETURN(input.messages, ToMessages(f.messages, f.messages_json));
    ASSIGN_OR_RETURN(input.chat_template_kwargs,
                     ParseClientJson(f.kwargs_json, "chat_template_kwargs_json",
                                     nlohmann::ordered_json::object()));
    if (!input.chat_template_kwargs.is_object()) {
      return absl::InvalidArgumentError("chat_template_kwargs_json must be a JSON object");
    }
  }
  ASSIGN_OR_RETURN(EncodedPrompt encoded, codec.Encode(input));
  return std::optional<EncodedPrompt>(std::move(encoded));
}

absl::StatusOr<InferenceRequest> ToInferenceRequest(const v1::GenerateRequest& in,
                                                    absl::Time deadline, const TextCodec& codec) {
  InferenceRequest out;
  out.kind = InferenceRequest::Kind::kGenerate;
  out.adapter = in.adapter();
  out.adapter_scale = AdapterScale(in.adapter_scale());
  ASSIGN_OR_RETURN(
      std::optional<EncodedPrompt> encoded,
      EncodeIfText({in.prompt_token_ids_size() > 0, in.prompt_text(), in.messages(),
                    in.messages_json(), in.chat_template_kwargs_json()},
                   /*add_special_tokens=*/true, /*add_generation_prompt=*/true, codec));
  if (encoded) {
    out.tokens = std::move(encoded->token_ids);
  } else {
    out.tokens.assign(in.prompt_token_ids().begin(), in.prompt_token_ids().end());
  }
  out.sampling = ToSampling(in.sampling());
  out.stop_token_ids.assign(in.stop_token_ids().begin(), in.stop_token_ids().end());
  out.stop.assign(in.stop().begin(), in.stop().end());
  out.logprobs = in.logprobs();
  out.deadline = deadline;
  return out;
}

absl::StatusOr<InferenceRequest> ToInferenceRequest(const v1::ScoreRequest& in, absl::Time deadline,
                                                    const TextCodec& codec) {
  InferenceRequest out;
  out.kind = InferenceRequest::Kind::kScore;
  out.adapter = in.adapter();
  out.adapter_scale = AdapterScale(in.adapter_scale());
  static const google::protobuf::RepeatedPtrField<v1::ChatMessage> kNoMessages;
  static const std::string kNone;
  ASSIGN_OR_RETURN(
      std::optional<EncodedPrompt> encoded,
      EncodeIfText({in.token_ids_size() > 0, in.prompt_text(), kNoMessages, kNone, kNone},
                   /*add_special_tokens=*/true, /*add_generation_prompt=*/false, codec));
  if (encoded) {
    out.tokens = std::move(encoded->token_ids);
  } else {
    out.tokens.assign(in.token_ids().begin(), in.token_ids().end());
  }
  out.return_logits = in.return_logits();
  out.deadline = deadline;
  return out;
}

v1::FinishReason ToProto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kLength: return v1::FINISH_REASON_LENGTH;
    case FinishReason::kStop: return v1::FINISH_REASON_STOP;
    case FinishReason::kCancelled: return v1::FINISH_REASON_CANCELLED;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

grpc::Status CancelledStatus() {
  return ToGrpcStatus(absl::CancelledError("the request was cancelled"));
}

// ---------------------------------------------------------------------------------------------
// Generate
// ---------------------------------------------------------------------------------------------

class GenerateCall;

// The part of a Generate call the scheduler holds (as its observer). It outlives the reactor when
// the scheduler still has it; the reactor pointer is dropped once Finish has been called.
class GenerateStream final : public RequestObserver {
 public:
  GenerateStream(const Deps& deps, GenerateCall* call)
      : scheduler_(deps.scheduler), metrics_(deps.metrics), call_(call), start_(absl::Now()) {}

  // Called once, from the reactor's constructor, with the outcome of Submit.
  void Submitted(const absl::StatusOr<uint64_t>& id);
  // Ends a call that was never submitted (bad input, auth).
  void FinishEarly(const absl::Status& status);

  // RequestObserver (scheduler thread).
  void OnTokens(const std::vector<int32_t>& tokens, const std::vector<float>& logprobs,
                const std::string& text) override;
  void OnFinish(const absl::Status& status, FinishReason reason, const Usage& usage,
                const std::string& adapter_version) override;

  // Reactor events.
  void WriteDone(bool ok);
  void Cancelled();
  void Done();

 private:
  // What to do once the lock is released.
  struct Action {
    enum Kind { kNone, kWrite, kFinish } kind = kNone;
    GenerateCall* call = nullptr;
    grpc::Status status;
  };
  Action NextActionLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RecordTokensLocked(size_t count, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Run(const Action& action);
  void CancelInScheduler(uint64_t id) { scheduler_.Cancel(id); }

  Scheduler& scheduler_;
  Metrics& metrics_;

  absl::Mutex mu_;
  GenerateCall* call_ ABSL_GUARDED_BY(mu_);
  const absl::Time start_;
  absl::Time last_tokens_at_ ABSL_GUARDED_BY(mu_);
  bool got_tokens_ ABSL_GUARDED_BY(mu_) = false;
  bool submitted_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t id_ ABSL_GUARDED_BY(mu_) = 0;
  bool cancel_requested_ ABSL_GUARDED_BY(mu_) = false;  // OnCancel before Submit returned
  v1::GenerateResponse pending_ ABSL_GUARDED_BY(mu_);   // next message, built up
  bool has_pending_ ABSL_GUARDED_BY(mu_) = false;
  v1::GenerateResponse in_flight_;  // owned by gRPC between StartWrite and OnWriteDone
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool engine_done_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;  // cancelled, or a write failed
  bool finish_called_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status final_status_ ABSL_GUARDED_BY(mu_);
  int32_t prompt_tokens_ ABSL_GUARDED_BY(mu_) = 0;
};

class GenerateCall final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  GenerateCall(const Deps& deps, grpc::CallbackServerContext* context,
               const v1::GenerateRequest& request)
      : stream_(std::make_shared<GenerateStream>(deps, this)) {
    if (absl::Status auth = deps.auth.Check(*context); !auth.ok()) {
      stream_->FinishEarly(auth);
      return;
    }
    absl::StatusOr<InferenceRequest> converted =
        ToInferenceRequest(request, DeadlineOf(*context), deps.text);
    if (!converted.ok()) {
      stream_->FinishEarly(converted.status());
      return;
    }
    stream_->Submitted(deps.scheduler.Submit(*std::move(converted), stream_));
  }

  void OnWriteDone(bool ok) override { stream_->WriteDone(ok); }
  void OnCancel() override { stream_->Cancelled(); }
  void OnDone() override {
    stream_->Done();
    delete this;
  }

 private:
  std::shared_ptr<GenerateStream> stream_;
};

void GenerateStream::Submitted(const absl::StatusOr<uint64_t>& id) {
  if (!id.ok()) {
    FinishEarly(id.status());
    return;
  }
  bool cancel_now = false;
  Action action;
  {
    absl::MutexLock lock(&mu_);
    submitted_ = true;
    id_ = *id;
    cancel_now = cancel_requested_ && !engine_done_;
    action = NextActionLocked();
  }
  if (cancel_now) CancelInScheduler(*id);
  Run(action);
}

void GenerateStream::FinishEarly(const absl::Status& status) {
  Action action;
  {
    absl::MutexLock lock(&mu_);
    engine_done_ = true;
    final_status_ = ToGrpcStatus(status);
    action = NextActionLocked();
  }
  Run(action);
}

void GenerateStream::RecordTokensLocked(size_t count, absl::Time now) {
  if (!got_tokens_) {
    metrics_.RecordTimeToFirstToken(now - start_);
    got_tokens_ = true;
  } else {
    metrics_.RecordInterTokenLatency(now - last_tokens_at_, static_cast<int64_t>(count));
  }
  last_tokens_at_ = now;
  metrics_.AddGeneratedTokens(static_cast<int64_t>(count));
}

void GenerateStream::OnTokens(const std::vector<int32_t>& tokens,
                              const std::vector<float>& logprobs, const std::string& text) {
  if (tokens.empty() && text.empty()) return;
  const absl::Time now = absl::Now();
  Action action;
  {
    absl::MutexLock lock(&mu_);
    if (!tokens.empty()) RecordTokensLocked(tokens.size(), now);
    if (broken_) return;  // nobody listens; the cancel is on its way
    pending_.mutable_token_ids()->Add(tokens.begin(), tokens.end());
    pending_.mutable_logprobs()->Add(logprobs.begin(), logprobs.end());
    pending_.mutable_text()->append(text);
    has_pending_ = true;
    action = NextActionLocked();
  }
  Run(action);
}

void GenerateStream::OnFinish(const absl::Status& status, FinishReason reason, const Usage& usage,
                              const std::string& adapter_version) {
  Action action;
  {
    absl::MutexLock lock(&mu_);
    engine_done_ = true;
    if (!status.ok()) {
      final_status_ = ToGrpcStatus(status);
      pending_.Clear();
      has_pending_ = false;
    } else if (reason == FinishReason::kCancelled) {
      final_status_ = CancelledStatus();
      pending_.Clear();
      has_pending_ = false;
    } else {
      final_status_ = grpc::Status::OK;
      pending_.set_finish_reason(ToProto(reason));
      pending_.mutable_usage()->set_prompt_tokens(usage.prompt_tokens);
      pending_.mutable_usage()->set_generated_tokens(usage.generated_tokens);
      pending_.set_adapter_version(adapter_version);
      has_pending_ = true;
      prompt_tokens_ = usage.prompt_tokens;
    }
    action = NextActionLocked();
  }
  Run(action);
}

void GenerateStream::WriteDone(bool ok) {
  bool cancel_now = false;
  uint64_t id = 0;
  Action action;
  {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok && !broken_) {
      broken_ = true;
      cancel_now = submitted_ && !engine_done_;
      id = id_;
    }
    action = NextActionLocked();
  }
  if (cancel_now) CancelInScheduler(id);
  Run(action);
}

void GenerateStream::Cancelled() {
  bool cancel_now = false;
  uint64_t id = 0;
  Action action;
  {
    absl::MutexLock lock(&mu_);
    broken_ = true;
    if (!submitted_) {
      cancel_requested_ = true;
    } else if (!engine_done_) {
      cancel_now = true;
      id = id_;
    }
    action = NextActionLocked();
  }
  if (cancel_now) CancelInScheduler(id);
  Run(action);
}

void GenerateStream::Done() {
  absl::MutexLock lock(&mu_);
  call_ = nullptr;
}

GenerateStream::Action GenerateStream::NextActionLocked() {
  Action action;
  if (finish_called_ || writing_ || call_ == nullptr) return action;
  if (broken_) {
    if (!engine_done_) return action;  // wait for the scheduler to let go of the request
    action.kind = Action::kFinish;
    action.status = final_status_.ok() ? CancelledStatus() : final_status_;
  } else if (has_pending_) {
    in_flight_.Swap(&pending_);
    pending_.Clear();
    has_pending_ = false;
    writing_ = true;
    action.kind = Action::kWrite;
    action.call = call_;
    return action;
  } else if (engine_done_) {
    action.kind = Action::kFinish;
    action.status = final_status_;
  } else {
    return action;
  }
  finish_called_ = true;
  action.call = call_;
  metrics_.RecordRpc(Rpc::kGenerate, action.status.error_code(), absl::Now() - start_);
  if (action.status.ok()) metrics_.AddPromptTokens(prompt_tokens_);
  return action;
}

// Runs outside the lock: a reactor may run reactions inline, which would re-enter the stream.
// The reactor is alive here: it is deleted only after Finish, and only this action calls it.
void GenerateStream::Run(const Action& action) {
  switch (action.kind) {
    case Action::kNone: return;
    case Action::kWrite: action.call->StartWrite(&in_flight_); return;
    case Action::kFinish: action.call->Finish(action.status); return;
  }
}

// ---------------------------------------------------------------------------------------------
// Score
// ---------------------------------------------------------------------------------------------

class ScoreCall;

// The scheduler's handle on a Score call. The response is filled only before Finish.
class ScoreObserver final : public RequestObserver {
 public:
  ScoreObserver(Metrics& metrics, ScoreCall* call, v1::ScoreResponse* response)
      : metrics_(metrics), call_(call), response_(response), start_(absl::Now()) {}

  void OnScore(ScoreResult result) override {
    absl::MutexLock lock(&mu_);
    result_ = std::move(result);
  }
  void OnFinish(const absl::Status& status, FinishReason reason, const Usage& usage,
                const std::string& adapter_version) override;
  // Ends a call that was never submitted.
  void FinishEarly(const absl::Status& status);

 private:
  void FinishWith(grpc::Status status) ABSL_LOCKS_EXCLUDED(mu_);

  Metrics& metrics_;
  absl::Mutex mu_;
  ScoreCall* call_ ABSL_GUARDED_BY(mu_);
  v1::ScoreResponse* response_ ABSL_GUARDED_BY(mu_);
  ScoreResult result_ ABSL_GUARDED_BY(mu_);
  const absl::Time start_;
};

class ScoreCall final : public grpc::ServerUnaryReactor {
 public:
  ScoreCall(const Deps& deps, grpc::CallbackServerContext* context, const v1::ScoreRequest& request,
            v1::ScoreResponse* response)
      : scheduler_(deps.scheduler),
        observer_(std::make_shared<ScoreObserver>(deps.metrics, this, response)) {
    if (absl::Status auth = deps.auth.Check(*context); !auth.ok()) {
      observer_->FinishEarly(auth);
      return;
    }
    absl::StatusOr<InferenceRequest> converted =
        ToInferenceRequest(request, DeadlineOf(*context), deps.text);
    if (!converted.ok()) {
      observer_->FinishEarly(converted.status());
      return;
    }
    absl::StatusOr<uint64_t> id = scheduler_.Submit(*std::move(converted), observer_);
    if (!id.ok()) {
      observer_->FinishEarly(id.status());
      return;
    }
    bool cancel_now = false;
    {
      absl::MutexLock lock(&mu_);
      id_ = *id;
      cancel_now = cancelled_;
    }
    if (cancel_now) scheduler_.Cancel(*id);
  }

  void OnCancel() override {
    std::optional<uint64_t> id;
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
      id = id_;
    }
    if (id.has_value()) scheduler_.Cancel(*id);
  }
  void OnDone() override { delete this; }

 private:
  Scheduler& scheduler_;
  std::shared_ptr<ScoreObserver> observer_;
  absl::Mutex mu_;
  std::optional<uint64_t> id_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

void ScoreObserver::OnFinish(const absl::Status& status, FinishReason reason, const Usage& usage,
                             const std::string& adapter_version) {
  if (!status.ok()) {
    FinishWith(ToGrpcStatus(status));
    return;
  }
  if (reason == FinishReason::kCancelled) {
    FinishWith(CancelledStatus());
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    if (response_ != nullptr) {
      response_->mutable_token_logprobs()->Add(result_.token_logprobs.begin(),
                                               result_.token_logprobs.end());
      response_->mutable_logits()->Add(result_.logits.begin(), result_.logits.end());
      response_->set_vocab_size(result_.vocab_size);
      response_->set_adapter_version(adapter_version);
    }
    result_ = ScoreResult();
  }
  FinishWith(grpc::Status::OK);
}

void ScoreObserver::FinishEarly(const absl::Status& status) { FinishWith(ToGrpcStatus(status)); }

void ScoreObserver::FinishWith(grpc::Status status) {
  ScoreCall* call = nullptr;
  {
    absl::MutexLock lock(&mu_);
    call = call_;
    call_ = nullptr;  // Finish once; the reactor may be gone right after
    response_ = nullptr;
  }
  if (call == nullptr) return;
  metrics_.RecordRpc(Rpc::kScore, status.error_code(), absl::Now() - start_);
  call->Finish(std::move(status));
}

// ---------------------------------------------------------------------------------------------
// Tokenize, Detokenize
// ---------------------------------------------------------------------------------------------

absl::Status TokenizeInto(const TextCodec& codec, const v1::TokenizeRequest& in,
                          v1::TokenizeResponse& out) {
  ASSIGN_OR_RETURN(std::optional<EncodedPrompt> encoded,
                   EncodeIfText({false, in.text(), in.messages(), in.messages_json(),
                                 in.chat_template_kwargs_json()},
                                in.add_special_tokens(), in.add_generation_prompt(), codec));
  out.mutable_token_ids()->Add(encoded->token_ids.begin(), encoded->token_ids.end());
  if (in.text().empty()) out.set_text(std::move(encoded->text));
  return absl::OkStatus();
}

absl::Status DetokenizeInto(const TextCodec& codec, const v1::DetokenizeRequest& in,
                            v1::DetokenizeResponse& out) {
  ASSIGN_OR_RETURN(std::string text,
                   codec.Decode({in.token_ids().data(), static_cast<size_t>(in.token_ids_size())},
                                in.skip_special_tokens()));
  out.set_text(std::move(text));
  return absl::OkStatus();
}

}  // namespace

grpc::ServerUnaryReactor* InferenceService::Tokenize(grpc::CallbackServerContext* context,
                                                     const v1::TokenizeRequest* request,
                                                     v1::TokenizeResponse* response) {
  return AnswerUnary({context, metrics_, Rpc::kTokenize, auth_},
                     [&] { return TokenizeInto(text_, *request, *response); });
}

grpc::ServerUnaryReactor* InferenceService::Detokenize(grpc::CallbackServerContext* context,
                                                       const v1::DetokenizeRequest* request,
                                                       v1::DetokenizeResponse* response) {
  return AnswerUnary({context, metrics_, Rpc::kDetokenize, auth_},
                     [&] { return DetokenizeInto(text_, *request, *response); });
}

InferenceService::InferenceService(Scheduler& scheduler, const TextCodec& text, Metrics& metrics,
                                   TokenAuth auth)
    : scheduler_(scheduler), text_(text), metrics_(metrics), auth_(std::move(auth)) {}

grpc::ServerWriteReactor<v1::GenerateResponse>* InferenceService::Generate(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  return new GenerateCall(Deps{scheduler_, text_, metrics_, auth_}, context, *request);
}

grpc::ServerUnaryReactor* InferenceService::Score(grpc::CallbackServerContext* context,
                                                  const v1::ScoreRequest* request,
                                                  v1::ScoreResponse* response) {
  return new ScoreCall(Deps{scheduler_, text_, metrics_, auth_}, context, *request, response);
}

}  // namespace loramux
