#include "train/train_data.h"

#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace loramux {

namespace {

using Json = nlohmann::ordered_json;

absl::Status LineError(const std::string& where, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", what));
}

absl::StatusOr<std::vector<int64_t>> TokenIds(const Json& line, const char* field, int64_t vocab,
                                              const std::string& where) {
  const auto it = line.find(field);
  if (it == line.end() || !it->is_array())
    return LineError(where, absl::StrCat("\"", field, "\" must be an array of token ids"));
  std::vector<int64_t> ids;
  for (const Json& id : *it) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= vocab) {
      return LineError(where, absl::StrCat("\"", field, "\" holds ", id.dump(),
                                           "; token ids are integers in [0, ", vocab, ")"));
    }
    ids.push_back(id.get<int64_t>());
  }
  return ids;
}

std::vector<int64_t> Widen(const std::vector<int32_t>& ids) { return {ids.begin(), ids.end()}; }

absl::StatusOr<std::string> TextField(const Json& line, const char* field,
                                      const std::string& where) {
  const auto it = line.find(field);
  if (it == line.end() || !it->is_string())
    return LineError(where, absl::StrCat("\"", field, "\" must be a string"));
  return it->get<std::string>();
}

absl::StatusOr<TrainExample> FromLine(const Json& line, const ModelConfig& config,
                                      const TextCodec& codec, const std::string& where) {
  TrainExample ex;
  std::vector<int64_t> completion;
  if (line.contains("prompt_token_ids") || line.contains("completion_token_ids")) {
    ASSIGN_OR_RETURN(ex.tokens, TokenIds(line, "prompt_token_ids", config.vocab_size, where));
    ASSIGN_OR_RETURN(completion, TokenIds(line, "completion_token_ids", config.vocab_size, where));
  } else if (line.contains("messages") || line.contains("prompt")) {
    if (!codec.has_tokenizer()) {
      return LineError(
          where,
          "text examples need the model's tokenizer.json; this model has none, so give "
          "prompt_token_ids and completion_token_ids");
    }
    if (line.contains("messages")) {
      const Json& messages = line["messages"];
      if (!messages.is_array() || messages.empty() || !messages.back().is_object() ||
          messages.back().value("role", "") != "assistant") {
        return LineError(
            where,
            "\"messages\" must be a non-empty array whose last message has role \"assistant\"");
      }
      PromptInput prompt;
      prompt.messages = Json(messages.begin(), messages.end() - 1);
      prompt.add_generation_prompt = true;
      PromptInput full;
      full.messages = messages;
      full.add_generation_prompt = false;
      auto head = codec.Encode(prompt);
      if (!head.ok()) return LineError(where, std::string(head.status().message()));
      auto whole = codec.Encode(full);
      if (!whole.ok()) return LineError(where, std::string(whole.status().message()));
      if (whole->text.compare(0, head->text.size(), head->text) != 0) {
        return LineError(
            where,
            "the chat template's render of the conversation does not start with its render "
            "before the last message, so the completion cannot be told apart");
      }
      ex.tokens = Widen(head->token_ids);
      auto rest = codec.tokenizer()->Encode(whole->text.substr(head->text.size()),
                                            /*add_special_tokens=*/false);
      if (!rest.ok()) return LineError(where, std::string(rest.status().message()));
      completion = Widen(*rest);
    } else {
      ASSIGN_OR_RETURN(std::string prompt_text, TextField(line, "prompt", where));
      ASSIGN_OR_RETURN(std::string completion_text, TextField(line, "completion", where));
      auto p = codec.tokenizer()->Encode(prompt_text, /*add_special_tokens=*/true);
      if (!p.ok()) return LineError(where, std::string(p.status().message()));
      auto c = codec.tokenizer()->Encode(completion_text, /*add_special_tokens=*/false);
      if (!c.ok()) return LineError(where, std::string(c.status().message()));
      ex.tokens = Widen(*p);
      completion = Widen(*c);
      if (!config.eos_token_ids.empty()) completion.push_back(config.eos_token_ids[0]);
    }
  } else {
    return LineError(where,
                     "expected {\"prompt\", \"completion\"}, {\"messages\"} or "
                     "{\"prompt_token_ids\", \"completion_token_ids\"}");
  }
  if (completion.empty())
    return LineError(where, "the completion is empty: there is nothing to learn");
  if (ex.tokens.empty()) {
    return LineError(
        where,
        "the prompt has no tokens; the first completion token is predicted from the last "
        "prompt token, so give at least one (e.g. BOS)");
  }
  ex.prompt_length = static_cast<int64_t>(ex.tokens.size());
  ex.tokens.insert(ex.tokens.end(), completion.begin(), completion.end());
  return ex;
}

}  // namespace

absl::StatusOr<std::vector<TrainExample>> ReadTrainData(const std::string& path,
                                                        const ModelConfig& config,
                                                        const TextCodec& codec,
                                                        int64_t max_tokens) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read the training data ", path));
  std::vector<TrainExample> examples;
  std::string text;
  for (int64_t number = 1; std::getline(in, text); ++number) {
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = absl::StrCat(path, ":", number);
    Json line = Json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (line.is_discarded() || !line.is_object()) return LineError(where, "not a JSON object");
    ASSIGN_OR_RETURN(TrainExample ex, FromLine(line, config, codec, where));
    if (ex.prompt_length + 1 > max_tokens) {
      return LineError(where, absl::StrCat("the prompt has ", ex.prompt_length,
                                           " tokens, leaving no room for the "
                                           "completion in ",
                                           max_tokens, " (raise --max_seq_len or shorten it)"));
    }
    if (static_cast<int64_t>(ex.tokens.size()) > max_tokens) ex.tokens.resize(max_tokens);
    examples.push_back(std::move(ex));
  }
  if (examples.empty()) return absl::InvalidArgumentError(absl::StrCat(path, " holds no examples"));
  return examples;
}

}  // namespace loramux
