// A model's chat template (tokenizer_config.json's `chat_template`), parsed once at load and
// rendered per request exactly as transformers' apply_chat_template(tokenize=False) renders it:
// the Jinja2 subset in text/jinja_*.h with trim_blocks and lstrip_blocks on, and the variables
//   messages               the conversation (OpenAI-style objects with any fields)
//   add_generation_prompt  bool
//   bos_token, eos_token, unk_token, pad_token   strings from tokenizer_config.json (absent: unset)
//   ...extras              each key of the request's extra kwargs (tools, enable_thinking,
//                          documents, date_string, ...), overriding the names above
// JSON objects keep their key order (nlohmann::ordered_json), as Python dicts do; tojson relies
// on it.
//
// Errors:
//   load    INVALID_ARGUMENT  malformed tokenizer_config.json, template syntax error
//           NOT_FOUND         no chat_template (or no "default" among named templates)
//   render  INVALID_ARGUMENT  the template rejected the conversation (raise_exception: the
//                             message is "chat template rejected the conversation: <its text>"),
//                             or failed on it (a type error, an undefined value used)
//           FAILED_PRECONDITION  the template uses a Jinja construct loramux does not implement
//                             (the message names it); a template that does is loaded anyway, so
//                             the server can still serve plain text and token ids
//           RESOURCE_EXHAUSTED   a render limit was reached (jinja::RenderLimits)
//
// Thread-safety: immutable after construction; Render may be called from any number of
// threads at once (each call has its own interpreter state).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "text/jinja_ast.h"
#include "text/jinja_interpreter.h"

namespace loramux {

struct ChatSpecialTokens {
  std::optional<std::string> bos_token, eos_token, unk_token, pad_token;
};

class ChatTemplate {
 public:
  // `json`: the text of tokenizer_config.json.
  static absl::StatusOr<ChatTemplate> FromTokenizerConfig(std::string_view json,
                                                          const jinja::RenderLimits& limits = {});
  // Reads <model_dir>/tokenizer_config.json.
  static absl::StatusOr<ChatTemplate> FromModelDir(const std::string& model_dir,
                                                   const jinja::RenderLimits& limits = {});
  static absl::StatusOr<ChatTemplate> FromSource(std::string_view source, ChatSpecialTokens tokens,
                                                 const jinja::RenderLimits& limits = {});

  // messages: a JSON array of objects. extra_kwargs: a JSON object (or null).
  absl::StatusOr<std::string> Render(const nlohmann::ordered_json& messages,
                                     bool add_generation_prompt,
                                     const nlohmann::ordered_json& extra_kwargs) const;
  // The same from JSON text (messages_json / chat_template_kwargs_json of the API; "" = none).
  absl::StatusOr<std::string> RenderJson(std::string_view messages_json, bool add_generation_prompt,
                                         std::string_view extra_kwargs_json) const;

  const std::string& source() const { return source_; }
  const ChatSpecialTokens& special_tokens() const { return tokens_; }
  // OK, or FAILED_PRECONDITION naming what the template uses that loramux lacks.
  const absl::Status& support() const { return support_; }

 private:
  ChatTemplate() = default;

  std::string source_;
  ChatSpecialTokens tokens_;
  jinja::RenderLimits limits_;
  absl::Status support_;
  std::shared_ptr<const jinja::StmtList> program_;
};

}  // namespace loramux
