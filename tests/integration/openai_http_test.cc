// The OpenAI-compatible HTTP front end to end, spoken to by real clients nobody here wrote: the
// official `openai` npm package (tests/openai/sdk_check.mjs, installed by scripts/install_deps.sh)
// and curl. A real server on loopback serves a random Llama with llama2's tokenizer and chat
// template, and two LoRA adapters uploaded over gRPC; every greedy answer over HTTP must equal the
// same request over gRPC, token for token.
#include <signal.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/integration/server_harness.h"

namespace loramux::testing {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::json;

const std::string kSdkScript = std::string(kData) + "/../openai/sdk_check.mjs";
constexpr char kInferenceToken[] = "inference-secret";
constexpr char kAdminToken[] = "admin-secret";
constexpr char kBase[] = "tiny-llama";

// One scenario of sdk_check.mjs against `server`.
Json Sdk(const ServerProcess& server, const std::string& scenario, const Json& args,
         const std::string& api_key = kInferenceToken) {
  const std::string out =
      RunCommand("node " + kSdkScript + " " + scenario + " http://" + server.http_address() +
                 "/v1 " + ShellQuote(api_key) + " " + ShellQuote(args.dump()));
  Json j = Json::parse(out, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(j.is_discarded()) << "sdk_check.mjs printed: " << out;
  EXPECT_FALSE(j.contains("fatal")) << j.dump(2);
  return j;
}

// What these tests need besides the server: node with the SDK (scripts/install_deps.sh), curl.
void ExpectClients() {
  ASSERT_TRUE(HaveCommand("node") && HaveCommand("curl")) << "node and curl are needed";
  ASSERT_TRUE(std::filesystem::exists(std::string(kData) + "/../openai/node_modules/openai"))
      << "the openai SDK is missing: run scripts/install_deps.sh (npm ci in tests/openai)";
}

double Metric(const ServerProcess& server, const std::string& series) {
  return MetricValue(HttpGet(server.metrics_address(), "/metrics"), series);
}

class OpenAiHttpTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(MakeTempDir());
    WriteChatLlama(*dir_, /*max_position_embeddings=*/8192);
    WriteFile(*dir_ + "/inference", kInferenceToken);
    WriteFile(*dir_ + "/admin", kAdminToken);
    server_ =
        new ServerProcess({"--model_dir=" + *dir_, "--http_listen=127.0.0.1:0",
                           std::string("--served_model_name=") + kBase,
                           "--inference_token_file=" + *dir_ + "/inference",
                           "--admin_token_file=" + *dir_ + "/admin", "--kv_cache_bytes=64MiB"});
    if (!server_->ok()) return;
    auto adapters = v1::Adapters::NewStub(Connect(server_->address()));
    v1::AdapterInfo info;
    for (const auto& [name, seed] : {std::pair<const char*, uint32_t>{"alpha", 11}, {"beta", 12}}) {
      const grpc::Status s = Upload(*adapters, name, RandomLlamaLora(seed), &info, kAdminToken);
      EXPECT_TRUE(s.ok()) << s.error_message();
    }
  }
  static void TearDownTestSuite() {
    delete server_;
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }
  void SetUp() override {
    ASSERT_TRUE(server_->ok()) << server_->Log();
    ASSERT_FALSE(server_->http_address().empty()) << "no `http listening on` line";
    ASSERT_NO_FATAL_FAILURE(ExpectClients());
    stub_ = v1::Inference::NewStub(Connect(server_->address()));
  }

  // The same request over gRPC: greedy, `max_tokens`, a text prompt or one user message.
  std::pair<GenerateOutcome, std::string> OverGrpc(const std::string& adapter, bool chat,
                                                   const std::string& prompt, int max_tokens,
                                                   const std::string& stop = "") {
    v1::GenerateRequest request = MakeGenerate(adapter == kBase ? "" : adapter, {}, max_tokens);
    if (chat) {
      v1::ChatMessage* m = request.add_messages();
      m->set_role("user");
      m->set_content(prompt);
    } else {
      request.set_prompt_text(prompt);
    }
    if (!stop.empty()) request.add_stop(stop);
    GenerateOutcome out = Generate(*stub_, request, 60, kInferenceToken);
    return {out, out.text};
  }

