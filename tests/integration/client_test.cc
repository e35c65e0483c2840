// The C++ client library and the `loramux` CLI against the real loramux_server binary on a
// loopback port: upload (file and in-memory), golden greedy generation through an adapter, Score,
// the admin calls, error codes, and the CLI's list/generate/get output and exit codes.
//
// One server process (`--listen 127.0.0.1:0`, a temporary store) serves the whole suite; its
// `listening on HOST:PORT` line is read from stdout. Every wait is bounded.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <netinet/in.h>
#include <sys/socket.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/loramux_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/server_harness.h"
#include "tests/test_files.h"

namespace loramux {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

using ::loramux::testing::MakeTempDir;
using ::loramux::testing::ReadFile;
constexpr char kCliBinary[] = LORAMUX_BINARY_DIR "/client/loramux";
constexpr char kData[] = LORAMUX_TEST_DATA;

const std::vector<int32_t> kPrompt = {109, 277, 235, 177, 125};
// Greedy, 12 steps, llama-tiny + lora-qv-r8 (HF transformers + PEFT; tests/data/cases).
const std::vector<int32_t> kLoraQvGolden = {185, 295, 304, 274, 123, 300,
                                            268, 238, 189, 295, 273, 161};

// Forks and execs `args` with stdout on a pipe and stderr on `stderr_path` (or inherited when
// empty). Returns the pid and the read end of the pipe, or pid -1.
std::pair<pid_t, int> Spawn(std::vector<std::string> args, const std::string& stderr_path) {
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return {-1, -1};
  const int err_fd = stderr_path.empty() ? -1
                                         : open(stderr_path.c_str(),
                                                O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  const pid_t pid = fork();
  if (pid == 0) {
    // Only async-signal-safe calls between fork and exec.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    dup2(out[1], STDOUT_FILENO);
    if (err_fd >= 0) dup2(err_fd, STDERR_FILENO);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(out[1]);
  if (err_fd >= 0) close(err_fd);
  if (pid < 0) {
    close(out[0]);
    return {-1, -1};
  }
  return {pid, out[0]};
}

// The exit code (128 + signal when killed), or nullopt if `pid` still runs after `seconds`.
std::optional<int> WaitExit(pid_t pid, double seconds) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
  while (true) {
    int status = 0;
    const pid_t done = waitpid(pid, &status, WNOHANG);
    if (done == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (done < 0 || Clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

struct CliResult {
  int exit_code = -1;  // -1: did not finish in time (killed)
  std::string out;
  std::string err;
};

// Runs the loramux CLI with `args`, for at most 60 s.
CliResult RunCli(const std::string& scratch_dir, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {kCliBinary};
  argv.insert(argv.end(), args.begin(), args.end());
  const std::string err_path = scratch_dir + "/cli.stderr";
  auto [pid, fd] = Spawn(argv, err_path);
  CliResult result;
  if (pid < 0) return result;
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (Clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 200) > 0) {
      char buffer[4096];
      const ssize_t n = read(fd, buffer, sizeof(buffer));
      if (n <= 0) break;  // EOF: the CLI exited (or closed stdout)
      result.out.append(buffer, static_cast<size_t>(n));
    }
  }
  close(fd);
  std::optional<int> code =
      WaitExit(pid, std::max(0.0, std::chrono::duration<double>(deadline - Clock::now()).count()));
  if (!code.has_value()) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
  }
  result.exit_code = code.value_or(-1);
  result.err = ReadFile(err_path);
  EXPECT_EQ(::loramux::testing::SanitizerReport(result.err), "") << "the CLI reported a finding";
  return result;
}

// The server binary as a child process for the whole suite.
using ::loramux::testing::ServerProcess;  // tests/integration/server_harness.h

class ClientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new ServerProcess({"--metrics_listen=", "--drain_timeout_s=5"});
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }

  void SetUp() override {
    ASSERT_TRUE(server_->ok()) << "the server did not start; its log:\n" << server_->Log();
    ClientOptions options;
    options.target = server_->address();
    options.timeout = absl::Seconds(60);
    absl::StatusOr<std::unique_ptr<LoramuxClient>> client = LoramuxClient::Connect(options);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
    ASSERT_TRUE(client_->WaitForConnected(absl::Seconds(10)));
  }

  static std::string AdapterDir(const std::string& name) {
    return std::string(kData) + "/adapters/" + name;
  }

  // Uploads tests/data/adapters/<dir> as `name`, streaming the weights from the file.
  absl::StatusOr<v1::AdapterInfo> UploadFromDir(const std::string& name, const std::string& dir) {
    UploadSpec spec;
    spec.name = name;
    spec.config_json = ReadFile(AdapterDir(dir) + "/adapter_config.json");
    spec.weights_path = AdapterDir(dir) + "/adapter_model.safetensors";
    return client_->UploadAdapter(spec);
  }

  CliResult Cli(std::vector<std::string> args) {
    args.insert(args.begin(), "--server=" + server_->address());
    return RunCli(server_->dir(), args);
  }

  static ServerProcess* server_;
  std::unique_ptr<LoramuxClient> client_;
};

ServerProcess* ClientTest::server_ = nullptr;

TEST_F(ClientTest, UploadThenGreedyGenerateMatchesPeftGolden) {
  absl::StatusOr<v1::AdapterInfo> info = UploadFromDir("lora-qv-r8", "lora-qv-r8");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->name(), "lora-qv-r8");
  EXPECT_EQ(info->version().size(), 64u);
  EXPECT_EQ(info->rank(), 8);
  EXPECT_FALSE(info->use_dora());

