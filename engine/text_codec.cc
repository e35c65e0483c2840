#include "engine/text_codec.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status_macros.h"

namespace loramux {

absl::StatusOr<std::unique_ptr<TextCodec>> TextCodec::Load(const std::string& model_dir) {
  std::unique_ptr<TextCodec> codec(new TextCodec());
  const std::string tokenizer_path = model_dir + "/tokenizer.json";
  if (!std::filesystem::exists(tokenizer_path)) {
    codec->chat_template_status_ =
        absl::FailedPreconditionError("the model directory has no tokenizer.json: send token ids");
    return codec;
  }
  ASSIGN_OR_RETURN(codec->tokenizer_, text::Tokenizer::FromFile(tokenizer_path));
  absl::StatusOr<ChatTemplate> chat = ChatTemplate::FromModelDir(model_dir);
  if (chat.ok()) {
    codec->chat_template_ = *std::move(chat);
    codec->chat_template_status_ = codec->chat_template_->support();
  } else {
    codec->chat_template_status_ = absl::FailedPreconditionError(
        absl::StrCat("the model has no usable chat template: ", chat.status().message()));
  }
  if (!codec->chat_template_status_.ok()) {
    LogWarning("conversations will be refused: %s", codec->chat_template_status_.message());
  }
  return codec;
}

absl::Status TextCodec::NeedTokenizer() const {
  if (tokenizer_) return absl::OkStatus();
  return absl::FailedPreconditionError(
      "this model directory has no tokenizer.json, so text is not served; send token ids");
}

absl::StatusOr<EncodedPrompt> TextCodec::Encode(const PromptInput& prompt) const {
  RETURN_IF_ERROR(NeedTokenizer());
  EncodedPrompt out;
  if (prompt.messages) {
    RETURN_IF_ERROR(chat_template_status_);
    ASSIGN_OR_RETURN(out.text,
                     chat_template_->Render(*prompt.messages, prompt.add_generation_prompt,
                                            prompt.chat_template_kwargs));
    ASSIGN_OR_RETURN(out.token_ids, tokenizer_->Encode(out.text, /*add_special_tokens=*/false));
    return out;
  }
  out.text = prompt.text.value_or("");
  ASSIGN_OR_RETURN(out.token_ids, tokenizer_->Encode(out.text, prompt.add_special_tokens));
  return out;
}

absl::StatusOr<std::string> TextCodec::Decode(absl::Span<const int32_t> ids,
                                              bool skip_special_tokens) const {
  RETURN_IF_ERROR(NeedTokenizer());
  return tokenizer_->Decode(ids, skip_special_tokens);
}

absl::StatusOr<nlohmann::ordered_json> ParseClientJson(const std::string& json, const char* field,
                                                       nlohmann::ordered_json if_empty) {
  if (json.empty()) return if_empty;
  nlohmann::ordered_json value =
      nlohmann::ordered_json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(field, " is not valid JSON"));
  }
  return value;
}

}  // namespace loramux
