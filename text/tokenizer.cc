#include "text/tokenizer.h"

#include <algorithm>

#include "text/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "text/utf8.h"

namespace loramux::text {
namespace {

// Top-level keys a tokenizer.json may carry; an unknown one is reported, never ignored.
constexpr std::string_view kKnownKeys[] = {"version",       "truncation",     "padding",
                                           "added_tokens",  "normalizer",     "pre_tokenizer",
                                           "model",         "post_processor", "decoder"};

absl::Status CheckTopLevel(JsonElement root, simdjson::dom::object object) {
  for (auto field : object) {
    if (std::find(std::begin(kKnownKeys), std::end(kKnownKeys), field.key) == std::end(kKnownKeys)) {
      return Unsupported(Cat("top-level field \"", field.key, "\""));
    }
  }
  for (std::string_view key : {"truncation", "padding"}) {
    if (OptionalField(root, key)) {
      return Unsupported(Cat("\"", key, "\" other than null"),
                         "loramux never truncates or pads prompts");
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(std::string_view json) {
  return FromPaddedJson(simdjson::padded_string(json));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromPaddedJson(
    const simdjson::padded_string& json) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (auto error = parser.parse(json).get(root); error != simdjson::SUCCESS) {
    return absl::InvalidArgumentError(
        Cat("tokenizer.json is not valid JSON: ", simdjson::error_message(error)));
  }
  simdjson::dom::object object;
  if (root.get_object().get(object) != simdjson::SUCCESS) {
    return absl::InvalidArgumentError("tokenizer.json must be a JSON object");
  }
  RETURN_IF_ERROR(CheckTopLevel(root, object));
  auto tokenizer = std::unique_ptr<Tokenizer>(new Tokenizer());
  std::optional<JsonElement> model = OptionalField(root, "model");
  if (!model) return JsonError("model", "is missing");
  ASSIGN_OR_RETURN(tokenizer->model_, BpeModel::FromJson(*model));
  if (std::optional<JsonElement> normalizer = OptionalField(root, "normalizer")) {
    ASSIGN_OR_RETURN(tokenizer->normalizer_, NormalizerFromJson(*normalizer));
  }
  if (std::optional<JsonElement> pre_tokenizer = OptionalField(root, "pre_tokenizer")) {
    ASSIGN_OR_RETURN(tokenizer->pre_tokenizer_, PreTokenizerFromJson(*pre_tokenizer));
  }
  if (std::optional<JsonElement> post_processor = OptionalField(root, "post_processor")) {
    ASSIGN_OR_RETURN(tokenizer->post_processor_, PostProcessor::FromJson(*post_processor));
  }
  if (std::optional<JsonElement> decoder = OptionalField(root, "decoder")) {
    ASSIGN_OR_RETURN(tokenizer->decoder_, TokenDecoderFromJson(*decoder));
  }
  RETURN_IF_ERROR(tokenizer->LoadAddedTokens(root));
  return tokenizer;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(const std::string& path) {
  simdjson::padded_string bytes;
  if (simdjson::padded_string::load(path).get(bytes) != simdjson::SUCCESS) {
    return absl::NotFoundError(Cat("cannot read tokenizer file ", path));
  }
  auto tokenizer = FromPaddedJson(bytes);
  if (!tokenizer.ok()) {
    return absl::Status(tokenizer.status().code(),
                        Cat(path, ": ", tokenizer.status().message()));
  }
  return tokenizer;
}

absl::Status Tokenizer::LoadAddedTokens(JsonElement root) {
  constexpr std::string_view kWhere = "added_tokens";
  std::vector<AddedToken> parsed;
  if (std::optional<JsonElement> list = OptionalField(root, "added_tokens")) {
    simdjson::dom::array items;
    if (list->get_array().get(items) != simdjson::SUCCESS) {
      return JsonError(kWhere, "must be an array");
    }
    for (JsonElement item : items) {
      AddedToken token;
      ASSIGN_OR_RETURN(int64_t id, IntField(item, "id", kWhere));
      ASSIGN_OR_RETURN(std::string_view content, StringField(item, "content", kWhere));
      if (id < 0 || id > INT32_MAX) return JsonError(kWhere, Cat("bad id ", id));
      token.id = static_cast<int32_t>(id);
      token.content = std::string(content);
      ASSIGN_OR_RETURN(token.single_word, BoolField(item, "single_word", kWhere, false));
      ASSIGN_OR_RETURN(token.lstrip, BoolField(item, "lstrip", kWhere, false));
      ASSIGN_OR_RETURN(token.rstrip, BoolField(item, "rstrip", kWhere, false));
      ASSIGN_OR_RETURN(token.special, BoolField(item, "special", kWhere, false));
      ASSIGN_OR_RETURN(token.normalized, BoolField(item, "normalized", kWhere, !token.special));
      parsed.push_back(std::move(token));
    }
  }
  AssignAddedTokenIds(std::move(parsed));
  for (const AddedToken& token : added_tokens_) {
    if (token.normalized) {
      std::string pattern = token.content;
      if (normalizer_ != nullptr) RETURN_IF_ERROR(normalizer_->Normalize(pattern));
      normalized_matcher_.Add(token, std::move(pattern));
    } else {
      raw_matcher_.Add(token, token.content);
    }
  }
  // HuggingFace decides "special" by content: any id whose token is a special token's content
  // (the added token's id, and a model token with the same text unless an added token owns it).
  is_special_.assign(vocab_size_, false);
  for (const AddedToken& token : added_tokens_) {
    if (!token.special) continue;
    is_special_[token.id] = true;
    std::optional<int32_t> model_id = model_->TokenToId(token.content);
    if (model_id && !added_by_id_.contains(*model_id)) is_special_[*model_id] = true;
  }
  for (int32_t id = 0; id < vocab_size_; ++id) {
    if (is_special_[id]) special_ids_.push_back(id);
  }
  return absl::OkStatus();
}

void Tokenizer::AssignAddedTokenIds(std::vector<AddedToken> tokens) {
  // As HuggingFace's AddedVocabulary::add_tokens: a token takes the id its content already has
  // (an earlier added token, or the model's vocabulary), else the next id after the model's
  // vocabulary. The "id" in the file is only checked (HuggingFace warns on a mismatch).
  int32_t next_id = model_->token_count();
  vocab_size_ = model_->vocab_size();
  for (AddedToken& token : tokens) {
    if (token.content.empty()) continue;  // HuggingFace ignores empty added tokens
    std::optional<int32_t> id;
    if (auto it = added_by_content_.find(AsAbsl(token.content)); it != added_by_content_.end()) {
      id = it->second;
    } else {
      id = model_->TokenToId(token.content);
    }
    if (!id) id = next_id++;
    if (*id != token.id) {
      LogWarning("tokenizer.json: added token \"%s\" has id %d in the file but gets %d, as "
                 "HuggingFace assigns it", token.content, token.id, *id);
    }
    token.id = *id;
    added_by_content_[token.content] = token.id;
    if (auto it = added_by_id_.find(token.id); it != added_by_id_.end()) {
      added_tokens_[it->second] = std::move(token);
    } else {
      added_by_id_[token.id] = added_tokens_.size();
      added_tokens_.push_back(std::move(token));
    }
    vocab_size_ = std::max(vocab_size_, *id + 1);
  }
}

const std::string* Tokenizer::TokenOf(int32_t id) const {
  if (auto it = added_by_id_.find(id); it != added_by_id_.end()) {
    return &added_tokens_[it->second].content;
  }
  return model_->IdToToken(id);
}

std::optional<int32_t> Tokenizer::TokenToId(std::string_view token) const {
  if (auto it = added_by_content_.find(AsAbsl(token)); it != added_by_content_.end()) return it->second;
  return model_->TokenToId(token);
}

std::optional<std::string> Tokenizer::IdToToken(int32_t id) const {
  const std::string* token = TokenOf(id);
  if (token == nullptr) return std::nullopt;
  return *token;
}

bool Tokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && id < static_cast<int32_t>(is_special_.size()) && is_special_[id];
}

absl::Status Tokenizer::EncodeText(std::string_view text, bool at_input_start,
                                   std::vector<int32_t>& ids) const {
  std::string normalized(text);
  if (normalizer_ != nullptr) RETURN_IF_ERROR(normalizer_->Normalize(normalized));
  // Bytes of `normalized` that stem from the input's first character (HuggingFace tracks this
  // with alignments; normalizing that character alone gives the same length).
  size_t input_start_bytes = 0;
  if (at_input_start && !text.empty()) {
    std::string first(text.substr(0, Utf8CharLength(static_cast<unsigned char>(text[0]))));
    if (normalizer_ != nullptr) RETURN_IF_ERROR(normalizer_->Normalize(first));
    input_start_bytes = first.size();
  }
  std::vector<PreToken> pieces;
  for (const Segment& segment : normalized_matcher_.Split(normalized)) {
    if (segment.id >= 0) {
      ids.push_back(segment.id);
      continue;
    }
    pieces.clear();
    const size_t from_start =
        segment.begin < input_start_bytes
            ? std::min(input_start_bytes - segment.begin, segment.end - segment.begin)
            : 0;
    pieces.push_back({normalized.substr(segment.begin, segment.end - segment.begin), from_start});
    if (pre_tokenizer_ != nullptr) RETURN_IF_ERROR(pre_tokenizer_->PreTokenize(pieces));
    for (const PreToken& piece : pieces) model_->Encode(piece.text, ids);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(std::string_view text,
                                                       bool add_special_tokens) const {
  size_t bad_offset = 0;
  if (!IsValidUtf8(text, &bad_offset)) {
    return absl::InvalidArgumentError(Cat(
        "text is not valid UTF-8 (bad byte sequence at offset ", bad_offset, ")"));
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  for (const Segment& segment : raw_matcher_.Split(text)) {
    if (segment.id >= 0) {
      ids.push_back(segment.id);
    } else {
      RETURN_IF_ERROR(EncodeText(text.substr(segment.begin, segment.end - segment.begin),
                                 segment.begin == 0, ids));
    }
  }
  if (add_special_tokens && post_processor_) post_processor_->Apply(ids);
  return ids;
}

absl::StatusOr<std::string> Tokenizer::DecodeTokens(std::vector<std::string> tokens) const {
  if (decoder_ == nullptr) return absl::StrJoin(tokens, " ");
  RETURN_IF_ERROR(decoder_->DecodeChain(tokens));
  return absl::StrJoin(tokens, "");
}

absl::StatusOr<std::string> Tokenizer::Decode(absl::Span<const int32_t> ids,
                                              bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    const std::string* token = TokenOf(id);
    if (token == nullptr) {
      return absl::InvalidArgumentError(Cat("token id ", id,
                                                     " is not in the vocabulary (size ",
                                                     vocab_size_, ")"));
    }
    if (skip_special_tokens && IsSpecial(id)) continue;
    tokens.push_back(*token);
  }
  return DecodeTokens(std::move(tokens));
}

// --- StreamDecoder ---------------------------------------------------------------------------

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}

absl::StatusOr<std::string> StreamDecoder::DecodeWindow() const {
  std::vector<std::string> tokens;
  tokens.reserve(pending_.size() + 1);
  if (context_) tokens.push_back(*tokenizer_.TokenOf(*context_));
  for (int32_t id : pending_) tokens.push_back(*tokenizer_.TokenOf(id));
  return tokenizer_.DecodeTokens(std::move(tokens));
}

absl::StatusOr<std::string> StreamDecoder::Step(int32_t id) {
  const std::string* token = tokenizer_.TokenOf(id);
  if (token == nullptr) {
    return absl::InvalidArgumentError(Cat("token id ", id,
                                                   " is not in the vocabulary (size ",
                                                   tokenizer_.vocab_size(), ")"));
  }
  if (skip_special_tokens_ && tokenizer_.IsSpecial(id)) return std::string();
  pending_.push_back(id);
  // A byte-fallback run renders as UTF-8 or as one U+FFFD per byte depending on how it ends.
  if (tokenizer_.decoder_has_byte_fallback() && ByteFallbackValue(*token) >= 0) return std::string();
  ASSIGN_OR_RETURN(std::string text, DecodeWindow());
  // A trailing U+FFFD may be an incomplete character that the next token completes.
  if (text.size() >= kReplacementChar.size() &&
      std::string_view(text).substr(text.size() - kReplacementChar.size()) == kReplacementChar) {
    return std::string();
  }
  std::string piece = text.substr(std::min(context_text_.size(), text.size()));
  context_ = id;
  pending_.clear();
  ASSIGN_OR_RETURN(context_text_, DecodeWindow());
  return piece;
}

absl::StatusOr<std::string> StreamDecoder::Finish() {
  if (pending_.empty()) return std::string();
  ASSIGN_OR_RETURN(std::string text, DecodeWindow());
  std::string piece = text.substr(std::min(context_text_.size(), text.size()));
  context_ = pending_.back();
  pending_.clear();
  ASSIGN_OR_RETURN(context_text_, DecodeWindow());
  return piece;
}

}  // namespace loramux::text
