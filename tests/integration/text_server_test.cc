// Text in, text out through the real server: a random Llama whose vocabulary is llama2's
// tokenizer.json (tests/data/tokenizers/llama2) with llama2's chat template. Generate takes text
// and conversations, streams valid UTF-8 whose concatenation equals Detokenize of the tokens, and
// honours stop strings; every malformed text request gets its own code.
#include <cstdio>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/integration/server_harness.h"

namespace loramux::testing {
namespace {

using ::testing::HasSubstr;

bool IsValidUtf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = s[i];
    const int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (int k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2) return false;
    }
    i += n;
  }
  return true;
}

class TextServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_dir_ = new std::string(MakeTempDir());
    WriteChatLlama(*model_dir_);
    server_ = new ServerProcess({"--model_dir=" + *model_dir_});
  }
  static void TearDownTestSuite() {
    delete server_;
    std::filesystem::remove_all(*model_dir_);
    delete model_dir_;
  }
  void SetUp() override {
    ASSERT_TRUE(server_->ok()) << server_->Log();
    stub_ = v1::Inference::NewStub(Connect(server_->address()));
  }

  // Generate, checking that every message's text is valid UTF-8; returns the outcome and the text.
  std::pair<GenerateOutcome, std::string> GenerateText(const v1::GenerateRequest& request) {
    grpc::ClientContext context;
    context.set_deadline(In(30));
    auto reader = stub_->Generate(&context, request);
    GenerateOutcome out;
    std::string text;
    v1::GenerateResponse message;
    while (reader->Read(&message)) {
      EXPECT_TRUE(IsValidUtf8(message.text())) << "a streamed piece is not UTF-8";
      text += message.text();
      out.tokens.insert(out.tokens.end(), message.token_ids().begin(), message.token_ids().end());
      ++out.messages;
      out.last = message;
    }
    out.status = reader->Finish();
    return {out, text};
  }

  std::string Detokenize(const std::vector<int32_t>& ids, bool skip_special = true) {
    v1::DetokenizeRequest request;
    for (int32_t id : ids) request.add_token_ids(id);
    request.set_skip_special_tokens(skip_special);
    v1::DetokenizeResponse response;
    grpc::ClientContext context;
    context.set_deadline(In(10));
    const grpc::Status status = stub_->Detokenize(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.text();
  }

  grpc::Status Tokenize(const v1::TokenizeRequest& request, v1::TokenizeResponse* response) {
    grpc::ClientContext context;
    context.set_deadline(In(10));
    return stub_->Tokenize(&context, request, response);
  }

  // Greedy, or with a seed sampled at temperature 3 (near-uniform over the vocabulary, so byte-
  // fallback tokens that split characters come up).
  static v1::GenerateRequest TextRequest(const std::string& text, int max_new, uint64_t seed = 0) {
    v1::GenerateRequest r;
    r.set_prompt_text(text);
    r.mutable_sampling()->set_max_new_tokens(max_new);
    if (seed != 0) {
      r.mutable_sampling()->set_temperature(3.0f);
      r.mutable_sampling()->set_seed(seed);
    }
    return r;
  }

  static std::string* model_dir_;
  static ServerProcess* server_;
  std::unique_ptr<v1::Inference::Stub> stub_;
};

std::string* TextServerTest::model_dir_ = nullptr;
ServerProcess* TextServerTest::server_ = nullptr;

TEST_F(TextServerTest, TokenizeMatchesTheOracleAndDetokenizeInverts) {
  // llama2's tokenizer.json as HF tokenizers encodes it (tests/data/tokenizers/llama2/cases.jsonl).
  v1::TokenizeRequest request;
  request.set_text("Hello world");
  request.set_add_special_tokens(true);
  v1::TokenizeResponse response;
  ASSERT_TRUE(Tokenize(request, &response).ok());
  // cases.jsonl: "Hello world" without special tokens is [22557, 1526]; the post-processor adds
  // <s>.
  EXPECT_THAT(std::vector<int32_t>(response.token_ids().begin(), response.token_ids().end()),
              ::testing::ElementsAre(1, 22557, 1526));
  EXPECT_EQ(Detokenize({response.token_ids().begin(), response.token_ids().end()}), "Hello world");
  EXPECT_THAT(Detokenize({1, 22557, 1526}, /*skip_special=*/false), ::testing::StartsWith("<s>"));
}

