// The scheduler: the one thread that owns the model. It runs continuous (iteration-level)
// batching: every step packs the prefill chunks of newly admitted requests and one decode token of
// each running request, across adapters and the base, into one forward pass.
//
// Handlers call Submit/Cancel from any thread; they never block on the model. Results flow back
// through each request's RequestObserver on the scheduler thread.
//
// Thread-safety: all public methods are thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/request.h"

namespace loramux {

class AdapterRegistry;
class LlamaModel;
namespace text {
class Tokenizer;
}

struct SchedulerOptions {
  int64_t kv_cache_bytes = 256ll << 20;
  int64_t max_batch_tokens = 2048;  // tokens per forward step (prefill chunks are split)
  int64_t max_running_requests = 64;
  int64_t max_queue = 1024;       // waiting requests beyond this get RESOURCE_EXHAUSTED
  int64_t max_prompt_tokens = 0;  // 0 = the model's max_position_embeddings
  int32_t max_new_tokens_limit = 4096;
  int32_t default_max_new_tokens = 16;
  int64_t max_score_logits_bytes = int64_t{256} << 20;  // Score return_logits: len * vocab * 4
};

// A snapshot for metrics and health.
struct SchedulerStats {
  int64_t queued = 0;
  int64_t running = 0;
  int64_t kv_used_blocks = 0;
  int64_t kv_total_blocks = 0;
  int64_t kv_block_tokens = 0;
  int64_t steps = 0;
  int64_t last_batch_tokens = 0;
  int64_t last_batch_sequences = 0;
  int64_t generated_tokens = 0;
};

class Scheduler {
 public:
  // `model`, `registry` and `tokenizer` must outlive the scheduler. With a tokenizer (else null),
  // generated tokens stream with their text and requests may give stop strings. Starts the
  // scheduler thread.
  Scheduler(const LlamaModel& model, AdapterRegistry& registry, SchedulerOptions options,
            const text::Tokenizer* tokenizer = nullptr);
  ~Scheduler();  // Stop()s
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Validates (NormalizeAndValidate, request_validator.h) and queues a request. INVALID_ARGUMENT
  // for bad input (empty prompt, token ids out of the vocabulary, any field over its limit),
  // RESOURCE_EXHAUSTED when the queue is full, UNAVAILABLE while draining. On OK the observer
  // receives OnFinish exactly once. Returns the request id for Cancel.
  absl::StatusOr<uint64_t> Submit(InferenceRequest request,
                                  std::shared_ptr<RequestObserver> observer);
  // Stops a request within one step and frees its KV cache; it finishes with reason kCancelled.
  void Cancel(uint64_t id);

  // Refuse new requests from now on; running and queued ones go on.
  void StartDrain();
  // True when nothing is queued or running.
  bool Idle() const;
  // Ends every request (UNAVAILABLE) and joins the thread. Idempotent.
  void Stop();

  SchedulerStats stats() const;
  int64_t vocab_size() const;
  // The longest context a request may reach (prompt + generated): the model's
  // max_position_embeddings, or the whole KV cache when that holds less.
  int64_t max_context_tokens() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace loramux