  static Json Request(const std::string& model, bool chat, const std::string& prompt,
                      int max_tokens, bool stream) {
    Json r = {{"endpoint", chat ? "chat" : "completions"},
              {"model", model},
              {"max_tokens", max_tokens},
              {"temperature", 0},
              {"stream", stream},
              {"return_token_ids", true}};
    if (chat) {
      r["messages"] = Json::array({{{"role", "user"}, {"content", prompt}}});
    } else {
      r["prompt"] = prompt;
    }
    if (stream) r["stream_options"] = {{"include_usage", true}};
    return r;
  }

  static std::string* dir_;
  static ServerProcess* server_;
  std::unique_ptr<v1::Inference::Stub> stub_;
};

std::string* OpenAiHttpTest::dir_ = nullptr;
ServerProcess* OpenAiHttpTest::server_ = nullptr;

TEST_F(OpenAiHttpTest, ModelsListTheBaseAndEveryAdapter) {
  const Json sdk = Sdk(*server_, "models", Json::object());
  EXPECT_EQ(sdk["ids"], Json::parse(R"(["tiny-llama", "alpha", "beta"])")) << sdk.dump();
  EXPECT_EQ(sdk["parents"]["alpha"], kBase);
  EXPECT_TRUE(sdk["parents"][kBase].is_null());
  const HttpReply raw =
      Curl("http://" + server_->http_address(), "GET", "/v1/models", "", kInferenceToken);
  EXPECT_EQ(raw.status, 200);
  EXPECT_THAT(raw.headers, HasSubstr("application/json"));
  EXPECT_EQ(raw.json()["data"][1]["object"], "model");
  EXPECT_EQ(raw.json()["data"][1]["max_model_len"], 8192);
}

// Base and two adapters, completions and chat, streamed and not: twelve requests at once through
// the SDK, each equal to its gRPC twin.
TEST_F(OpenAiHttpTest, GreedyAnswersEqualGrpcForBaseAndAdaptersInParallel) {
  const std::string prompt = "The capital of France is";
  Json requests = Json::array();
  for (const char* model : {kBase, "alpha", "beta"}) {
    for (bool chat : {false, true}) {
      for (bool stream : {false, true})
        requests.push_back(Request(model, chat, prompt, 16, stream));
    }
  }
  const Json sdk = Sdk(*server_, "generate", {{"requests", requests}});
  ASSERT_EQ(sdk["results"].size(), requests.size()) << sdk.dump(2);
  std::vector<std::vector<int32_t>> seen;
  for (size_t i = 0; i < requests.size(); ++i) {
    const Json& req = requests[i];
    const Json& got = sdk["results"][i];
    const bool chat = req["endpoint"] == "chat";
    SCOPED_TRACE(req.dump());
    const auto [grpc_out, grpc_text] = OverGrpc(req["model"], chat, prompt, 16);
    ASSERT_TRUE(grpc_out.status.ok()) << grpc_out.status.error_message();
    EXPECT_EQ(got["text"], grpc_text);
    EXPECT_EQ(got["token_ids"].get<std::vector<int32_t>>(), grpc_out.tokens);
    EXPECT_EQ(got["finish_reason"],
              grpc_out.last.finish_reason() == v1::FINISH_REASON_STOP ? "stop" : "length");
    EXPECT_EQ(got["usage"]["prompt_tokens"], grpc_out.last.usage().prompt_tokens());
    EXPECT_EQ(got["usage"]["completion_tokens"], grpc_out.last.usage().generated_tokens());
    EXPECT_EQ(got["usage"]["total_tokens"],
              grpc_out.last.usage().prompt_tokens() + grpc_out.last.usage().generated_tokens());
    EXPECT_EQ(got["object"], chat ? (req["stream"] ? "chat.completion.chunk" : "chat.completion")
                                  : "text_completion");
    if (chat) EXPECT_EQ(got["role"], "assistant");
    if (req["stream"]) EXPECT_GE(got["chunks"].get<int>(), 3);  // role, tokens..., usage
    // system_fingerprint: the served version, as gRPC reports it (null for the base).
    EXPECT_EQ(got["fingerprint"], grpc_out.last.adapter_version().empty()
                                      ? Json()
                                      : Json(grpc_out.last.adapter_version()));
    seen.push_back(grpc_out.tokens);
  }
  // The adapters change the answers (else this test would prove nothing about routing).
  EXPECT_NE(seen[0], seen[4]);
  EXPECT_NE(seen[4], seen[8]);
}

