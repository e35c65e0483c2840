// The Inference gRPC service (callback API): Generate streams tokens, Score answers once.
//
// Handlers translate the request, submit it to the scheduler and return; they never block and
// never touch tensors. One reactor per call. Tokens arrive from the scheduler thread through a
// RequestObserver that only queues them and starts a write when none is in flight; the next write
// starts from OnWriteDone, coalescing whatever arrived meanwhile into one message, so a slow client
// never stalls the scheduler. OnCancel (client cancel, deadline, broken stream) is forwarded to the
// scheduler, which frees the sequence within one step. Each reactor deletes itself in OnDone.
//
// Thread-safety: the service is stateless apart from its references; calls run concurrently.
#pragma once

#include <cstdint>

#include "engine/scheduler.h"
#include "engine/text_codec.h"
#include "loramux/v1/loramux.grpc.pb.h"
#include "server/auth.h"
#include "server/metrics.h"

namespace loramux {

class InferenceService final : public v1::Inference::CallbackService {
 public:
  // `scheduler` and `metrics` must outlive the service and every call it started (shut the
  // grpc::Server down first).
  InferenceService(Scheduler& scheduler, const TextCodec& text, Metrics& metrics, TokenAuth auth);

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Score(grpc::CallbackServerContext* context,
                                  const v1::ScoreRequest* request,
                                  v1::ScoreResponse* response) override;
  // Tokenize and Detokenize run on the handler thread: the tokenizer is thread-safe and the work
  // is bounded by the request size (and the chat template's render limits).
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* context,
                                       const v1::DetokenizeRequest* request,
                                       v1::DetokenizeResponse* response) override;

  // The pieces every call needs; shared by the reactors.
  struct Deps {
    Scheduler& scheduler;
    const TextCodec& text;
    Metrics& metrics;
    const TokenAuth& auth;
  };

 private:
  Scheduler& scheduler_;
  const TextCodec& text_;
  Metrics& metrics_;
  const TokenAuth auth_;
};

}  // namespace loramux
