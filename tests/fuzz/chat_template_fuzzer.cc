// Fuzzes chat templates (text/chat_template.h, the Jinja2 subset in text/jinja_*.h): the input is
// a template's source, as a model directory's tokenizer_config.json carries it; a template that
// parses is rendered on a small conversation.
//
// Checked beyond "no crash, no UB, no leak, no stack overflow, no hang": parsing refuses with
// INVALID_ARGUMENT; rendering refuses with INVALID_ARGUMENT, FAILED_PRECONDITION or
// RESOURCE_EXHAUSTED (the render limits below, small so that runaway templates end quickly);
// output stays within max_output_bytes and is valid UTF-8 when the source is.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "tests/fuzz/fuzz_check.h"
#include "text/chat_template.h"
#include "text/utf8.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loramux;
  const std::string_view source(reinterpret_cast<const char*>(data), size);
  jinja::RenderLimits limits;
  limits.max_steps = 20'000;
  limits.max_output_bytes = 1 << 20;
  limits.max_range = 10'000;
  ChatSpecialTokens tokens;
  tokens.bos_token = "<s>";
  tokens.eos_token = "</s>";
  auto chat = ChatTemplate::FromSource(source, tokens, limits);
  if (!chat.ok()) {
    FUZZ_CHECK(chat.status().code() == absl::StatusCode::kInvalidArgument,
               "parse: ", chat.status().ToString());
    return 0;
  }
  static const char kMessages[] =
      R"([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi \u00e9 \ud83d\ude00"},)"
      R"( {"role": "assistant", "content": "Hello", "tool_calls": [{"type": "function", "function": )"
      R"({"name": "f", "arguments": {"x": 1}}}]}, {"role": "tool", "content": "42"}, {"role": "user", "content": ""}])";
  auto out = chat->RenderJson(
      kMessages, /*add_generation_prompt=*/true,
      R"({"tools": [{"type": "function", "function": {"name": "f"}}], "enable_thinking": false})");
  if (!out.ok()) {
    const absl::StatusCode code = out.status().code();
    FUZZ_CHECK(code == absl::StatusCode::kInvalidArgument ||
                   code == absl::StatusCode::kFailedPrecondition ||
                   code == absl::StatusCode::kResourceExhausted,
               "render: ", out.status().ToString());
    return 0;
  }
  FUZZ_CHECK(out->size() <= limits.max_output_bytes, "rendered ", out->size(), " bytes");
  if (text::IsValidUtf8(source)) {
    FUZZ_CHECK(text::IsValidUtf8(*out), "a valid UTF-8 template rendered invalid UTF-8");
  }
  return 0;
}