// logprobs equal gRPC's; top_logprobs list the likeliest first, the greedy choice among them.
TEST_F(OpenAiHttpTest, LogprobsEqualGrpcsAndTopLogprobsLeadWithTheGreedyToken) {
  Json chat = Request("alpha", true, "Name a colour", 6, false);
  chat["logprobs"] = true;
  chat["top_logprobs"] = 3;
  Json completion = Request("alpha", false, "Name a colour", 6, true);
  completion["logprobs"] = 2;
  const Json sdk = Sdk(*server_, "generate", {{"requests", {chat, completion}}});
  v1::GenerateRequest request = MakeGenerate("alpha", {}, 6);
  v1::ChatMessage* m = request.add_messages();
  m->set_role("user");
  m->set_content("Name a colour");
  request.set_logprobs(true);
  const GenerateOutcome grpc_out = Generate(*stub_, request, 30, kInferenceToken);
  ASSERT_TRUE(grpc_out.status.ok()) << grpc_out.status.error_message();
  const Json& content = sdk["results"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), grpc_out.logprobs.size()) << sdk.dump(2);
  for (size_t i = 0; i < content.size(); ++i) {
    EXPECT_EQ(content[i]["logprob"].get<float>(), grpc_out.logprobs[i]);
    const Json& top = content[i]["top_logprobs"];
    ASSERT_EQ(top.size(), 3u);
    EXPECT_EQ(top[0]["token"], content[i]["token"]);
    EXPECT_EQ(top[0]["logprob"], content[i]["logprob"]);
    EXPECT_GE(top[0]["logprob"].get<double>(), top[1]["logprob"].get<double>());
    EXPECT_GE(top[1]["logprob"].get<double>(), top[2]["logprob"].get<double>());
  }
}

