// OpenAI's HTTP API mapped onto the engine: the bodies of POST /v1/completions and
// /v1/chat/completions parsed into an engine request, and the engine's results written back in
// OpenAI's JSON shapes (whole responses, stream chunks, the model list, errors). JSON in, JSON
// out: no I/O, no threads, no torch; the HTTP front (http_front.h) drives it.
//
// Parsing is as strict as OpenAI's own server: a field of the wrong type is refused naming it; a
// field that asks for what loramux does not do (tools, response_format other than text, n > 1,
// penalties, logit_bias, echo, suffix, best_of > 1, image parts) is refused saying so, never
// ignored; an unknown field is refused as "unrecognized" (OpenAI does the same). JSON null means
// "not given". Extensions, as vLLM names them: top_k, stop_token_ids, ignore_eos,
// chat_template_kwargs, add_generation_prompt, add_special_tokens, return_token_ids; and
// loramux's adapter_scale.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/json_value.h"
#include "engine/request.h"
#include "engine/text_codec.h"

namespace loramux {

enum class OpenAiEndpoint { kCompletions, kChatCompletions };

// A parsed completions or chat request.
struct OpenAiRequest {
  OpenAiEndpoint endpoint = OpenAiEndpoint::kCompletions;
  std::string model;  // as the client named it; echoed in every response
  // The prompt: text or a conversation to encode (PromptInput), or token ids used as given.
  std::optional<PromptInput> text_prompt;
  std::vector<int32_t> prompt_token_ids;
  // Sampling, stops, logprobs and adapter_scale; the caller sets adapter and tokens.
  InferenceRequest engine;
  bool max_tokens_given = false;  // else the endpoint's default applies (see DefaultMaxTokens)
  bool stream = false;
  bool include_usage = false;     // stream_options.include_usage
  bool logprobs = false;          // per-token logprobs in the response
  int32_t top_logprobs = 0;       // and this many alternatives at each (engine.top_logprobs)
  bool return_token_ids = false;  // prompt_token_ids and choices[].token_ids in the response
};

// INVALID_ARGUMENT naming the field (its name also in the status's "param" payload, see
// ErrorParam) for any body that is not a request loramux serves exactly.
absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(OpenAiEndpoint endpoint, absl::string_view body);

// max_tokens when the client gave none: completions take the server's default (OpenAI's is 16);
// a chat reply may run to the end of the context, as with OpenAI and vLLM, within `limit`.
int32_t DefaultMaxTokens(const OpenAiRequest& request, int32_t server_default,
                         int64_t context_tokens, int64_t prompt_tokens, int32_t limit);

// One generated token, for logprobs.
struct TokenLogprob {
  std::string token;  // its text (special tokens included)
  float logprob = 0.0f;
  std::vector<std::pair<std::string, float>> top;  // the likeliest tokens there, when asked
};

// Generated output: a stream chunk's worth, or (accumulated) the whole completion.
struct CompletionPiece {
  std::string text;
  std::vector<int32_t> token_ids;
  std::vector<TokenLogprob> logprobs;  // filled when the request asked for logprobs
  void Append(const CompletionPiece& more);
};

// Identity shared by every response of one request.
struct ResponseHeader {
  std::string id;                  // "cmpl-..." / "chatcmpl-..."
  int64_t created = 0;             // unix seconds
  std::string model;               // the request's model field
  std::string system_fingerprint;  // the adapter version served ("" = base)
};

// "length" / "stop" (a cancelled request has no response).
const char* FinishReasonName(FinishReason reason);

// The whole response of a request that finished.
Json CompletionResponse(const OpenAiRequest& request, const ResponseHeader& header,
                        const std::vector<int32_t>& prompt_token_ids, const CompletionPiece& output,
                        FinishReason reason, const Usage& usage);

// Stream chunks (each goes out as `data: <json>\n\n`). The first chunk of a chat stream carries
// the assistant role; the last choice chunk the finish reason; with include_usage every chunk has
// "usage": null and UsageChunk follows the last.
Json FirstChatChunk(const OpenAiRequest& request, const ResponseHeader& header);
Json ChoiceChunk(const OpenAiRequest& request, const ResponseHeader& header,
                 const CompletionPiece& piece, std::optional<FinishReason> reason);
Json UsageChunk(const OpenAiRequest& request, const ResponseHeader& header, const Usage& usage);

// GET /v1/models: the base model, then every adapter with "parent" set to the base.
struct ServedModel {
  std::string id;
  int64_t created = 0;
};
Json ModelList(const ServedModel& base, const std::vector<ServedModel>& adapters,
               int64_t max_model_len);

// OpenAI's error body {"error": {"message", "type", "param", "code"}} and its HTTP status.
int HttpStatusFor(absl::StatusCode code);
Json ErrorBody(const absl::Status& status);
// The request field a status names (set by ParseOpenAiRequest), or "".
std::string ErrorParam(const absl::Status& status);
absl::Status WithParam(absl::Status status, absl::string_view param);

}  // namespace loramux