  v1::GenerateRequest request;
  request.set_adapter("lora-qv-r8");
  request.mutable_prompt_token_ids()->Add(kPrompt.begin(), kPrompt.end());
  request.mutable_sampling()->set_max_new_tokens(12);
  int messages = 0;
  std::vector<int32_t> streamed;
  absl::StatusOr<GenerateResult> result =
      client_->Generate(request, [&](const v1::GenerateResponse& response) {
        ++messages;
        streamed.insert(streamed.end(), response.token_ids().begin(), response.token_ids().end());
        return true;
      });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_THAT(result->token_ids, ElementsAreArray(kLoraQvGolden));
  EXPECT_EQ(streamed, result->token_ids);
  EXPECT_GE(messages, 1);
  EXPECT_EQ(result->finish_reason, v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(result->usage.prompt_tokens(), 5);
  EXPECT_EQ(result->usage.generated_tokens(), 12);
  EXPECT_EQ(result->adapter_version, info->version());

  // The CLI lists it, and streams the same tokens.
  CliResult list = Cli({"list"});
  EXPECT_EQ(list.exit_code, 0) << list.err;
  EXPECT_THAT(list.out, HasSubstr("lora-qv-r8"));
  EXPECT_THAT(list.out, HasSubstr(info->version().substr(0, 12)));

  CliResult generate = Cli({"generate", "--adapter", "lora-qv-r8", "--max_new_tokens=12", "109",
                            "277", "235", "177", "125"});
  EXPECT_EQ(generate.exit_code, 0) << generate.err;
  EXPECT_EQ(generate.out, "185 295 304 274 123 300 268 238 189 295 273 161\n");
  EXPECT_THAT(generate.err, HasSubstr("finish=LENGTH"));
}

TEST_F(ClientTest, InMemoryUploadAdminCallsAndScore) {
  UploadSpec spec;
  spec.name = "dora-bytes";
  spec.config_json = ReadFile(AdapterDir("dora-qkvo-r8") + "/adapter_config.json");
  // Over 1 MiB of weights would need several chunks; these are small, so one chunk suffices.
  spec.weights = ReadFile(AdapterDir("dora-qkvo-r8") + "/adapter_model.safetensors");
  absl::StatusOr<v1::AdapterInfo> uploaded = client_->UploadAdapter(spec);
  ASSERT_TRUE(uploaded.ok()) << uploaded.status();
  EXPECT_TRUE(uploaded->use_dora());

  absl::StatusOr<v1::AdapterInfo> got = client_->GetAdapter("dora-bytes");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->version(), uploaded->version());

  absl::StatusOr<v1::AdapterInfo> loaded = client_->LoadAdapter("dora-bytes", /*pin=*/true);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(loaded->pinned());
  EXPECT_NE(loaded->residency(), v1::STORED);

  v1::ScoreRequest score;
  score.set_adapter("dora-bytes");
  score.mutable_token_ids()->Add(kPrompt.begin(), kPrompt.end());
  absl::StatusOr<v1::ScoreResponse> scored = client_->Score(score);
  ASSERT_TRUE(scored.ok()) << scored.status();
  EXPECT_EQ(scored->token_logprobs_size(), 4);
  EXPECT_EQ(scored->vocab_size(), 320);
  for (float lp : scored->token_logprobs()) EXPECT_LE(lp, 0.0f);
  EXPECT_EQ(scored->adapter_version(), uploaded->version());

  absl::StatusOr<v1::AdapterInfo> unloaded = client_->UnloadAdapter("dora-bytes");
  ASSERT_TRUE(unloaded.ok()) << unloaded.status();
  EXPECT_FALSE(unloaded->pinned());

  absl::StatusOr<std::vector<v1::AdapterInfo>> all = client_->ListAdapters(/*page_size=*/1);
  ASSERT_TRUE(all.ok()) << all.status();
  bool listed = false;
  for (const v1::AdapterInfo& info : *all) listed = listed || info.name() == "dora-bytes";
  EXPECT_TRUE(listed);

