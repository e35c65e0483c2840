#include "server/openai_api.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"

namespace loramux {
namespace {

constexpr char kParamPayload[] = "type.loramux/openai.param";
// Prompt ids, stop lists, messages (the body is bounded too).
constexpr size_t kMaxBodyItems = 1 << 20;
constexpr int64_t kMaxTopLogprobs = 20;

// Fields every endpoint reads, and each endpoint's own (space-separated).
constexpr char kCommonFields[] =
    "model max_tokens max_completion_tokens temperature top_p top_k seed stop n stream "
    "stream_options user presence_penalty frequency_penalty logit_bias stop_token_ids ignore_eos "
    "adapter_scale return_token_ids logprobs";
constexpr char kCompletionsFields[] = "prompt echo suffix best_of add_special_tokens";
constexpr char kChatFields[] =
    "messages top_logprobs tools tool_choice functions function_call response_format "
    "parallel_tool_calls chat_template_kwargs add_generation_prompt";

const absl::flat_hash_set<std::string>& KnownFields(OpenAiEndpoint endpoint) {
  auto with = [](absl::string_view own) {
    return new absl::flat_hash_set<std::string>(
        absl::StrSplit(absl::StrCat(kCommonFields, " ", own), ' '));
  };
  static const auto* const kCompletions = with(kCompletionsFields);
  static const auto* const kChat = with(kChatFields);
  return endpoint == OpenAiEndpoint::kCompletions ? *kCompletions : *kChat;
}

absl::Status Refuse(absl::string_view field, absl::string_view why) {
  return WithParam(absl::InvalidArgumentError(absl::StrCat("\"", field, "\": ", why)), field);
}

// Reads a field through JsonValue, tagging its error with the field as "param".
template <typename T>
absl::StatusOr<T> Tagged(absl::StatusOr<T> value, absl::string_view field) {
  if (!value.ok()) return WithParam(value.status(), field);
  return value;
}

// Refuses a field unless it is absent or has the value that asks for nothing.
absl::Status RequireNeutral(const JsonValue& root, const Json& body) {
  struct Neutral {
    const char* field;
    const char* why;
    bool (*ok)(const Json&);
  };
  static constexpr Neutral kNeutral[] = {
      {"n", "only n = 1 is served; send one request per completion",
       [](const Json& v) { return v.is_number_integer() && v.get<int64_t>() == 1; }},
      {"best_of", "only best_of = 1 is served",
       [](const Json& v) { return v.is_number_integer() && v.get<int64_t>() == 1; }},
      {"presence_penalty", "penalties are not supported; leave it 0",
       [](const Json& v) { return v.is_number() && v.get<double>() == 0.0; }},
      {"frequency_penalty", "penalties are not supported; leave it 0",
       [](const Json& v) { return v.is_number() && v.get<double>() == 0.0; }},
      {"logit_bias", "logit_bias is not supported",
       [](const Json& v) { return v.is_object() && v.empty(); }},
      {"echo", "echo is not supported",
       [](const Json& v) { return v.is_boolean() && !v.get<bool>(); }},
      {"suffix", "suffix (insertion) is not supported",
       [](const Json& v) { return v.is_string() && v.get<std::string>().empty(); }},
      {"tools", "tool calling is not supported",
       [](const Json& v) { return v.is_array() && v.empty(); }},
      {"functions", "function calling is not supported",
       [](const Json& v) { return v.is_array() && v.empty(); }},
      {"tool_choice", "tool calling is not supported; leave it \"none\"",
       [](const Json& v) { return v.is_string() && v.get<std::string>() == "none"; }},
      {"function_call", "function calling is not supported; leave it \"none\"",
       [](const Json& v) { return v.is_string() && v.get<std::string>() == "none"; }},
      {"response_format", "only {\"type\": \"text\"} is served (no JSON mode or schemas)",
       [](const Json& v) {
         return v.is_object() && v.size() == 1 && v.value("type", Json()) == "text";
       }},
  };
  for (const Neutral& n : kNeutral) {
    if (!root[n.field].present()) continue;
    if (!n.ok(body.at(n.field))) return Refuse(n.field, n.why);
  }
  return absl::OkStatus();
}

// "stop": a string or a list of strings.
absl::Status ReadStop(const JsonValue& stop, std::vector<std::string>& out) {
  if (!stop.present()) return absl::OkStatus();
  if (stop.is_string()) {
    ASSIGN_OR_RETURN(std::string one, Tagged(stop.String(), "stop"));
    out.push_back(std::move(one));
    return absl::OkStatus();
  }
  if (!stop.is_array()) return Refuse("stop", "must be a string or a list of strings");
  ASSIGN_OR_RETURN(std::vector<JsonValue> items, Tagged(stop.Items(kMaxBodyItems), "stop"));
  for (const JsonValue& item : items) {
    ASSIGN_OR_RETURN(std::string s, Tagged(item.String(), "stop"));
    out.push_back(std::move(s));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> ReadTokenIds(const JsonValue& list, absl::string_view field) {
  ASSIGN_OR_RETURN(std::vector<JsonValue> items, Tagged(list.Items(kMaxBodyItems), field));
  std::vector<int32_t> ids;
  ids.reserve(items.size());
  for (const JsonValue& item : items) {
    ASSIGN_OR_RETURN(int64_t id, Tagged(item.Int(), field));
    if (id < 0 || id > std::numeric_limits<int32_t>::max()) {
      return Refuse(field, absl::StrCat("token id ", id, " is not a vocabulary index"));
    }
    ids.push_back(static_cast<int32_t>(id));
  }
  return ids;
}

// Completions' "prompt": a string or a list of token ids, or a list holding one of either.
absl::Status ReadCompletionPrompt(const JsonValue& root, OpenAiRequest& out) {
  const JsonValue prompt = root["prompt"];
  if (!prompt.present())
    return Refuse("prompt", "is missing; give a string or a list of token ids");
  ASSIGN_OR_RETURN(bool add_special,
                   Tagged(root["add_special_tokens"].Bool(true), "add_special_tokens"));
  JsonValue one = prompt;
  if (prompt.is_array() && !prompt.raw()->empty() && !(*prompt.raw())[0].is_number()) {
    if (prompt.raw()->size() != 1) {
      return Refuse("prompt", "batched prompts are not served; send one prompt per request");
    }
    ASSIGN_OR_RETURN(std::vector<JsonValue> items, Tagged(prompt.Items(1), "prompt"));
    one = items[0];
  }
  if (one.is_string()) {
    PromptInput input;
    ASSIGN_OR_RETURN(input.text, Tagged(one.String(), "prompt"));
    input.add_special_tokens = add_special;
    out.text_prompt = std::move(input);
    return absl::OkStatus();
  }
  if (!one.is_array()) return Refuse("prompt", "must be a string or a list of token ids");
  ASSIGN_OR_RETURN(out.prompt_token_ids, ReadTokenIds(one, "prompt"));
  return absl::OkStatus();
}

// One message's content for the chat template: a string (text parts joined with newlines, as
// vLLM does for templates that expect a string).
absl::Status FlattenContent(Json& message, size_t index) {
  auto it = message.find("content");
  if (it == message.end() || it->is_null() || it->is_string()) return absl::OkStatus();
  const std::string field = absl::StrCat("messages[", index, "].content");
  if (!it->is_array()) return Refuse(field, "must be a string or a list of content parts");
  std::vector<std::string> texts;
  for (const Json& part : *it) {
    if (!part.is_object() || part.value("type", Json()) != "text" || !part.contains("text") ||
        !part["text"].is_string()) {
      return Refuse(field, "only text parts ({\"type\": \"text\", \"text\": ...}) are served");
    }
    texts.push_back(part["text"].get<std::string>());
  }
  *it = absl::StrJoin(texts, "\n");
  return absl::OkStatus();
}

absl::Status ReadMessages(const JsonValue& root, OpenAiRequest& out) {
  const JsonValue messages = root["messages"];
  if (!messages.is_array() || messages.raw()->empty()) {
    return Refuse("messages", "must be a non-empty list of {\"role\", \"content\"} objects");
  }
  if (messages.raw()->size() > kMaxBodyItems) return Refuse("messages", "has too many messages");
  Json copy = *messages.raw();
  for (size_t i = 0; i < copy.size(); ++i) {
    Json& m = copy[i];
    const std::string field = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) return Refuse(field, "must be an object with \"role\" and \"content\"");
    if (!m.contains("role") || !m["role"].is_string())
      return Refuse(field + ".role", "must be a string");
    RETURN_IF_ERROR(FlattenContent(m, i));
  }
  PromptInput input;
  input.messages = std::move(copy);
  ASSIGN_OR_RETURN(input.add_generation_prompt,
                   Tagged(root["add_generation_prompt"].Bool(true), "add_generation_prompt"));
  const JsonValue kwargs = root["chat_template_kwargs"];
  if (kwargs.present()) {
    if (!kwargs.is_object()) return Refuse("chat_template_kwargs", "must be an object");
    input.chat_template_kwargs = *kwargs.raw();
  }
  out.text_prompt = std::move(input);
  return absl::OkStatus();
}

// Chat: "logprobs": bool and "top_logprobs": 0..20 (needs logprobs). Completions: "logprobs":
// the number of alternatives, 0..20 (OpenAI allows 5; vLLM 20).
absl::Status ReadLogprobs(const JsonValue& root, OpenAiRequest& out) {
  int64_t top = 0;
  if (out.endpoint == OpenAiEndpoint::kChatCompletions) {
    ASSIGN_OR_RETURN(out.logprobs, Tagged(root["logprobs"].Bool(false), "logprobs"));
    ASSIGN_OR_RETURN(top, Tagged(root["top_logprobs"].Int(0), "top_logprobs"));
    if (top != 0 && !out.logprobs) return Refuse("top_logprobs", "needs \"logprobs\": true");
  } else if (root["logprobs"].present()) {
    ASSIGN_OR_RETURN(top, Tagged(root["logprobs"].Int(), "logprobs"));
    out.logprobs = true;
  }
  const char* field =
      out.endpoint == OpenAiEndpoint::kChatCompletions ? "top_logprobs" : "logprobs";
  if (top < 0 || top > kMaxTopLogprobs)
    return Refuse(field, absl::StrCat("must be in [0, ", kMaxTopLogprobs, "]"));
  out.top_logprobs = static_cast<int32_t>(top);
  return absl::OkStatus();
}

absl::Status ReadSampling(const JsonValue& root, OpenAiRequest& out) {
  SamplingParams& s = out.engine.sampling;
  ASSIGN_OR_RETURN(const int64_t max_completion,
                   Tagged(root["max_completion_tokens"].Int(-1), "max_completion_tokens"));
  ASSIGN_OR_RETURN(int64_t max_tokens,
                   Tagged(root["max_tokens"].Int(max_completion), "max_tokens"));
  if (max_tokens != -1) {
    if (max_tokens < 1 || max_tokens > std::numeric_limits<int32_t>::max()) {
      return Refuse(root["max_tokens"].present() ? "max_tokens" : "max_completion_tokens",
                    absl::StrCat("is ", max_tokens, "; use a positive count"));
    }
    s.max_new_tokens = static_cast<int32_t>(max_tokens);
    out.max_tokens_given = true;
  }
  ASSIGN_OR_RETURN(double temperature, Tagged(root["temperature"].Number(1.0), "temperature"));
  if (temperature < 0 || temperature > 2) return Refuse("temperature", "must be in [0, 2]");
  s.temperature = static_cast<float>(temperature);
  ASSIGN_OR_RETURN(double top_p, Tagged(root["top_p"].Number(1.0), "top_p"));
  if (!(top_p > 0 && top_p <= 1)) return Refuse("top_p", "must be in (0, 1]");
  s.top_p = static_cast<float>(top_p);
  ASSIGN_OR_RETURN(int64_t top_k, Tagged(root["top_k"].Int(0), "top_k"));
  if (top_k < -1 || top_k > std::numeric_limits<int32_t>::max()) {
    return Refuse("top_k", "must be -1 or 0 (off) or a positive count");
  }
  s.top_k = top_k < 0 ? 0 : static_cast<int32_t>(top_k);
  if (root["seed"].present()) {
    ASSIGN_OR_RETURN(int64_t seed, Tagged(root["seed"].Int(), "seed"));
    s.seed = static_cast<uint64_t>(seed);
    s.has_seed = true;
  }
  return absl::OkStatus();
}

absl::Status ReadStreamOptions(const JsonValue& root, OpenAiRequest& out) {
  ASSIGN_OR_RETURN(out.stream, Tagged(root["stream"].Bool(false), "stream"));
  const JsonValue options = root["stream_options"];
  if (!options.present()) return absl::OkStatus();
  if (!out.stream) return Refuse("stream_options", "applies only with \"stream\": true");
  ASSIGN_OR_RETURN(auto entries, Tagged(options.Entries(8), "stream_options"));
  for (const auto& [key, value] : entries) {
    if (key != "include_usage") {
      return Refuse("stream_options",
                    absl::StrCat("\"", key, "\" is not a stream option served here"));
    }
    ASSIGN_OR_RETURN(out.include_usage, Tagged(value.Bool(), "stream_options.include_usage"));
  }
  return absl::OkStatus();
}

const char* ErrorType(int http_status) {
  switch (http_status) {
    case 400: return "invalid_request_error";
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 429: return "rate_limit_error";
    case 503: return "service_unavailable_error";
    default: return http_status >= 500 ? "server_error" : "invalid_request_error";
  }
}

Json UsageJson(const loramux::Usage& usage) {
  return {{"prompt_tokens", usage.prompt_tokens},
          {"completion_tokens", usage.generated_tokens},
          {"total_tokens", usage.prompt_tokens + usage.generated_tokens}};
}

Json Fingerprint(const ResponseHeader& header) {
  return header.system_fingerprint.empty() ? Json() : Json(header.system_fingerprint);
}

// A token's UTF-8 bytes, as OpenAI lists them.
Json Bytes(const std::string& token) {
  Json bytes = Json::array();
  for (unsigned char c : token) bytes.push_back(static_cast<int>(c));
  return bytes;
}

// Chat logprobs: {"content": [{"token", "logprob", "bytes", "top_logprobs"}...]}.
Json ChatLogprobs(const std::vector<TokenLogprob>& logprobs) {
  Json content = Json::array();
  for (const TokenLogprob& t : logprobs) {
    Json top = Json::array();
    for (const auto& [token, logprob] : t.top) {
      top.push_back({{"token", token}, {"logprob", logprob}, {"bytes", Bytes(token)}});
    }
    content.push_back({{"token", t.token},
                       {"logprob", t.logprob},
                       {"bytes", Bytes(t.token)},
                       {"top_logprobs", std::move(top)}});
  }
  return {{"content", std::move(content)}};
}

// Completions logprobs: {"tokens", "token_logprobs", "top_logprobs", "text_offset"}; offsets
// count from `offset`, the text already sent.
Json CompletionLogprobs(const std::vector<TokenLogprob>& logprobs, size_t offset, bool with_top) {
  Json tokens = Json::array(), values = Json::array(), offsets = Json::array(),
       tops = Json::array();
  for (const TokenLogprob& t : logprobs) {
    tokens.push_back(t.token);
    values.push_back(t.logprob);
    offsets.push_back(offset);
    offset += t.token.size();
    Json top = Json::object();
    for (const auto& [token, logprob] : t.top) {
      if (!top.contains(token)) top[token] = logprob;  // two ids with one text: the likelier
    }
    tops.push_back(std::move(top));
  }
  return {{"tokens", std::move(tokens)},
          {"token_logprobs", std::move(values)},
          {"top_logprobs", with_top ? std::move(tops) : Json()},
          {"text_offset", std::move(offsets)}};
}

bool IsChat(const OpenAiRequest& request) {
  return request.endpoint == OpenAiEndpoint::kChatCompletions;
}

Json Logprobs(const OpenAiRequest& request, const CompletionPiece& piece) {
  if (!request.logprobs) return nullptr;
  return IsChat(request) ? ChatLogprobs(piece.logprobs)
                         : CompletionLogprobs(piece.logprobs, 0, request.top_logprobs > 0);
}

Json ChunkShell(const OpenAiRequest& request, const ResponseHeader& header) {
  Json chunk = {{"id", header.id},
                {"object", IsChat(request) ? "chat.completion.chunk" : "text_completion"},
                {"created", header.created},
                {"model", header.model},
                {"system_fingerprint", Fingerprint(header)},
                {"choices", Json::array()}};
  if (request.include_usage) chunk["usage"] = nullptr;
  return chunk;
}

}  // namespace

absl::Status WithParam(absl::Status status, absl::string_view param) {
  if (!status.ok() && !status.GetPayload(kParamPayload).has_value()) {
    status.SetPayload(kParamPayload, absl::Cord(param));
  }
  return status;
}

std::string ErrorParam(const absl::Status& status) {
  const auto param = status.GetPayload(kParamPayload);
  return param.has_value() ? std::string(*param) : std::string();
}

absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(OpenAiEndpoint endpoint, absl::string_view body) {
  ASSIGN_OR_RETURN(const Json doc, JsonValue::ParseObject(body, "request body", body.size()));
  const JsonValue root(doc, "request body");
  const auto& known = KnownFields(endpoint);
  for (const auto& item : doc.items()) {
    if (!known.contains(item.key())) {
      return Refuse(item.key(), "unrecognized request argument");
    }
  }
  RETURN_IF_ERROR(RequireNeutral(root, doc));
  OpenAiRequest out;
  out.endpoint = endpoint;
  out.engine.kind = InferenceRequest::Kind::kGenerate;
  ASSIGN_OR_RETURN(out.model, Tagged(root["model"].String(), "model"));
  if (endpoint == OpenAiEndpoint::kCompletions) {
    RETURN_IF_ERROR(ReadCompletionPrompt(root, out));
  } else {
    RETURN_IF_ERROR(ReadMessages(root, out));
  }
  RETURN_IF_ERROR(ReadSampling(root, out));
  RETURN_IF_ERROR(ReadStop(root["stop"], out.engine.stop));
  if (root["stop_token_ids"].present()) {
    ASSIGN_OR_RETURN(out.engine.stop_token_ids,
                     ReadTokenIds(root["stop_token_ids"], "stop_token_ids"));
  }
  ASSIGN_OR_RETURN(out.engine.ignore_eos, Tagged(root["ignore_eos"].Bool(false), "ignore_eos"));
  ASSIGN_OR_RETURN(out.engine.adapter_scale,
                   Tagged(root["adapter_scale"].Number(1.0), "adapter_scale"));
  RETURN_IF_ERROR(ReadLogprobs(root, out));
  out.engine.logprobs = out.logprobs;
  out.engine.top_logprobs = out.top_logprobs;
  RETURN_IF_ERROR(ReadStreamOptions(root, out));
  ASSIGN_OR_RETURN(out.return_token_ids,
                   Tagged(root["return_token_ids"].Bool(false), "return_token_ids"));
  if (root["user"].present() && !root["user"].is_string())
    return Refuse("user", "must be a string");
  if (root["parallel_tool_calls"].present() && !root["parallel_tool_calls"].raw()->is_boolean()) {
    return Refuse("parallel_tool_calls", "must be a boolean");
  }
  return out;
}

int32_t DefaultMaxTokens(const OpenAiRequest& request, int32_t server_default,
                         int64_t context_tokens, int64_t prompt_tokens, int32_t limit) {
  if (request.endpoint == OpenAiEndpoint::kCompletions) return server_default;
  const int64_t room = std::max<int64_t>(1, context_tokens - prompt_tokens);
  return static_cast<int32_t>(std::min<int64_t>(room, limit));
}

void CompletionPiece::Append(const CompletionPiece& more) {
  text += more.text;
  token_ids.insert(token_ids.end(), more.token_ids.begin(), more.token_ids.end());
  logprobs.insert(logprobs.end(), more.logprobs.begin(), more.logprobs.end());
}

const char* FinishReasonName(FinishReason reason) {
  return reason == FinishReason::kLength ? "length" : "stop";
}

Json CompletionResponse(const OpenAiRequest& request, const ResponseHeader& header,
                        const std::vector<int32_t>& prompt_token_ids, const CompletionPiece& output,
                        FinishReason reason, const Usage& usage) {
  Json choice = {{"index", 0}};
  if (IsChat(request)) {
    choice["message"] = {{"role", "assistant"}, {"content", output.text}};
  } else {
    choice["text"] = output.text;
  }
  choice["logprobs"] = Logprobs(request, output);
  choice["finish_reason"] = FinishReasonName(reason);
  if (request.return_token_ids) choice["token_ids"] = output.token_ids;
  Json response = {{"id", header.id},
                   {"object", IsChat(request) ? "chat.completion" : "text_completion"},
                   {"created", header.created},
                   {"model", header.model},
                   {"system_fingerprint", Fingerprint(header)},
                   {"choices", Json::array({std::move(choice)})},
                   {"usage", UsageJson(usage)}};
  if (request.return_token_ids) response["prompt_token_ids"] = prompt_token_ids;
  return response;
}

Json FirstChatChunk(const OpenAiRequest& request, const ResponseHeader& header) {
  Json chunk = ChunkShell(request, header);
  chunk["choices"].push_back({{"index", 0},
                              {"delta", {{"role", "assistant"}, {"content", ""}}},
                              {"logprobs", nullptr},
                              {"finish_reason", nullptr}});
  return chunk;
}

Json ChoiceChunk(const OpenAiRequest& request, const ResponseHeader& header,
                 const CompletionPiece& piece, std::optional<FinishReason> reason) {
  Json choice = {{"index", 0}};
  if (IsChat(request)) {
    choice["delta"] = piece.text.empty() && reason ? Json::object() : Json{{"content", piece.text}};
  } else {
    choice["text"] = piece.text;
  }
  choice["logprobs"] = Logprobs(request, piece);
  choice["finish_reason"] = reason ? Json(FinishReasonName(*reason)) : Json();
  if (request.return_token_ids) choice["token_ids"] = piece.token_ids;
  Json chunk = ChunkShell(request, header);
  chunk["choices"].push_back(std::move(choice));
  return chunk;
}

Json UsageChunk(const OpenAiRequest& request, const ResponseHeader& header,
                const loramux::Usage& usage) {
  Json chunk = ChunkShell(request, header);
  chunk["usage"] = UsageJson(usage);
  return chunk;
}

Json ModelList(const ServedModel& base, const std::vector<ServedModel>& adapters,
               int64_t max_model_len) {
  auto entry = [&](const ServedModel& m, Json parent) {
    return Json{{"id", m.id},
                {"object", "model"},
                {"created", m.created},
                {"owned_by", "loramux"},
                {"root", m.id},
                {"parent", std::move(parent)},
                {"max_model_len", max_model_len}};
  };
  Json data = Json::array({entry(base, nullptr)});
  for (const ServedModel& a : adapters) data.push_back(entry(a, base.id));
  return {{"object", "list"}, {"data", std::move(data)}};
}

int HttpStatusFor(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk: return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange: return 400;
    case absl::StatusCode::kUnauthenticated: return 401;
    case absl::StatusCode::kPermissionDenied: return 403;
    case absl::StatusCode::kNotFound: return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted: return 409;
    case absl::StatusCode::kResourceExhausted: return 429;
    case absl::StatusCode::kCancelled: return 499;
    case absl::StatusCode::kUnimplemented: return 501;
    case absl::StatusCode::kUnavailable: return 503;
    case absl::StatusCode::kDeadlineExceeded: return 504;
    default: return 500;
  }
}

Json ErrorBody(const absl::Status& status) {
  const int http = HttpStatusFor(status.code());
  const std::string param = ErrorParam(status);
  Json code = nullptr;
  if (status.code() == absl::StatusCode::kNotFound && param == "model") code = "model_not_found";
  return {{"error",
           {{"message", std::string(status.message())},
            {"type", ErrorType(http)},
            {"param", param.empty() ? Json() : Json(param)},
            {"code", std::move(code)}}}};
}

}  // namespace loramux
