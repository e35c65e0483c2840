// Fuzzes rendering a client's conversation through real chat templates (tests/data/
// chat_templates): the first byte picks the template and add_generation_prompt; the rest is the
// request's messages JSON, optionally followed by a NUL byte and its chat_template_kwargs JSON.
//
// Checked beyond "no crash, no UB, no leak, no hang": a refusal is INVALID_ARGUMENT (the
// conversation or kwargs are malformed or the template rejects them) or RESOURCE_EXHAUSTED (a
// render limit); an accepted render is valid UTF-8 within max_output_bytes.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "tests/fuzz/fuzz_check.h"
#include "text/chat_template.h"
#include "text/utf8.h"

namespace loramux {
namespace {

constexpr const char* kTemplates[] = {"qwen3",  "llama3_1", "llama3_1_tools",
                                      "llama2", "gemma3",   "deepseek_v3"};
constexpr size_t kCount = sizeof(kTemplates) / sizeof(kTemplates[0]);

jinja::RenderLimits Limits() {
  jinja::RenderLimits limits;
  limits.max_steps = 100'000;
  limits.max_output_bytes = 1 << 20;
  return limits;
}

std::optional<ChatTemplate> loaded[kCount];

// Once, before the first input.
void LoadAll() {
  for (size_t i = 0; i < kCount; ++i) {
    auto chat = ChatTemplate::FromModelDir(
        std::string(LORAMUX_TEST_DATA) + "/chat_templates/" + kTemplates[i], Limits());
    FUZZ_CHECK(chat.ok(), "cannot load ", kTemplates[i], ": ", chat.status().ToString());
    loaded[i] = std::move(*chat);
  }
}

}  // namespace
}  // namespace loramux

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  loramux::LoadAll();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loramux;
  if (size == 0) return 0;
  const ChatTemplate& chat = *loaded[data[0] % kCount];
  const bool add_generation_prompt = (data[0] / kCount) % 2 == 1;
  const std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  const size_t nul = rest.find('\0');
  const std::string_view messages = rest.substr(0, nul);
  const std::string_view kwargs = nul == std::string_view::npos ? "" : rest.substr(nul + 1);
  auto out = chat.RenderJson(messages, add_generation_prompt, kwargs);
  if (!out.ok()) {
    const absl::StatusCode code = out.status().code();
    FUZZ_CHECK(
        code == absl::StatusCode::kInvalidArgument || code == absl::StatusCode::kResourceExhausted,
        kTemplates[data[0] % kCount], ": ", out.status().ToString());
    return 0;
  }
  FUZZ_CHECK(out->size() <= Limits().max_output_bytes, "rendered ", out->size(), " bytes");
  FUZZ_CHECK(text::IsValidUtf8(*out), kTemplates[data[0] % kCount], " rendered invalid UTF-8");
  return 0;
}