TEST_F(TextServerTest, StreamedTextIsUtf8AndEqualsDetokenizeOfTheTokens) {
  int byte_tokens = 0;
  for (uint64_t seed = 1; seed <= 10; ++seed) {
    auto [out, text] = GenerateText(TextRequest("Hello, 세계! 你好 🙂 café", 64, seed));
    ASSERT_TRUE(out.status.ok()) << out.status.error_message();
    EXPECT_EQ(text, Detokenize(out.tokens)) << "seed " << seed;
    for (int32_t id : out.tokens) byte_tokens += id >= 3 && id < 259;  // <0x00>..<0xFF>
  }
  EXPECT_GT(byte_tokens, 0)
      << "no byte-fallback token was generated; the UTF-8 hold-back went untested";
}

TEST_F(TextServerTest, ConversationUsesTheChatTemplate) {
  v1::TokenizeRequest tokenize;
  auto* system = tokenize.add_messages();
  system->set_role("system");
  system->set_content("Answer briefly.");
  auto* user = tokenize.add_messages();
  user->set_role("user");
  user->set_content("What is LoRA?");
  tokenize.set_add_generation_prompt(true);
  v1::TokenizeResponse rendered;
  ASSERT_TRUE(Tokenize(tokenize, &rendered).ok());
  // As @huggingface/jinja renders llama2's template (tests/data/chat_templates/llama2/cases.json).
  EXPECT_EQ(rendered.text(),
            "<s>[INST] <<SYS>>\nAnswer briefly.\n<</SYS>>\n\nWhat is LoRA? [/INST]");
  EXPECT_EQ(rendered.token_ids(0), 1);  // the template's <s>, not added twice
  EXPECT_NE(rendered.token_ids(1), 1);

  v1::GenerateRequest generate;
  *generate.mutable_messages() = tokenize.messages();
  generate.mutable_sampling()->set_max_new_tokens(16);
  auto [out, text] = GenerateText(generate);
  ASSERT_TRUE(out.status.ok()) << out.status.error_message();
  EXPECT_EQ(out.last.usage().prompt_tokens(), rendered.token_ids_size());
  EXPECT_EQ(text, Detokenize(out.tokens));

  // The same conversation as OpenAI-style JSON gives the same prompt.
  v1::GenerateRequest as_json;
  as_json.set_messages_json(R"([{"role": "system", "content": "Answer briefly."},
                                {"role": "user", "content": "What is LoRA?"}])");
  as_json.mutable_sampling()->set_max_new_tokens(16);
  auto [json_out, json_text] = GenerateText(as_json);
  ASSERT_TRUE(json_out.status.ok()) << json_out.status.error_message();
  EXPECT_EQ(json_out.tokens, out.tokens);
}

TEST_F(TextServerTest, StopStringEndsTheTextBeforeIt) {
  auto [full, text] = GenerateText(TextRequest("Once upon a time", 40));
  ASSERT_TRUE(full.status.ok());
  ASSERT_EQ(text, Detokenize(full.tokens));
  // A stop string from the middle of the greedy text, starting at a character boundary.
  size_t at = text.size() / 2;
  while (at < text.size() && (static_cast<unsigned char>(text[at]) >> 6) == 2) ++at;
  size_t end = at + 1;
  while (end < text.size() && (static_cast<unsigned char>(text[end]) >> 6) == 2) ++end;
  ASSERT_LT(at, text.size()) << "the greedy text is too short: " << text;
  const std::string stop = text.substr(at, end - at + (end < text.size() ? 1 : 0));
  const size_t first = text.find(stop);
  v1::GenerateRequest stopped = TextRequest("Once upon a time", 40);
  stopped.add_stop("a stop string that never appears");
  stopped.add_stop(stop);
  auto [out, out_text] = GenerateText(stopped);
  ASSERT_TRUE(out.status.ok()) << out.status.error_message();
  EXPECT_EQ(out_text, text.substr(0, first)) << "stop " << stop;
  EXPECT_EQ(out.last.finish_reason(), v1::FINISH_REASON_STOP);
  EXPECT_LE(out.tokens.size(), full.tokens.size());

  v1::GenerateRequest never = TextRequest("Once upon a time", 40);
  never.add_stop("a stop string that never appears");
  auto [never_out, never_text] = GenerateText(never);
  EXPECT_EQ(never_text, text);
  EXPECT_EQ(never_out.last.finish_reason(), v1::FINISH_REASON_LENGTH);
}

