// What a client asks the engine for, and how the engine answers. Torch-free: shared by the gRPC
// layer and the scheduler.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "engine/sampler.h"

namespace loramux {

struct InferenceRequest {
  enum class Kind { kGenerate, kScore };
  Kind kind = Kind::kGenerate;
  std::string adapter;          // "" = base model; "name" or "name@version" (digest or prefix)
  double adapter_scale = 1.0;   // multiplies the adapter's scale s
  std::vector<int32_t> tokens;  // the prompt (generate) or the scored ids (score)
  SamplingParams sampling;      // generate only
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;  // generate: the model's EOS does not end it (benchmarks)
  std::vector<std::string>
      stop;                    // generate: stop strings (needs a tokenizer); text ends before one
  bool logprobs = false;       // generate: per-token logprobs
  int32_t top_logprobs = 0;    // generate: also the likeliest tokens at each step (<= 20)
  bool return_logits = false;  // score: full [len, vocab] logits
  absl::Time deadline = absl::InfiniteFuture();
};

enum class FinishReason { kLength, kStop, kCancelled };

struct Usage {
  int32_t prompt_tokens = 0;
  int32_t generated_tokens = 0;
};

struct ScoreResult {
  std::vector<float> token_logprobs;  // len - 1 entries: log p(token i+1 | tokens <= i)
  std::vector<float> logits;          // [len, vocab] row-major when asked
  int32_t vocab_size = 0;
};

// Receives one request's results. All calls come from the scheduler thread, in order, and must
// not block (queue the data and return). OnFinish is called exactly once, last.
class RequestObserver {
 public:
  virtual ~RequestObserver() = default;
  // Generate: new tokens (and their logprobs when asked) as they are produced, with the text they
  // completed (valid UTF-8; always empty when the model has no tokenizer). The text held back at
  // the end may come last with no tokens.
  virtual void OnTokens(const std::vector<int32_t>& tokens, const std::vector<float>& logprobs,
                        const std::string& text) {}
  // Generate with top_logprobs > 0: the likeliest tokens and their logprobs at the step that
  // chose the token the next OnTokens delivers; called just before it.
  virtual void OnTopLogprobs(const std::vector<std::pair<int32_t, float>>& top) {}
  // Score: the result, just before OnFinish.
  virtual void OnScore(ScoreResult result) {}
  // `status` is OK for a normal end (reason says why); else NOT_FOUND for an unknown adapter,
  // DEADLINE_EXCEEDED, FAILED_PRECONDITION/DATA_LOSS for an adapter that failed to load,
  // UNAVAILABLE when the server shuts down, INTERNAL for engine failures.
  virtual void OnFinish(const absl::Status& status, FinishReason reason, const Usage& usage,
                        const std::string& adapter_version) = 0;
};

}  // namespace loramux