  ASSERT_TRUE(client_->DeleteAdapter("dora-bytes").ok());
  EXPECT_EQ(client_->GetAdapter("dora-bytes").status().code(), absl::StatusCode::kNotFound);
}

// Pads a safetensors file's JSON header with spaces (valid JSON whitespace) to over `min_bytes`.
std::string PadSafetensorsHeader(const std::string& bytes, size_t min_bytes) {
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(bytes[i]);
  std::string header = bytes.substr(8, header_len);
  const size_t pad = min_bytes > bytes.size() ? min_bytes - bytes.size() : 0;
  header.append(pad, ' ');
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  return out + header + bytes.substr(8 + header_len);
}

TEST_F(ClientTest, LargeUploadIsSplitIntoChunks) {
  UploadSpec spec;
  spec.name = "lora-padded";
  spec.config_json = ReadFile(AdapterDir("lora-qv-r8") + "/adapter_config.json");
  spec.weights = PadSafetensorsHeader(
      ReadFile(AdapterDir("lora-qv-r8") + "/adapter_model.safetensors"), (5 << 20) / 2);
  ASSERT_GT(spec.weights.size(), 2 * LoramuxClient::kChunkBytes);
  absl::StatusOr<v1::AdapterInfo> info = client_->UploadAdapter(spec);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->size_bytes(), spec.weights.size());

  // The same weights, so the same golden tokens.
  v1::GenerateRequest request;
  request.set_adapter("lora-padded");
  request.mutable_prompt_token_ids()->Add(kPrompt.begin(), kPrompt.end());
  request.mutable_sampling()->set_max_new_tokens(12);
  absl::StatusOr<GenerateResult> result = client_->Generate(request);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_THAT(result->token_ids, ElementsAreArray(kLoraQvGolden));
}

