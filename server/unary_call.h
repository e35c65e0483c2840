// Unary RPCs of gRPC's callback API, authorised, counted and finished in one place:
//
//   return AnswerUnary({context, metrics_, Rpc::kGet, auth_}, [&] { return Describe(*request,
//   response); }); return AnswerUnaryOn(pool, {context, metrics_, Rpc::kLoad, auth_}, [=] { return
//   Load(name, response); });
//
// `fn` returns an absl::Status and fills the call's response; the status goes to the client
// (status_mapping.h) and to the RPC metrics with the call's latency.
//
// Thread-safety: called from gRPC's handler threads; AnswerUnaryOn's `fn` runs wherever `run`
// runs it, and must own (or capture by value) what it uses.
#pragma once

#include <utility>

#include <grpcpp/server_context.h>
#include <grpcpp/support/server_callback.h>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/auth.h"
#include "server/metrics.h"
#include "server/status_mapping.h"

namespace loramux {

// What every unary call needs: its context, where it is counted, and whose token it needs.
struct UnaryRpc {
  grpc::CallbackServerContext* context;
  Metrics& metrics;
  Rpc rpc;
  const TokenAuth& auth;
};

// Records and finishes `reactor` with `status`.
inline void FinishUnary(grpc::ServerUnaryReactor* reactor, Metrics& metrics, Rpc rpc,
                        absl::Time start, const absl::Status& status) {
  grpc::Status reply = ToGrpcStatus(status);
  metrics.RecordRpc(rpc, reply.error_code(), absl::Now() - start);
  reactor->Finish(std::move(reply));
}

// Checks the token, runs `fn` and finishes the call, all on the handler thread: for work that is
// bounded by the request and never blocks.
template <typename Fn>
grpc::ServerUnaryReactor* AnswerUnary(const UnaryRpc& call, Fn&& fn) {
  const absl::Time start = absl::Now();
  grpc::ServerUnaryReactor* reactor = call.context->DefaultReactor();
  absl::Status status = call.auth.Check(*call.context);
  if (status.ok()) status = fn();
  FinishUnary(reactor, call.metrics, call.rpc, start, status);
  return reactor;
}

// Checks the token on the handler thread, then hands `fn` to `run` (a worker pool) and finishes
// the call from there: for work that blocks (disk syncs, waiting for a load).
template <typename Run, typename Fn>
grpc::ServerUnaryReactor* AnswerUnaryOn(Run&& run, const UnaryRpc& call, Fn fn) {
  const absl::Time start = absl::Now();
  grpc::ServerUnaryReactor* reactor = call.context->DefaultReactor();
  if (absl::Status status = call.auth.Check(*call.context); !status.ok()) {
    FinishUnary(reactor, call.metrics, call.rpc, start, status);
    return reactor;
  }
  run([reactor, &metrics = call.metrics, rpc = call.rpc, start, fn = std::move(fn)]() mutable {
    FinishUnary(reactor, metrics, rpc, start, fn());
  });
  return reactor;
}

}  // namespace loramux