TEST_F(OpenAiHttpTest, StopStringsEndTheTextBeforeThem) {
  const std::string prompt = "Once upon a time";
  const auto [full, text] = OverGrpc(kBase, false, prompt, 24);
  ASSERT_GE(text.size(), 8u) << text;
  // Two whole characters from the middle (the text is UTF-8; a stop string is too).
  auto next_char = [&](size_t i) {
    do ++i;
    while (i < text.size() && (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80);
    return i;
  };
  size_t start = text.size() / 2;
  while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
  const std::string stop = text.substr(start, next_char(next_char(start)) - start);
  const std::string expected = text.substr(0, text.find(stop));
  Json requests = Json::array();
  for (bool stream : {false, true}) {
    Json r = Request(kBase, false, prompt, 24, stream);
    r["stop"] = Json::array({stop, "never-generated-stop"});
    requests.push_back(r);
  }
  const Json sdk = Sdk(*server_, "generate", {{"requests", requests}});
  for (const Json& got : sdk["results"]) {
    EXPECT_EQ(got["text"], expected) << "stop " << Json(stop).dump();
    EXPECT_EQ(got["finish_reason"], "stop");
  }
  EXPECT_EQ(OverGrpc(kBase, false, prompt, 24, stop).second, expected);
}

TEST_F(OpenAiHttpTest, EveryErrorHasOpenAisShapeAndStatus) {
  auto error = [&](const Json& request, const std::string& key = kInferenceToken) {
    const Json r = Sdk(*server_, "error", {{"request", request}}, key);
    EXPECT_EQ(r["ok"], false) << r.dump();
    return r["error"];
  };
  const Json unknown = error(Request("no-such-adapter", true, "hi", 4, false));
  EXPECT_EQ(unknown["status"], 404);
  EXPECT_EQ(unknown["class"], "NotFoundError");
  EXPECT_EQ(unknown["code"], "model_not_found");
  EXPECT_EQ(unknown["param"], "model");
  const Json bad_name = error(Request("gpt-4o/../../etc", false, "hi", 4, true));
  EXPECT_EQ(bad_name["status"], 404);
  Json two = Request(kBase, true, "hi", 4, false);
  two["n"] = 2;
  const Json n = error(two);
  EXPECT_EQ(n["status"], 400);
  EXPECT_EQ(n["class"], "BadRequestError");
  EXPECT_EQ(n["param"], "n");
  Json tools = Request(kBase, true, "hi", 4, false);
  tools["tools"] =
      Json::parse(R"([{"type": "function", "function": {"name": "f", "parameters": {}}}])");
  EXPECT_EQ(error(tools)["param"], "tools");
  Json long_reply = Request(kBase, false, "hi", 5000, false);
  EXPECT_EQ(error(long_reply)["status"], 400);  // over --max_new_tokens_limit
  const Json auth = error(Request(kBase, false, "hi", 4, false), "wrong-token");
  EXPECT_EQ(auth["status"], 401);
  EXPECT_EQ(auth["class"], "AuthenticationError");

  const std::string http = "http://" + server_->http_address();
  const HttpReply not_json = Curl(http, "POST", "/v1/completions", "{\"model\": ", kInferenceToken);
  EXPECT_EQ(not_json.status, 400);
  EXPECT_EQ(not_json.json()["error"]["type"], "invalid_request_error") << not_json.body;
  const HttpReply no_token = Curl(http, "POST", "/v1/chat/completions", "{}");
  EXPECT_EQ(no_token.status, 401);
  EXPECT_THAT(no_token.json()["error"]["message"].get<std::string>(), HasSubstr("Bearer"));
  const HttpReply huge =
      Curl(http, "POST", "/v1/completions", std::string(9 << 20, ' '), kInferenceToken);
  EXPECT_EQ(huge.status, 413);  // over --max_http_body_bytes (8 MiB)
  EXPECT_EQ(Curl(http, "DELETE", "/v1/models", "", kInferenceToken).status, 405);
  EXPECT_EQ(Curl(http, "GET", "/v1/engines", "", kInferenceToken).status, 404);
  EXPECT_EQ(Curl(http, "GET", "/health").status, 200);
  const HttpReply metrics = Curl(http, "GET", "/metrics");
  EXPECT_EQ(metrics.status, 200);
  EXPECT_THAT(metrics.body, HasSubstr("rpc=\"openai.chat.completions\""));
}

// vLLM's load/unload routes: an adapter directory on the server's disk becomes a model, and goes.
TEST_F(OpenAiHttpTest, LoadAndUnloadLoraAdapterByPath) {
  const std::string http = "http://" + server_->http_address();
  const std::string adapter_dir = *dir_ + "/gamma";
  std::filesystem::create_directories(adapter_dir);
  const AdapterFiles files = RandomLlamaLora(13);
  WriteFile(adapter_dir + "/adapter_config.json", files.config);
  WriteFile(adapter_dir + "/adapter_model.safetensors", files.weights);
  const std::string load = Json{{"lora_name", "gamma"}, {"lora_path", adapter_dir}}.dump();
  EXPECT_EQ(Curl(http, "POST", "/v1/load_lora_adapter", load, kInferenceToken).status,
            401);  // admin only
  const HttpReply missing =
      Curl(http, "POST", "/v1/load_lora_adapter",
           R"({"lora_name": "gamma", "lora_path": "/nonexistent"})", kAdminToken);
  EXPECT_EQ(missing.status, 404) << missing.body;
  const HttpReply loaded = Curl(http, "POST", "/v1/load_lora_adapter", load, kAdminToken);
  ASSERT_EQ(loaded.status, 200) << loaded.body;

  const Json sdk = Sdk(*server_, "generate",
                       {{"requests", Json::array({Request("gamma", false, "Hello", 8, false)})}});
  const auto [grpc_out, grpc_text] = OverGrpc("gamma", false, "Hello", 8);
  EXPECT_EQ(sdk["results"][0]["token_ids"].get<std::vector<int32_t>>(), grpc_out.tokens);
  EXPECT_EQ(sdk["results"][0]["fingerprint"], loaded.json()["version"]);  // the version served
  EXPECT_EQ(grpc_out.last.adapter_version(), loaded.json()["version"]);

  const std::string unload = Json{{"lora_name", "gamma"}}.dump();
  EXPECT_EQ(Curl(http, "POST", "/v1/unload_lora_adapter", unload, kAdminToken).status, 200);
  EXPECT_EQ(Curl(http, "POST", "/v1/unload_lora_adapter", unload, kAdminToken).status, 404);
  const Json gone =
      Sdk(*server_, "error", {{"request", Request("gamma", false, "Hello", 8, false)}});
  EXPECT_EQ(gone["error"]["status"], 404);
}

// A client that goes away mid-stream frees its sequence at once.
TEST_F(OpenAiHttpTest, ClientThatDisconnectsMidStreamIsCancelled) {
  const std::string series =
      R"(loramux_requests_total{code="CANCELLED",rpc="openai.chat.completions"})";
  const double before = std::max(0.0, Metric(*server_, series));
  Json request = Request(kBase, true, "Tell me a long story", 4000, true);
  request["ignore_eos"] = true;  // it would run for seconds if not cancelled
  const Json sdk = Sdk(*server_, "disconnect", {{"request", request}, {"chunks", 4}});
  EXPECT_EQ(sdk["chunks"], 4);
  double running = -1;
  for (int i = 0; i < 100; ++i) {
    running = Metric(*server_, "loramux_running_requests");
    if (running == 0 && Metric(*server_, series) == before + 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(running, 0);
  EXPECT_EQ(Metric(*server_, series), before + 1) << "the stream was not cancelled";
}

// A full queue is 429 with Retry-After; a draining server is 503, and /health says so. One long
// request runs and one waits (seen on /metrics) before the others come, so the queue is full.
TEST(OpenAiHttpLimitsTest, FullQueueIs429AndDrainingIs503) {
  ASSERT_NO_FATAL_FAILURE(ExpectClients());  // before any thread starts
  const std::string dir = MakeTempDir();
  WriteChatLlama(dir, 8192);
  ServerProcess server({"--model_dir=" + dir, "--http_listen=127.0.0.1:0", "--max_queue=1",
                        "--max_running_requests=1", "--max_new_tokens_limit=8000",
                        "--drain_timeout_s=120"});
  ASSERT_TRUE(server.ok()) << server.Log();
  const std::string base = std::filesystem::path(dir).filename();  // the default model id
  // ~1 ms a token here: long enough that the first still runs when the second arrives on a busy
  // machine (at 3,000 tokens the first had once ended before the second was queued).
  const std::string long_request = Json{
      {"model", base},
      {"prompt", "hi"},
      {"max_tokens", 8000},
      {"temperature", 0},
      {"ignore_eos", true}}.dump();
  // Waits up to 30 s for the gauge to read 1. Only the first (one request running) is required:
  // the second is a pacing step, since the 429s below are what show the queue full. (Under ASan in
  // a full CTest run the queue gauge was once not seen at 1 within 30 s although the flood was
  // refused: a lead for the scheduler's published counts, not this front's behaviour.)
  auto wait_for = [&](const std::string& gauge, bool required) {
    for (int i = 0; i < 3000 && Metric(server, gauge) != 1; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (required) EXPECT_EQ(Metric(server, gauge), 1) << gauge;
  };
  std::vector<std::thread> runners;
  for (const char* gauge : {"loramux_running_requests", "loramux_queue_depth"}) {
    runners.emplace_back([&] {
      // Up to 115 s, not Curl's 60: under ASan in a full CTest run the second long request (which
      // waits for the first) once took longer than 60 s; the server drains for 120 s.
      const HttpReply reply = Curl("http://" + server.http_address(), "POST", "/v1/completions",
                                   long_request, /*token=*/"", /*curl_args=*/"-m 115");
      EXPECT_EQ(reply.status, 200) << reply.body;
    });
    wait_for(gauge, runners.size() == 1);  // the first runs, the second waits
  }
  const Json flood =
      Sdk(server, "flood",
          {{"count", 4},
           {"request",
            {{"endpoint", "completions"}, {"model", base}, {"prompt", "hi"}, {"max_tokens", 4}}}});
  EXPECT_EQ(flood["results"].size(), 4u) << flood.dump();
  for (const Json& r : flood["results"]) {
    if (r.value("ok", true)) {
      ADD_FAILURE() << "not refused: " << r.dump();
      continue;
    }
    EXPECT_EQ(r["error"]["status"], 429);
    EXPECT_EQ(r["error"]["retry_after"], "1");
    EXPECT_EQ(r["error"]["class"], "RateLimitError");
  }

  server.Signal(SIGTERM);  // the two long requests finish; nothing new starts
  for (int i = 0;
       i < 200 && Curl("http://" + server.http_address(), "GET", "/health").status != 503; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(Curl("http://" + server.http_address(), "GET", "/health").status, 503);
  const HttpReply refused = Curl("http://" + server.http_address(), "POST", "/v1/completions",
                                 Json{{"model", base}, {"prompt", "hi"}, {"max_tokens", 2}}.dump());
  EXPECT_EQ(refused.status, 503) << refused.body;
  EXPECT_EQ(refused.json()["error"]["type"], "service_unavailable_error");
  for (std::thread& t : runners) t.join();
  EXPECT_EQ(server.WaitExit(120), 0);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace loramux::testing
