// Fuzzes the OpenAI HTTP API's request parsing (server/openai_api.h): any body a client may POST
// to /v1/completions or /v1/chat/completions (the first byte picks the endpoint).
//
// Checked beyond "no crash, no UB, no throw": a refusal is INVALID_ARGUMENT with OpenAI's error
// body (HTTP 400); an accepted request has a prompt (text, conversation or token ids), sampling in
// OpenAI's ranges, and its response shapes (whole and streamed) serialise to JSON.
#include <cstddef>
#include <cstdint>
#include <string>

#include "server/openai_api.h"
#include "tests/fuzz/fuzz_check.h"

namespace loramux {
namespace {

void CheckResponses(const OpenAiRequest& r) {
  CompletionPiece piece;
  piece.text = "x";
  piece.token_ids = {1};
  if (r.logprobs) piece.logprobs = {{"x", -0.5f, {{"x", -0.5f}}}};
  const ResponseHeader header{"id", 0, r.model, ""};
  const Json whole =
      CompletionResponse(r, header, r.prompt_token_ids, piece, FinishReason::kStop, Usage{1, 1});
  FUZZ_CHECK(whole["choices"].size() == 1, whole.dump());
  const Json chunk = ChoiceChunk(r, header, piece, FinishReason::kLength);
  // The model name is the client's string: it may hold bytes that are not UTF-8.
  (void)whole.dump(-1, ' ', false, Json::error_handler_t::replace);
  (void)chunk.dump(-1, ' ', false, Json::error_handler_t::replace);
  (void)UsageChunk(r, header, Usage{1, 1});
}

}  // namespace
}  // namespace loramux

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loramux;
  if (size == 0) return 0;
  const OpenAiEndpoint endpoint =
      data[0] & 1 ? OpenAiEndpoint::kChatCompletions : OpenAiEndpoint::kCompletions;
  const std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
  absl::StatusOr<OpenAiRequest> r = ParseOpenAiRequest(endpoint, body);
  if (!r.ok()) {
    FUZZ_CHECK(r.status().code() == absl::StatusCode::kInvalidArgument, r.status().ToString());
    FUZZ_CHECK(HttpStatusFor(r.status().code()) == 400, r.status().ToString());
    const Json error = ErrorBody(r.status());
    (void)error.dump(-1, ' ', false, Json::error_handler_t::replace);
    return 0;
  }
  FUZZ_CHECK(!(r->text_prompt.has_value() && !r->prompt_token_ids.empty()), "two prompts");
  const SamplingParams& s = r->engine.sampling;
  FUZZ_CHECK(s.temperature >= 0 && s.temperature <= 2, "temperature ", s.temperature);
  FUZZ_CHECK(s.top_p > 0 && s.top_p <= 1, "top_p ", s.top_p);
  FUZZ_CHECK(s.top_k >= 0, "top_k ", s.top_k);
  FUZZ_CHECK(!r->max_tokens_given || s.max_new_tokens >= 1, "max_tokens ", s.max_new_tokens);
  FUZZ_CHECK(r->top_logprobs >= 0 && r->top_logprobs <= 20, "top_logprobs ", r->top_logprobs);
  FUZZ_CHECK(!r->include_usage || r->stream, "include_usage without stream");
  CheckResponses(*r);
  return 0;
}
