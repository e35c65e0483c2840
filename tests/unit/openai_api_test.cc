// The OpenAI request/response mapping, JSON in and JSON out: what each field becomes in the
// engine's request, what is refused (and named as `param`), and the exact response shapes the
// SDKs parse.
#include "server/openai_api.h"
#include "tests/status_matchers.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace loramux {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

OpenAiRequest ParseOk(OpenAiEndpoint endpoint, const std::string& body) {
  absl::StatusOr<OpenAiRequest> r = ParseOpenAiRequest(endpoint, body);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : OpenAiRequest();
}

// The refusal of `body`: INVALID_ARGUMENT naming `param`.
void ExpectRefused(OpenAiEndpoint endpoint, const std::string& body, const std::string& param,
                   const std::string& says = "") {
  absl::StatusOr<OpenAiRequest> r = ParseOpenAiRequest(endpoint, body);
  ASSERT_FALSE(r.ok()) << body;
  EXPECT_THAT(r.status(), StatusIs(absl::StatusCode::kInvalidArgument)) << r.status();
  EXPECT_EQ(ErrorParam(r.status()), param) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr(says));
  EXPECT_EQ(HttpStatusFor(r.status().code()), 400);
}

constexpr auto kCompletions = OpenAiEndpoint::kCompletions;
constexpr auto kChat = OpenAiEndpoint::kChatCompletions;

TEST(OpenAiParseTest, CompletionFieldsBecomeTheEngineRequest) {
  const OpenAiRequest r =
      ParseOk(kCompletions, R"({"model": "sql", "prompt": "SELECT", "max_tokens": 7,
      "temperature": 0.5, "top_p": 0.9, "top_k": 40, "seed": 11, "stop": ["\n", ";"], "n": 1,
      "stream": true, "stream_options": {"include_usage": true}, "user": "u1", "logprobs": 0,
      "stop_token_ids": [5], "ignore_eos": true, "adapter_scale": 0.5, "return_token_ids": true})");
  EXPECT_EQ(r.model, "sql");
  ASSERT_TRUE(r.text_prompt.has_value());
  EXPECT_EQ(r.text_prompt->text, "SELECT");
  EXPECT_TRUE(r.text_prompt->add_special_tokens);
  EXPECT_TRUE(r.max_tokens_given);
  EXPECT_EQ(r.engine.sampling.max_new_tokens, 7);
  EXPECT_FLOAT_EQ(r.engine.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.engine.sampling.top_p, 0.9f);
  EXPECT_EQ(r.engine.sampling.top_k, 40);
  EXPECT_TRUE(r.engine.sampling.has_seed);
  EXPECT_EQ(r.engine.sampling.seed, 11u);
  EXPECT_THAT(r.engine.stop, ElementsAre("\n", ";"));
  EXPECT_THAT(r.engine.stop_token_ids, ElementsAre(5));
  EXPECT_TRUE(r.engine.ignore_eos);
  EXPECT_DOUBLE_EQ(r.engine.adapter_scale, 0.5);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_TRUE(r.logprobs);
  EXPECT_TRUE(r.engine.logprobs);
  EXPECT_TRUE(r.return_token_ids);
}

TEST(OpenAiParseTest, DefaultsAreOpenAis) {
  const OpenAiRequest r =
      ParseOk(kCompletions, R"({"model": "m", "prompt": "x", "stop": null, "seed": null})");
  EXPECT_FALSE(r.max_tokens_given);
  EXPECT_FLOAT_EQ(r.engine.sampling.temperature, 1.0f);  // OpenAI samples unless told otherwise
  EXPECT_FLOAT_EQ(r.engine.sampling.top_p, 1.0f);
  EXPECT_FALSE(r.engine.sampling.has_seed);
  EXPECT_TRUE(r.engine.stop.empty());
  EXPECT_FALSE(r.stream);
  EXPECT_FALSE(r.logprobs);
  EXPECT_EQ(DefaultMaxTokens(r, 16, 4096, 10, 4096), 16);
}

