// The model's text side, loaded once from its directory: tokenizer.json (text <-> token ids) and
// the chat template of tokenizer_config.json. Every front end (gRPC, HTTP) turns text prompts and
// conversations into token ids here, so both tokenize alike; the scheduler turns generated ids
// back into streamed text with a TextStream.
//
// A directory without tokenizer.json serves token ids only: every text call is
// FAILED_PRECONDITION. A tokenizer.json that uses a feature loramux does not implement stops
// start-up (Load fails, naming the feature): tokenizing differently in silence is never an
// option. A chat template that cannot be loaded leaves text served and answers conversations with
// FAILED_PRECONDITION naming the reason.
//
// Thread-safety: immutable after Load; every method may be called from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "nlohmann/json.hpp"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace loramux {

// A prompt as a client sends it: text, or a conversation.
struct PromptInput {
  std::optional<std::string> text;
  bool add_special_tokens = true;                  // text: the post-processor's BOS/EOS
  std::optional<nlohmann::ordered_json> messages;  // an OpenAI-style array of message objects
  bool add_generation_prompt = true;               // conversation
  nlohmann::ordered_json chat_template_kwargs = nlohmann::ordered_json::object();
};

struct EncodedPrompt {
  std::vector<int32_t> token_ids;
  std::string text;  // the rendered conversation (the text itself for a text prompt)
};

class TextCodec {
 public:
  // Reads <model_dir>/tokenizer.json and tokenizer_config.json when present.
  static absl::StatusOr<std::unique_ptr<TextCodec>> Load(const std::string& model_dir);

  bool has_tokenizer() const { return tokenizer_ != nullptr; }
  // Null when the model has no tokenizer.json.
  const text::Tokenizer* tokenizer() const { return tokenizer_.get(); }

  // A conversation is rendered with the chat template, then tokenized without adding special
  // tokens again (the template writes them), as transformers does. INVALID_ARGUMENT for text
  // that is not UTF-8 or a conversation the template rejects; FAILED_PRECONDITION without a
  // tokenizer or chat template.
  absl::StatusOr<EncodedPrompt> Encode(const PromptInput& prompt) const;
  // INVALID_ARGUMENT naming an id that has no token.
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids, bool skip_special_tokens) const;

 private:
  TextCodec() = default;
  absl::Status NeedTokenizer() const;

  std::unique_ptr<text::Tokenizer> tokenizer_;
  std::optional<ChatTemplate> chat_template_;
  absl::Status chat_template_status_;  // why conversations cannot be served, when they cannot
};

// Parses a JSON value a client sent for `field`; INVALID_ARGUMENT naming the field. An empty
// string gives `if_empty`.
absl::StatusOr<nlohmann::ordered_json> ParseClientJson(const std::string& json, const char* field,
                                                       nlohmann::ordered_json if_empty);

}  // namespace loramux