TEST_F(TextServerTest, MalformedTextRequestsGetTheirCodes) {
  auto code_of = [this](const v1::GenerateRequest& r) { return GenerateText(r).first.status; };
  v1::GenerateRequest both = TextRequest("hi", 4);
  both.add_prompt_token_ids(5);
  EXPECT_EQ(code_of(both).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  v1::GenerateRequest bad_json;
  bad_json.set_messages_json("[{\"role\": ");
  EXPECT_EQ(code_of(bad_json).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  v1::GenerateRequest not_array;
  not_array.set_messages_json("{\"role\": \"user\"}");
  EXPECT_EQ(code_of(not_array).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // llama2's template refuses roles that do not alternate, with its own message.
  v1::GenerateRequest twice;
  twice.set_messages_json(
      R"([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])");
  const grpc::Status refused = code_of(twice);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(refused.error_message(), HasSubstr("alternate"));
  v1::GenerateRequest kwargs;
  kwargs.set_messages_json(R"([{"role": "user", "content": "a"}])");
  kwargs.set_chat_template_kwargs_json("[1]");
  EXPECT_EQ(code_of(kwargs).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  v1::GenerateRequest long_stop = TextRequest("hi", 4);
  long_stop.add_stop(std::string(300, 'x'));
  EXPECT_EQ(code_of(long_stop).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  v1::GenerateRequest empty_stop = TextRequest("hi", 4);
  empty_stop.add_stop("");
  EXPECT_EQ(code_of(empty_stop).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  v1::DetokenizeRequest unknown;
  unknown.add_token_ids(1 << 20);
  v1::DetokenizeResponse response;
  grpc::ClientContext context;
  context.set_deadline(In(10));
  EXPECT_EQ(stub_->Detokenize(&context, unknown, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  v1::TokenizeRequest nothing;
  v1::TokenizeResponse tokens;
  EXPECT_EQ(Tokenize(nothing, &tokens).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

// Runs the loramux CLI against the server; returns its stdout (stderr goes to the test log).
std::string RunCli(const std::string& address, const std::string& args) {
  std::string binary = kServerBinary;
  binary = binary.substr(0, binary.rfind('/')) + "/client/loramux";
  FILE* pipe = ::popen((binary + " --server " + address + " --timeout_s 30 " + args).c_str(), "r");
  if (pipe == nullptr) return "";
  std::string out;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) out.append(buffer, n);
  EXPECT_EQ(::pclose(pipe), 0) << args;
  return out;
}

TEST_F(TextServerTest, CliTokenizesDetokenizesGeneratesAndChats) {
  EXPECT_EQ(RunCli(server_->address(), "tokenize 'Hello world'"), "1 22557 1526\n");
  EXPECT_EQ(RunCli(server_->address(), "tokenize --no_special 'Hello world'"), "22557 1526\n");
  EXPECT_EQ(RunCli(server_->address(), "detokenize 1 22557 1526"), "Hello world\n");
  auto [out, text] = GenerateText(TextRequest("Once upon a time", 12));
  ASSERT_TRUE(out.status.ok());
  EXPECT_EQ(RunCli(server_->address(), "generate --max_new_tokens 12 --text 'Once upon a time'"),
            text + "\n");
  v1::GenerateRequest chat;
  chat.set_messages_json(
      R"([{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Hi"}])");
  chat.mutable_sampling()->set_max_new_tokens(8);
  auto [chat_out, chat_text] = GenerateText(chat);
  ASSERT_TRUE(chat_out.status.ok());
  EXPECT_EQ(
      RunCli(server_->address(), "chat --max_new_tokens 8 --system 'Answer briefly.' --user Hi"),
      chat_text + "\n");
}

}  // namespace
}  // namespace loramux::testing