TEST(OpenAiParseTest, PromptsAsTextOrTokenIds) {
  EXPECT_THAT(ParseOk(kCompletions, R"({"model": "m", "prompt": [1, 2, 3]})").prompt_token_ids,
              ElementsAre(1, 2, 3));
  EXPECT_THAT(ParseOk(kCompletions, R"({"model": "m", "prompt": [[4, 5]]})").prompt_token_ids,
              ElementsAre(4, 5));
  EXPECT_EQ(ParseOk(kCompletions, R"({"model": "m", "prompt": ["hi"]})").text_prompt->text, "hi");
  EXPECT_FALSE(
      ParseOk(kCompletions, R"({"model": "m", "prompt": "hi", "add_special_tokens": false})")
          .text_prompt->add_special_tokens);
  ExpectRefused(kCompletions, R"({"model": "m", "prompt": ["a", "b"]})", "prompt",
                "one prompt per request");
  ExpectRefused(kCompletions, R"({"model": "m", "prompt": [[1], [2]]})", "prompt",
                "one prompt per request");
  ExpectRefused(kCompletions, R"({"model": "m", "prompt": [1, -2]})", "prompt", "-2");
  ExpectRefused(kCompletions, R"({"model": "m", "prompt": [1, 2.5]})", "prompt");
  ExpectRefused(kCompletions, R"({"model": "m", "prompt": {"text": "x"}})", "prompt");
  ExpectRefused(kCompletions, R"({"model": "m"})", "prompt", "missing");
}

TEST(OpenAiParseTest, ChatMessagesGoToTheTemplate) {
  const OpenAiRequest r = ParseOk(kChat, R"({"model": "m", "messages": [
      {"role": "system", "content": "Be brief."},
      {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
      "max_completion_tokens": 9, "logprobs": true, "top_logprobs": 0,
      "chat_template_kwargs": {"enable_thinking": false}, "tools": [], "tool_choice": "none",
      "response_format": {"type": "text"}})");
  ASSERT_TRUE(r.text_prompt.has_value() && r.text_prompt->messages.has_value());
  const Json& messages = *r.text_prompt->messages;
  EXPECT_EQ(messages[0]["content"], "Be brief.");
  EXPECT_EQ(messages[1]["content"], "a\nb");  // text parts joined, as vLLM does
  EXPECT_TRUE(r.text_prompt->add_generation_prompt);
  EXPECT_EQ(r.text_prompt->chat_template_kwargs["enable_thinking"], false);
  EXPECT_EQ(r.engine.sampling.max_new_tokens, 9);
  EXPECT_TRUE(r.logprobs);
  EXPECT_EQ(
      ParseOk(kChat,
              R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "logprobs": true,
                              "top_logprobs": 5})")
          .engine.top_logprobs,
      5);
  EXPECT_EQ(
      ParseOk(kCompletions, R"({"model": "m", "prompt": "x", "logprobs": 3})").engine.top_logprobs,
      3);
  // Without max_tokens a reply may fill the context, within the server's limit.
  const OpenAiRequest open =
      ParseOk(kChat, R"({"model": "m", "messages": [{"role": "user", "content": "x"}]})");
  EXPECT_EQ(DefaultMaxTokens(open, 16, 512, 500, 4096), 12);
  EXPECT_EQ(DefaultMaxTokens(open, 16, 100000, 10, 4096), 4096);
}

TEST(OpenAiParseTest, WhatLoramuxCannotHonourIsRefusedNeverIgnored) {
  const std::string chat = R"({"model": "m", "messages": [{"role": "user", "content": "x"}], )";
  ExpectRefused(kChat, chat + R"("n": 2})", "n", "n = 1");
  ExpectRefused(kChat, chat + R"("tools": [{"type": "function", "function": {"name": "f"}}]})",
                "tools", "tool");
  ExpectRefused(kChat, chat + R"("tool_choice": "auto"})", "tool_choice");
  ExpectRefused(kChat, chat + R"("functions": [{"name": "f"}]})", "functions");
  ExpectRefused(kChat, chat + R"("response_format": {"type": "json_object"}})", "response_format");
  ExpectRefused(kChat, chat + R"("presence_penalty": 0.5})", "presence_penalty");
  ExpectRefused(kChat, chat + R"("frequency_penalty": 1})", "frequency_penalty");
  ExpectRefused(kChat, chat + R"("logit_bias": {"5": 10}})", "logit_bias");
  ExpectRefused(kChat, chat + R"("top_logprobs": 3})", "top_logprobs", "logprobs");
  ExpectRefused(kChat, chat + R"("logprobs": true, "top_logprobs": 21})", "top_logprobs",
                "[0, 20]");
  ExpectRefused(kChat, chat + R"("frobnicate": true})", "frobnicate", "unrecognized");
  ExpectRefused(kChat, chat + R"("stream_options": {"include_usage": true}})", "stream_options",
                "stream");
  ExpectRefused(kChat,
                R"({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url",
      "image_url": {"url": "x"}}]}]})",
                "messages[0].content", "text parts");
  ExpectRefused(kChat, R"({"model": "m", "messages": []})", "messages");
  ExpectRefused(kChat, R"({"model": "m", "messages": [{"content": "x"}]})", "messages[0].role");
  ExpectRefused(kChat, R"({"model": "m", "messages": "hi"})", "messages");
  ExpectRefused(kChat,
                R"({"model": "m", "prompt": "x", "messages": [{"role": "user", "content": "x"}]})",
                "prompt", "unrecognized");
  const std::string completion = R"({"model": "m", "prompt": "x", )";
  ExpectRefused(kCompletions, completion + R"("echo": true})", "echo");
  ExpectRefused(kCompletions, completion + R"("suffix": "end"})", "suffix");
  ExpectRefused(kCompletions, completion + R"("best_of": 3})", "best_of");
  ExpectRefused(kCompletions, completion + R"("logprobs": 21})", "logprobs", "[0, 20]");
  ExpectRefused(kCompletions, completion + R"("messages": []})", "messages", "unrecognized");
}