TEST_F(ClientTest, ErrorsKeepTheirCodes) {
  v1::GenerateRequest request;
  request.set_adapter("no-such-adapter");
  request.add_prompt_token_ids(1);
  EXPECT_EQ(client_->Generate(request).status().code(), absl::StatusCode::kNotFound);

  // A callback returning false cancels the stream.
  v1::GenerateRequest base;
  base.mutable_prompt_token_ids()->Add(kPrompt.begin(), kPrompt.end());
  base.mutable_sampling()->set_max_new_tokens(50);
  int messages = 0;
  absl::StatusOr<GenerateResult> cancelled =
      client_->Generate(base, [&](const v1::GenerateResponse&) { return ++messages < 1; });
  EXPECT_EQ(cancelled.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(messages, 1);

  UploadSpec missing;
  missing.name = "missing-file";
  missing.config_json = "{}";
  missing.weights_path = server_->dir() + "/does-not-exist.safetensors";
  EXPECT_EQ(client_->UploadAdapter(missing).status().code(), absl::StatusCode::kNotFound);

  CliResult get = Cli({"get", "no-such-adapter"});
  EXPECT_EQ(get.exit_code, 1);
  EXPECT_THAT(get.err, HasSubstr("NOT_FOUND"));

  CliResult usage = Cli({"load", "--bogus", "x"});
  EXPECT_EQ(usage.exit_code, 2);
  EXPECT_THAT(usage.err, HasSubstr("--bogus"));
}

TEST_F(ClientTest, CliUploadFromDirectory) {
  CliResult upload = Cli({"upload", "cli-lora", AdapterDir("lora-qv-r8")});
  ASSERT_EQ(upload.exit_code, 0) << upload.err;
  EXPECT_THAT(upload.out, HasSubstr("uploaded cli-lora@"));
  CliResult get = Cli({"get", "cli-lora"});
  EXPECT_EQ(get.exit_code, 0) << get.err;
  EXPECT_THAT(get.out, HasSubstr("rank:           8"));
  CliResult remove = Cli({"delete", "cli-lora"});
  EXPECT_EQ(remove.exit_code, 0) << remove.err;
}

// Issue 10: `health`, --json on every command, exit codes 1 (server said no), 2 (usage) and
// 3 (nothing reachable).
TEST_F(ClientTest, CliHealthJsonAndExitCodes) {
  CliResult health = Cli({"health"});
  EXPECT_EQ(health.exit_code, 0) << health.err;
  EXPECT_EQ(health.out, "SERVING\n");
  CliResult json_health = Cli({"--json", "health"});
  EXPECT_EQ(json_health.exit_code, 0) << json_health.err;
  EXPECT_EQ(nlohmann::json::parse(json_health.out), nlohmann::json({{"status", "SERVING"}}));

  CliResult upload = Cli({"--json", "upload", "json-lora", AdapterDir("lora-qv-r8")});
  ASSERT_EQ(upload.exit_code, 0) << upload.err;
  const nlohmann::json info = nlohmann::json::parse(upload.out);  // one object, nothing else
  EXPECT_EQ(info["name"], "json-lora");
  EXPECT_EQ(info["rank"], 8);
  EXPECT_EQ(info["version"].get<std::string>().size(), 64u);
  CliResult generate = Cli({"--json", "generate", "--adapter", "json-lora", "--max_new_tokens",
                            absl::StrCat(kLoraQvGolden.size()), absl::StrJoin(kPrompt, ",")});
  ASSERT_EQ(generate.exit_code, 0) << generate.err;
  const nlohmann::json generated = nlohmann::json::parse(generate.out);
  EXPECT_EQ(generated["token_ids"].get<std::vector<int32_t>>(), kLoraQvGolden);
  EXPECT_EQ(generated["finish_reason"], "FINISH_REASON_LENGTH");
  EXPECT_EQ(generated["adapter_version"], info["version"]);
  CliResult list = Cli({"--json", "list"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  bool listed = false;
  const nlohmann::json adapters = nlohmann::json::parse(list.out)["adapters"];
  for (const auto& adapter : adapters) {
    listed = listed || adapter["name"] == "json-lora";
  }
  EXPECT_TRUE(listed) << list.out;
  CliResult score = Cli({"--json", "score", "--adapter", "json-lora", "109,277,235"});
  ASSERT_EQ(score.exit_code, 0) << score.err;
  EXPECT_EQ(nlohmann::json::parse(score.out)["token_logprobs"].size(), 2u);
  CliResult removed = Cli({"--json", "delete", "json-lora"});
  EXPECT_EQ(removed.exit_code, 0) << removed.err;
  EXPECT_EQ(nlohmann::json::parse(removed.out), nlohmann::json({{"deleted", "json-lora"}}));

  // The server said no: 1, and with --json the error as JSON on stderr.
  CliResult missing = Cli({"--json", "get", "json-lora"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_EQ(missing.out, "");
  EXPECT_EQ(nlohmann::json::parse(missing.err)["error"]["code"], "NOT_FOUND") << missing.err;
  // Bad usage: 2.
  EXPECT_EQ(Cli({"--retries=-1", "list"}).exit_code, 2);
  EXPECT_EQ(Cli({"health", "extra"}).exit_code, 2);
  CliResult usage = Cli({"--json", "generate", "not-a-token"});
  EXPECT_EQ(usage.exit_code, 2);
  EXPECT_EQ(nlohmann::json::parse(usage.err)["error"]["code"], "USAGE") << usage.err;
  // Nothing listening (a port bound but never listened on): 3, after the retries.
  const int sock = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(getsockname(sock, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const std::string dead = absl::StrCat("--server=127.0.0.1:", ntohs(addr.sin_port));
  for (const char* command : {"health", "list"}) {
    CliResult unreachable = Cli({dead, "--retries=2", command});
    EXPECT_EQ(unreachable.exit_code, 3) << command << ": " << unreachable.err;
    EXPECT_THAT(unreachable.err, HasSubstr("UNAVAILABLE"));
  }
  close(sock);
}

// A client with retries rides out a server that is not up yet; without them the same call fails
// UNAVAILABLE at once.
TEST(ClientRetryTest, RetriesUnavailableUntilTheServerIsUp) {
  const int sock = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(getsockname(sock, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const std::string address = absl::StrCat("127.0.0.1:", ntohs(addr.sin_port));
  close(sock);  // free again for the server below (the kernel does not hand it out at once)

  ClientOptions options;
  options.target = address;
  options.timeout = absl::Seconds(30);
  options.max_attempts = 1;
  auto once = LoramuxClient::Connect(options);
  ASSERT_TRUE(once.ok());
  EXPECT_EQ((*once)->ListAdapters().status().code(), absl::StatusCode::kUnavailable);

  options.max_attempts = 200;  // bounded: 200 x at most 0.5 s
  options.initial_backoff = absl::Milliseconds(50);
  options.max_backoff = absl::Milliseconds(500);
  auto retrying = LoramuxClient::Connect(options);
  ASSERT_TRUE(retrying.ok());
  // The calls run on their own thread while this one starts the server (the server must be
  // started here: it gets SIGKILL when the thread that forked it ends).
  absl::StatusOr<std::string> health = absl::UnknownError("not run");
  absl::StatusOr<std::vector<v1::AdapterInfo>> listed = absl::UnknownError("not run");
  std::thread calls([&] {
    health = (*retrying)->CheckHealth();
    listed = (*retrying)->ListAdapters();
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto server = std::make_unique<ServerProcess>(
      std::vector<std::string>{"--listen=" + address, "--metrics_listen=", "--drain_timeout_s=5"});
  calls.join();
  ASSERT_TRUE(server->ok()) << server->Log();
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, "SERVING");
  EXPECT_TRUE(listed.ok()) << listed.status();
}

}  // namespace
}  // namespace loramux