TEST(OpenAiParseTest, WrongTypesAndRangesNameTheField) {
  const std::string base = R"({"model": "m", "prompt": "x", )";
  ExpectRefused(kCompletions, base + R"("max_tokens": "5"})", "max_tokens", "integer");
  ExpectRefused(kCompletions, base + R"("max_tokens": 0})", "max_tokens", "positive");
  ExpectRefused(kCompletions, base + R"("max_completion_tokens": -3})", "max_completion_tokens");
  ExpectRefused(kCompletions, base + R"("temperature": 2.5})", "temperature", "[0, 2]");
  ExpectRefused(kCompletions, base + R"("temperature": "hot"})", "temperature");
  ExpectRefused(kCompletions, base + R"("top_p": 0})", "top_p");
  ExpectRefused(kCompletions, base + R"("top_k": -2})", "top_k");
  ExpectRefused(kCompletions, base + R"("stop": 5})", "stop");
  ExpectRefused(kCompletions, base + R"("stop": ["a", 1]})", "stop");
  ExpectRefused(kCompletions, base + R"("stream": "yes"})", "stream");
  ExpectRefused(kCompletions, base + R"("seed": 1.5})", "seed");
  ExpectRefused(kCompletions, base + R"("user": 7})", "user");
  ExpectRefused(kCompletions, R"({"prompt": "x"})", "model", "missing");
  ExpectRefused(kCompletions, R"({"model": 3, "prompt": "x"})", "model");
  // Not JSON, or not an object: the body itself.
  for (const char* body : {"", "{", "[1]", "null", "{\"model\": \"m\",}"}) {
    absl::StatusOr<OpenAiRequest> r = ParseOpenAiRequest(kCompletions, body);
    EXPECT_THAT(r.status(), StatusIs(absl::StatusCode::kInvalidArgument)) << body;
  }
  EXPECT_EQ(ParseOk(kCompletions, base + R"("top_k": -1})").engine.sampling.top_k,
            0);  // vLLM's "off"
}

ResponseHeader Header() { return {"cmpl-1", 1700000000, "sql", "sql@ab12"}; }

TEST(OpenAiResponseTest, WholeCompletionInOpenAisShape) {
  const OpenAiRequest r =
      ParseOk(kCompletions, R"({"model": "sql", "prompt": "x", "logprobs": 0})");
  CompletionPiece out;
  out.text = "ab";
  out.token_ids = {7, 8};
  out.logprobs = {{"a", -0.5f, {}}, {"b", -1.0f, {}}};
  const Json j = CompletionResponse(r, Header(), {1, 2}, out, FinishReason::kLength, Usage{2, 2});
  EXPECT_EQ(j, Json::parse(R"({"id": "cmpl-1", "object": "text_completion", "created": 1700000000,
      "model": "sql", "system_fingerprint": "sql@ab12",
      "choices": [{"index": 0, "text": "ab", "logprobs": {"tokens": ["a", "b"], "token_logprobs": [-0.5, -1.0],
                   "top_logprobs": null, "text_offset": [0, 1]}, "finish_reason": "length"}],
      "usage": {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}})"))
      << j.dump(2);
}

TEST(OpenAiResponseTest, CompletionTopLogprobsAreTextToLogprobMaps) {
  const OpenAiRequest r =
      ParseOk(kCompletions, R"({"model": "sql", "prompt": "x", "logprobs": 2})");
  CompletionPiece out;
  out.text = "a";
  out.logprobs = {{"a", -0.125f, {{"a", -0.125f}, {"b", -2.5f}}}};
  const Json j = CompletionResponse(r, Header(), {}, out, FinishReason::kLength, Usage{1, 1});
  EXPECT_EQ(j["choices"][0]["logprobs"]["top_logprobs"],
            Json::parse(R"([{"a": -0.125, "b": -2.5}])"))
      << j.dump(2);
}

TEST(OpenAiResponseTest, WholeChatCompletionInOpenAisShape) {
  const OpenAiRequest r =
      ParseOk(kChat, R"({"model": "sql", "messages": [{"role": "user", "content": "x"}],
                                            "return_token_ids": true})");
  CompletionPiece out;
  out.text = "Hi";
  out.token_ids = {9};
  ResponseHeader h = Header();
  h.id = "chatcmpl-1";
  h.system_fingerprint = "";
  const Json j = CompletionResponse(r, h, {1, 2, 3}, out, FinishReason::kStop, Usage{3, 1});
  EXPECT_EQ(j,
            Json::parse(R"({"id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000,
      "model": "sql", "system_fingerprint": null,
      "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "logprobs": null,
                   "finish_reason": "stop", "token_ids": [9]}],
      "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
      "prompt_token_ids": [1, 2, 3]})"))
      << j.dump(2);
}

TEST(OpenAiResponseTest, ChatStreamChunks) {
  const OpenAiRequest r =
      ParseOk(kChat, R"({"model": "sql", "messages": [{"role": "user", "content": "x"}],
      "stream": true, "stream_options": {"include_usage": true}, "logprobs": true})");
  const Json first = FirstChatChunk(r, Header());
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"], Json::parse(R"({"role": "assistant", "content": ""})"));
  EXPECT_TRUE(first["usage"].is_null() && first.contains("usage"));
  CompletionPiece piece;
  piece.text = "é";
  piece.logprobs = {{"é", -0.25f, {{"é", -0.25f}, {"e", -2.0f}}}};
  const Json middle = ChoiceChunk(r, Header(), piece, std::nullopt);
  EXPECT_EQ(middle["choices"][0]["delta"], Json::parse(R"({"content": "é"})"));
  EXPECT_TRUE(middle["choices"][0]["finish_reason"].is_null());
  EXPECT_EQ(middle["choices"][0]["logprobs"]["content"][0],
            Json::parse(R"({"token": "é", "logprob": -0.25, "bytes": [195, 169], "top_logprobs": [
                {"token": "é", "logprob": -0.25, "bytes": [195, 169]}, {"token": "e", "logprob": -2.0, "bytes": [101]}]})"));
  const Json last = ChoiceChunk(r, Header(), CompletionPiece(), FinishReason::kStop);
  EXPECT_EQ(last["choices"][0]["delta"], Json::object());
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  const Json usage = UsageChunk(r, Header(), Usage{5, 3});
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 8);
}

TEST(OpenAiResponseTest, CompletionStreamChunksHaveNoUsageFieldUnlessAsked) {
  const OpenAiRequest r =
      ParseOk(kCompletions, R"({"model": "sql", "prompt": "x", "stream": true})");
  CompletionPiece piece;
  piece.text = "a";
  const Json chunk = ChoiceChunk(r, Header(), piece, FinishReason::kLength);
  EXPECT_EQ(chunk["object"], "text_completion");
  EXPECT_EQ(chunk["choices"][0]["text"], "a");
  EXPECT_EQ(chunk["choices"][0]["finish_reason"], "length");
  EXPECT_FALSE(chunk.contains("usage"));
}

TEST(OpenAiResponseTest, ModelListNamesTheBaseAsParent) {
  const Json j = ModelList({"llama", 100}, {{"sql", 200}, {"chat", 300}}, 4096);
  EXPECT_EQ(j["object"], "list");
  ASSERT_EQ(j["data"].size(), 3u);
  EXPECT_EQ(j["data"][0]["id"], "llama");
  EXPECT_TRUE(j["data"][0]["parent"].is_null());
  EXPECT_EQ(j["data"][1],
            Json::parse(R"({"id": "sql", "object": "model", "created": 200, "owned_by": "loramux",
      "root": "sql", "parent": "llama", "max_model_len": 4096})"));
}

TEST(OpenAiErrorTest, StatusesMapToOpenAisErrors) {
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kInvalidArgument), 400);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kUnauthenticated), 401);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kNotFound), 404);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kResourceExhausted), 429);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kUnavailable), 503);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kInternal), 500);
  const Json missing = ErrorBody(WithParam(absl::NotFoundError("no model x"), "model"));
  EXPECT_EQ(missing, Json::parse(R"({"error": {"message": "no model x", "type": "not_found_error",
      "param": "model", "code": "model_not_found"}})"));
  const Json full = ErrorBody(absl::ResourceExhaustedError("queue full"));
  EXPECT_EQ(full["error"]["type"], "rate_limit_error");
  EXPECT_TRUE(full["error"]["param"].is_null());
}

}  // namespace
}  // namespace loramux
