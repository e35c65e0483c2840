// End-to-end tests of the real loramux_server binary on a loopback port: golden generations for
// the base model and every llama-tiny adapter, concurrency, Score logits, cancellation, deadlines,
// every error code, auth, TLS, health, reflection, the metrics page (promtool) and SIGTERM drain.
//
// Each test starts its own server process (`--listen 127.0.0.1:0`, a temporary store) and reads
// the `listening on HOST:PORT` line from its stdout; the process is killed when the test ends.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "adapters/safetensors.h"
#include "common/sha256.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loramux/v1/loramux.grpc.pb.h"

namespace loramux {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kServerBinary[] = LORAMUX_BINARY_DIR "/loramux_server";
constexpr char kData[] = LORAMUX_TEST_DATA;
constexpr int kGoldenSteps = 12;
const char* const kLlamaAdapters[] = {"lora-qv-r8", "lora-all-r4-rslora", "dora-qkvo-r8",
                                      "lora-pattern", "dora-mlp-r4"};

std::chrono::system_clock::time_point In(double seconds) {
  return std::chrono::system_clock::now() +
         std::chrono::duration_cast<std::chrono::system_clock::duration>(
             std::chrono::duration<double>(seconds));
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
}

std::string MakeTempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string pattern = std::string(base != nullptr && *base ? base : "/tmp") +
                        "/loramux-server-test-XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) return "";
  return pattern;
}

bool HaveCommand(const std::string& name) {
  return std::system(("command -v " + name + " >/dev/null 2>&1").c_str()) == 0;
}

// ---------------------------------------------------------------------------------------------
// The server as a child process.
// ---------------------------------------------------------------------------------------------

class ServerProcess {
 public:
  // Starts loramux_server with the test defaults plus `flags` (later flags win) and waits (up to
  // 60 s) for its `listening on` line. ok() tells whether that line came.
  explicit ServerProcess(const std::vector<std::string>& flags) {
    dir_ = MakeTempDir();
    log_path_ = dir_ + "/server.log";
    std::vector<std::string> args = {kServerBinary,
                                     "--listen=127.0.0.1:0",
                                     "--metrics_listen=127.0.0.1:0",
                                     "--adapter_store=" + dir_ + "/store",
                                     std::string("--model_dir=") + kData + "/llama-tiny",
                                     "--drain_timeout_s=30"};
    args.insert(args.end(), flags.begin(), flags.end());
    std::vector<char*> argv;
    for (std::string& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);

    int out[2];
    if (pipe2(out, O_CLOEXEC) != 0) return;
    const int log_fd = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    pid_ = fork();
    if (pid_ == 0) {
      // Only async-signal-safe calls between fork and exec.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      dup2(out[1], STDOUT_FILENO);
      dup2(log_fd, STDERR_FILENO);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(out[1]);
    close(log_fd);
    stdout_fd_ = out[0];

    std::string seen;
    const auto deadline = Clock::now() + std::chrono::seconds(60);
    while (Clock::now() < deadline) {
      pollfd p{stdout_fd_, POLLIN, 0};
      if (poll(&p, 1, 200) > 0) {
        char buffer[512];
        const ssize_t n = read(stdout_fd_, buffer, sizeof(buffer));
        if (n <= 0) break;  // the server exited
        seen.append(buffer, static_cast<size_t>(n));
        const size_t at = seen.find("listening on ");
        const size_t end = at == std::string::npos ? at : seen.find('\n', at);
        if (end != std::string::npos) {
          address_ = seen.substr(at + 13, end - at - 13);
          break;
        }
      }
      if (Exited()) break;
    }
    const std::string log = Log();
    const size_t metrics_at = log.find("metrics on http://");
    if (metrics_at != std::string::npos) {
      const size_t start = metrics_at + std::strlen("metrics on http://");
      metrics_address_ = log.substr(start, log.find("/metrics", start) - start);
    }
  }

  ~ServerProcess() {
    if (pid_ > 0 && !exit_code_.has_value()) {
      kill(pid_, SIGKILL);
      int status = 0;
      waitpid(pid_, &status, 0);
    }
    if (stdout_fd_ >= 0) close(stdout_fd_);
    if (!dir_.empty()) {
      std::error_code ignored;
      fs::remove_all(dir_, ignored);
    }
  }

  bool ok() const { return !address_.empty(); }
  const std::string& address() const { return address_; }
  const std::string& metrics_address() const { return metrics_address_; }
  const std::string& dir() const { return dir_; }
  std::string Log() const { return ReadFile(log_path_); }
  void Signal(int signal_number) { kill(pid_, signal_number); }

  // The exit code (128 + signal when killed), or nullopt when still running after `seconds`.
  std::optional<int> WaitExit(double seconds) {
    const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
    while (!Exited() && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return exit_code_;
  }

 private:
  bool Exited() {
    if (exit_code_.has_value()) return true;
    if (pid_ <= 0) return true;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) != pid_) return false;
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return true;
  }

  std::string dir_;
  std::string log_path_;
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  std::string address_;
  std::string metrics_address_;
  std::optional<int> exit_code_;
};

std::shared_ptr<grpc::Channel> Connect(
    const std::string& address,
    std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials(),
    grpc::ChannelArguments args = {}) {
  args.SetMaxReceiveMessageSize(64 << 20);
  auto channel = grpc::CreateCustomChannel(address, credentials, args);
  channel->WaitForConnected(In(10));
  return channel;
}

// ---------------------------------------------------------------------------------------------
// Golden data.
// ---------------------------------------------------------------------------------------------

struct GoldenCase {
  std::vector<int32_t> prompt;
  std::vector<int32_t> tokens;  // greedy, kGoldenSteps of them
};

const nlohmann::json& Results() {
  static const nlohmann::json* results = new nlohmann::json(
      nlohmann::json::parse(ReadFile(std::string(kData) + "/cases/results.json")));
  return *results;
}

// "llama-tiny/base", "llama-tiny/lora-qv-r8", ...
std::vector<GoldenCase> Golden(const std::string& key) {
  std::vector<GoldenCase> cases;
  for (const auto& entry : Results().at("generation").at(key)) {
    GoldenCase c;
    for (const auto& id : entry.at("input_ids")) c.prompt.push_back(id.get<int32_t>());
    for (const auto& id : entry.at("new_tokens")) c.tokens.push_back(id.get<int32_t>());
    cases.push_back(std::move(c));
  }
  return cases;
}

struct AdapterFiles {
  std::string config;
  std::string weights;
};

AdapterFiles ReadAdapter(const std::string& name) {
  const std::string dir = std::string(kData) + "/adapters/" + name;
  return {ReadFile(dir + "/adapter_config.json"), ReadFile(dir + "/adapter_model.safetensors")};
}

// Rewrites a safetensors file, letting `edit` change any tensor (shape and data).
std::string RewriteSafetensors(
    const std::string& bytes,
    const std::function<void(TensorView& view, std::vector<uint8_t>& data)>& edit) {
  auto file = SafetensorsFile::FromBytes(bytes, "test adapter");
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return "";
  std::vector<TensorView> views = (*file)->tensors();
  std::vector<std::vector<uint8_t>> storage(views.size());
  for (size_t i = 0; i < views.size(); ++i) {
    storage[i].assign(views[i].data, views[i].data + views[i].nbytes);
    edit(views[i], storage[i]);
    views[i].data = storage[i].data();
    views[i].nbytes = storage[i].size();
  }
  return SerializeSafetensors(views, (*file)->metadata());
}

// ---------------------------------------------------------------------------------------------
// RPC helpers.
// ---------------------------------------------------------------------------------------------

void Authorize(grpc::ClientContext& context, const std::string& token) {
  if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
}

v1::GenerateRequest MakeGenerate(const std::string& adapter, const std::vector<int32_t>& prompt,
                                 int max_new_tokens) {
  v1::GenerateRequest request;
  request.set_adapter(adapter);
  for (int32_t id : prompt) request.add_prompt_token_ids(id);
  request.mutable_sampling()->set_max_new_tokens(max_new_tokens);
  return request;
}

struct GenerateOutcome {
  grpc::Status status;
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  int messages = 0;
  v1::GenerateResponse last;
};

GenerateOutcome Generate(v1::Inference::Stub& stub, const v1::GenerateRequest& request,
                         double timeout_s = 30, const std::string& token = "") {
  GenerateOutcome out;
  grpc::ClientContext context;
  context.set_deadline(In(timeout_s));
  Authorize(context, token);
  auto reader = stub.Generate(&context, request);
  v1::GenerateResponse response;
  while (reader->Read(&response)) {
    out.tokens.insert(out.tokens.end(), response.token_ids().begin(), response.token_ids().end());
    out.logprobs.insert(out.logprobs.end(), response.logprobs().begin(),
                        response.logprobs().end());
    ++out.messages;
    out.last = response;
  }
  out.status = reader->Finish();
  return out;
}

// A stream that ended normally: every token arrived and the last message says why it ended
// (max_new_tokens, or EOS: greedy prompt 0 on llama-tiny reaches EOS after ~300 tokens).
void ExpectCompleteStream(const GenerateOutcome& out, int max_new_tokens) {
  EXPECT_EQ(static_cast<int>(out.tokens.size()), out.last.usage().generated_tokens());
  if (out.last.finish_reason() == v1::FINISH_REASON_LENGTH) {
    EXPECT_EQ(static_cast<int>(out.tokens.size()), max_new_tokens);
  } else {
    EXPECT_EQ(out.last.finish_reason(), v1::FINISH_REASON_STOP);
    EXPECT_LT(static_cast<int>(out.tokens.size()), max_new_tokens);
    ASSERT_FALSE(out.tokens.empty());
    EXPECT_EQ(out.tokens.back(), 2) << "llama-tiny's eos";
  }
}

grpc::Status Score(v1::Inference::Stub& stub, const v1::ScoreRequest& request,
                   v1::ScoreResponse* response, double timeout_s = 30) {
  grpc::ClientContext context;
  context.set_deadline(In(timeout_s));
  return stub.Score(&context, request, response);
}

// Sends `messages` as one Upload stream (whatever the server does with them).
grpc::Status UploadMessages(v1::Adapters::Stub& stub, const std::vector<v1::UploadRequest>& messages,
                            v1::AdapterInfo* info, const std::string& token = "") {
  grpc::ClientContext context;
  context.set_deadline(In(30));
  Authorize(context, token);
  auto writer = stub.Upload(&context, info);
  for (const v1::UploadRequest& message : messages) {
    if (!writer->Write(message)) break;  // the server already answered
  }
  writer->WritesDone();
  return writer->Finish();
}

v1::UploadManifest Manifest(const std::string& name, const AdapterFiles& files) {
  v1::UploadManifest manifest;
  manifest.set_name(name);
  manifest.set_format(v1::PEFT);
  manifest.set_config_json(files.config);
  manifest.set_size_bytes(files.weights.size());
  manifest.set_sha256(Sha256Hex(files.weights));
  return manifest;
}

// The manifest, then `weights` in chunks of `chunk` bytes.
std::vector<v1::UploadRequest> UploadStream(const v1::UploadManifest& manifest,
                                            const std::string& weights, size_t chunk = 4096) {
  std::vector<v1::UploadRequest> messages(1);
  *messages[0].mutable_manifest() = manifest;
  for (size_t at = 0; at < weights.size(); at += chunk) {
    messages.emplace_back().set_chunk(weights.substr(at, chunk));
  }
  return messages;
}

grpc::Status Upload(v1::Adapters::Stub& stub, const std::string& name, const AdapterFiles& files,
                    v1::AdapterInfo* info, const std::string& token = "") {
  return UploadMessages(stub, UploadStream(Manifest(name, files), files.weights), info, token);
}

// grpc.health.v1.Health/Check through the generic stub (Debian ships no health.proto). Returns
// the ServingStatus (1 SERVING, 2 NOT_SERVING) or -1 when the RPC failed.
int CheckHealth(const std::shared_ptr<grpc::Channel>& channel, const std::string& service = "",
                grpc::Status* rpc_status = nullptr) {
  grpc::GenericStub stub(channel);
  std::string request;
  if (!service.empty()) {  // HealthCheckRequest.service = 1 (string)
    request.push_back(0x0a);
    request.push_back(static_cast<char>(service.size()));
    request += service;
  }
  grpc::Slice slice(request);
  grpc::ByteBuffer request_buffer(&slice, 1);
  grpc::ByteBuffer response_buffer;
  grpc::ClientContext context;
  context.set_deadline(In(5));
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request_buffer,
                 &response_buffer, [&done](grpc::Status status) { done.set_value(status); });
  const grpc::Status status = done.get_future().get();  // bounded by the deadline
  if (rpc_status != nullptr) *rpc_status = status;
  if (!status.ok()) return -1;
  std::vector<grpc::Slice> slices;
  (void)response_buffer.Dump(&slices);
  std::string bytes;
  for (const grpc::Slice& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  // HealthCheckResponse.status = 1 (enum varint); absent means UNKNOWN (0).
  if (bytes.size() >= 2 && bytes[0] == 0x08) return static_cast<unsigned char>(bytes[1]);
  return 0;
}

// One ServerReflectionInfo exchange asking for list_services; returns the raw response bytes.
std::string ReflectionListServices(const std::shared_ptr<grpc::Channel>& channel) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  const auto deadline = In(10);
  context.set_deadline(deadline);
  grpc::CompletionQueue cq;
  auto call = stub.PrepareCall(
      &context, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  auto wait = [&cq, deadline]() {
    void* tag = nullptr;
    bool ok = false;
    return cq.AsyncNext(&tag, &ok, deadline) == grpc::CompletionQueue::GOT_EVENT && ok;
  };
  std::string out;
  call->StartCall(reinterpret_cast<void*>(1));
  bool ok = wait();
  if (ok) {
    const std::string request = std::string("\x3a\x01*", 3);  // list_services = 7: "*"
    grpc::Slice slice(request);
    grpc::ByteBuffer buffer(&slice, 1);
    call->Write(buffer, reinterpret_cast<void*>(2));
    ok = wait();
  }
  if (ok) {
    call->WritesDone(reinterpret_cast<void*>(3));
    ok = wait();
  }
  grpc::ByteBuffer response;
  if (ok) {
    call->Read(&response, reinterpret_cast<void*>(4));
    if (wait()) {
      std::vector<grpc::Slice> slices;
      (void)response.Dump(&slices);
      for (const grpc::Slice& s : slices) {
        out.append(reinterpret_cast<const char*>(s.begin()), s.size());
      }
    }
  }
  if (!ok) context.TryCancel();
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  wait();
  cq.Shutdown();
  void* tag = nullptr;
  bool ignored = false;
  while (cq.Next(&tag, &ignored)) {
  }
  return out;
}

// GET http://host:port/path with HTTP/1.0; returns the body ("" on failure).
std::string HttpGet(const std::string& host_port, const std::string& path) {
  const size_t colon = host_port.rfind(':');
  const int port = std::atoi(host_port.substr(colon + 1).c_str());
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "";
  timeval timeout{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  std::string response;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
        static_cast<ssize_t>(request.size())) {
      char buffer[8192];
      ssize_t n;
      while ((n = recv(fd, buffer, sizeof(buffer), 0)) > 0) response.append(buffer, n);
    }
  }
  close(fd);
  const size_t body = response.find("\r\n\r\n");
  return body == std::string::npos ? "" : response.substr(body + 4);
}

// The value of the sample line starting with `series` ("name" or "name{labels}"), or NaN.
double MetricValue(const std::string& page, const std::string& series) {
  std::istringstream lines(page);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(series + " ", 0) == 0) return std::atof(line.c_str() + series.size() + 1);
  }
  return std::nan("");
}

// ---------------------------------------------------------------------------------------------
// Fixture: one server per test, with the llama-tiny adapters uploaded.
// ---------------------------------------------------------------------------------------------

class ServerTest : public ::testing::Test {
 protected:
  void StartServer(const std::vector<std::string>& flags = {}) {
    server_ = std::make_unique<ServerProcess>(flags);
    ASSERT_TRUE(server_->ok()) << "the server did not print `listening on`; its log:\n"
                               << server_->Log();
    channel_ = Connect(server_->address());
    inference_ = v1::Inference::NewStub(channel_);
    adapters_ = v1::Adapters::NewStub(channel_);
  }

  void UploadLlamaAdapters(const std::string& token = "") {
    for (const char* name : kLlamaAdapters) {
      v1::AdapterInfo info;
      const grpc::Status status = Upload(*adapters_, name, ReadAdapter(name), &info, token);
      ASSERT_TRUE(status.ok()) << name << ": " << status.error_message();
      versions_[name] = info.version();
    }
  }

  std::string Metrics() { return HttpGet(server_->metrics_address(), "/metrics"); }

  std::unique_ptr<ServerProcess> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Inference::Stub> inference_;
  std::unique_ptr<v1::Adapters::Stub> adapters_;
  std::map<std::string, std::string> versions_;
};

// ---------------------------------------------------------------------------------------------
// Generation and scoring against the golden data.
// ---------------------------------------------------------------------------------------------

TEST_F(ServerTest, GenerateBaseMatchesGolden) {
  StartServer();
  for (const GoldenCase& c : Golden("llama-tiny/base")) {
    v1::GenerateRequest request = MakeGenerate("", c.prompt, kGoldenSteps);
    request.set_logprobs(true);
    const GenerateOutcome out = Generate(*inference_, request);
    ASSERT_TRUE(out.status.ok()) << out.status.error_message();
    EXPECT_EQ(out.tokens, c.tokens);
    EXPECT_EQ(out.logprobs.size(), out.tokens.size());
    for (float lp : out.logprobs) EXPECT_LE(lp, 0.0f);
    EXPECT_EQ(out.last.finish_reason(), v1::FINISH_REASON_LENGTH);
    EXPECT_EQ(out.last.usage().prompt_tokens(), static_cast<int>(c.prompt.size()));
    EXPECT_EQ(out.last.usage().generated_tokens(), kGoldenSteps);
    EXPECT_EQ(out.last.adapter_version(), "");
  }
}

TEST_F(ServerTest, UploadedAdaptersGenerateGoldenTokens) {
  StartServer();
  UploadLlamaAdapters();
  for (const char* name : kLlamaAdapters) {
    const AdapterFiles files = ReadAdapter(name);
    EXPECT_EQ(versions_[name], Sha256Hex(files.weights)) << name;
    for (const GoldenCase& c : Golden(std::string("llama-tiny/") + name)) {
      const GenerateOutcome out = Generate(*inference_, MakeGenerate(name, c.prompt, kGoldenSteps));
      ASSERT_TRUE(out.status.ok()) << name << ": " << out.status.error_message();
      EXPECT_EQ(out.tokens, c.tokens) << name;
      EXPECT_EQ(out.last.adapter_version(), versions_[name]) << name;
      EXPECT_EQ(out.last.finish_reason(), v1::FINISH_REASON_LENGTH);
    }
  }
  // "name@version-prefix" pins a version.
  const GoldenCase c = Golden("llama-tiny/dora-qkvo-r8")[1];
  const GenerateOutcome pinned = Generate(
      *inference_,
      MakeGenerate("dora-qkvo-r8@" + versions_["dora-qkvo-r8"].substr(0, 12), c.prompt,
                   kGoldenSteps));
  ASSERT_TRUE(pinned.status.ok()) << pinned.status.error_message();
  EXPECT_EQ(pinned.tokens, c.tokens);
}

TEST_F(ServerTest, ConcurrentStreamsEqualSingleRuns) {
  StartServer();
  UploadLlamaAdapters();
  struct Job {
    std::string adapter;
    GoldenCase golden;
    GenerateOutcome out;
  };
  std::vector<std::string> adapters = {""};
  adapters.insert(adapters.end(), std::begin(kLlamaAdapters), std::end(kLlamaAdapters));
  std::vector<Job> jobs;
  for (int i = 0; i < 24; ++i) {
    const std::string& adapter = adapters[i % adapters.size()];
    const std::string key = "llama-tiny/" + (adapter.empty() ? std::string("base") : adapter);
    jobs.push_back({adapter, Golden(key)[(i / adapters.size()) % 3], {}});
  }
  std::vector<std::thread> threads;
  for (Job& job : jobs) {
    threads.emplace_back([this, &job] {
      job.out = Generate(*inference_, MakeGenerate(job.adapter, job.golden.prompt, kGoldenSteps));
    });
  }
  for (std::thread& t : threads) t.join();
  for (const Job& job : jobs) {
    ASSERT_TRUE(job.out.status.ok()) << job.adapter << ": " << job.out.status.error_message();
    EXPECT_EQ(job.out.tokens, job.golden.tokens) << "adapter \"" << job.adapter << "\"";
  }
}

TEST_F(ServerTest, ScoreMatchesGoldenLogits) {
  StartServer();
  UploadLlamaAdapters();
  for (const std::string adapter : {"", "dora-qkvo-r8", "lora-pattern"}) {
    const std::string file = std::string(kData) + "/cases/llama-tiny/" +
                             (adapter.empty() ? std::string("base") : adapter) + ".safetensors";
    auto golden = SafetensorsFile::Open(file);
    ASSERT_TRUE(golden.ok()) << golden.status();
    for (int p = 0; p < 3; ++p) {
      const TensorView* ids = (*golden)->Find("p" + std::to_string(p) + ".input_ids");
      const TensorView* logits = (*golden)->Find("p" + std::to_string(p) + ".logits");
      ASSERT_NE(ids, nullptr);
      ASSERT_NE(logits, nullptr);
      const int64_t len = ids->shape[0], vocab = logits->shape[1];
      std::vector<int64_t> id_values(len);
      std::memcpy(id_values.data(), ids->data, len * sizeof(int64_t));
      std::vector<float> expected(len * vocab);
      std::memcpy(expected.data(), logits->data, expected.size() * sizeof(float));

      v1::ScoreRequest request;
      request.set_adapter(adapter);
      for (int64_t id : id_values) request.add_token_ids(static_cast<int32_t>(id));
      request.set_return_logits(true);
      v1::ScoreResponse response;
      const grpc::Status status = Score(*inference_, request, &response);
      ASSERT_TRUE(status.ok()) << adapter << ": " << status.error_message();
      ASSERT_EQ(response.vocab_size(), vocab);
      ASSERT_EQ(response.logits_size(), len * vocab);
      double worst = 0;
      for (int64_t i = 0; i < len * vocab; ++i) {
        worst = std::max(worst, std::abs(double(response.logits(i)) - expected[i]));
      }
      EXPECT_LE(worst, 1e-4) << "adapter \"" << adapter << "\" prompt " << p;
      ASSERT_EQ(response.token_logprobs_size(), len - 1);
      for (int64_t i = 0; i + 1 < len; ++i) {
        double max = -INFINITY, sum = 0;
        for (int64_t v = 0; v < vocab; ++v) max = std::max(max, double(expected[i * vocab + v]));
        for (int64_t v = 0; v < vocab; ++v) sum += std::exp(expected[i * vocab + v] - max);
        const double want = expected[i * vocab + id_values[i + 1]] - max - std::log(sum);
        EXPECT_NEAR(response.token_logprobs(i), want, 1e-4) << "position " << i;
      }
      if (!adapter.empty()) EXPECT_EQ(response.adapter_version(), versions_[adapter]);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Cancellation and deadlines.
// ---------------------------------------------------------------------------------------------

TEST_F(ServerTest, ClientCancelMidStreamLeavesServerHealthy) {
  StartServer();
  const GoldenCase c = Golden("llama-tiny/base")[0];
  {
    grpc::ClientContext context;
    context.set_deadline(In(30));
    auto reader = inference_->Generate(&context, MakeGenerate("", c.prompt, 480));
    v1::GenerateResponse response;
    ASSERT_TRUE(reader->Read(&response));
    context.TryCancel();
    int more = 0;
    while (reader->Read(&response) && more < 100000) ++more;
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  // The cancelled sequence is freed: nothing queued or running shortly after.
  double running = -1, queued = -1;
  for (int i = 0; i < 100; ++i) {
    const std::string page = Metrics();
    running = MetricValue(page, "loramux_running_requests");
    queued = MetricValue(page, "loramux_queue_depth");
    if (running == 0 && queued == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(running, 0);
  EXPECT_EQ(queued, 0);
  const GenerateOutcome after = Generate(*inference_, MakeGenerate("", c.prompt, kGoldenSteps));
  ASSERT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_EQ(after.tokens, c.tokens);
  EXPECT_EQ(CheckHealth(channel_), 1);
}

TEST_F(ServerTest, TinyDeadlineIsDeadlineExceeded) {
  StartServer();
  const GoldenCase c = Golden("llama-tiny/base")[2];
  const GenerateOutcome generate =
      Generate(*inference_, MakeGenerate("", c.prompt, 480), /*timeout_s=*/0.001);
  EXPECT_EQ(generate.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  v1::ScoreRequest score;
  for (int32_t id : c.prompt) score.add_token_ids(id);
  v1::ScoreResponse response;
  EXPECT_EQ(Score(*inference_, score, &response, /*timeout_s=*/0.001).error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
  const GenerateOutcome after = Generate(*inference_, MakeGenerate("", c.prompt, kGoldenSteps));
  ASSERT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_EQ(after.tokens, c.tokens);
}

// ---------------------------------------------------------------------------------------------
// Error codes.
// ---------------------------------------------------------------------------------------------

TEST_F(ServerTest, InferenceErrorCodes) {
  StartServer();
  const std::vector<int32_t> prompt = Golden("llama-tiny/base")[0].prompt;
  auto code_of = [this](const v1::GenerateRequest& request) {
    const GenerateOutcome out = Generate(*inference_, request);
    EXPECT_FALSE(out.status.error_message().empty() && !out.status.ok());
    return out.status.error_code();
  };
  EXPECT_EQ(code_of(MakeGenerate("no-such-adapter", prompt, 4)), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(code_of(MakeGenerate("", {}, 4)), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(code_of(MakeGenerate("", {5, 320}, 4)), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(code_of(MakeGenerate("", {5, -1}, 4)), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(code_of(MakeGenerate("bad/name", prompt, 4)), grpc::StatusCode::INVALID_ARGUMENT);
  v1::GenerateRequest nan_scale = MakeGenerate("", prompt, 4);
  nan_scale.set_adapter_scale(std::nanf(""));
  EXPECT_EQ(code_of(nan_scale), grpc::StatusCode::INVALID_ARGUMENT);
  v1::GenerateRequest text = MakeGenerate("", {}, 4);
  text.set_prompt_text("hello");
  const GenerateOutcome text_out = Generate(*inference_, text);
  EXPECT_EQ(text_out.status.error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_THAT(text_out.status.error_message(), HasSubstr("prompt_token_ids"));

  v1::ScoreRequest score;
  score.set_adapter("no-such-adapter");
  for (int32_t id : prompt) score.add_token_ids(id);
  v1::ScoreResponse response;
  EXPECT_EQ(Score(*inference_, score, &response).error_code(), grpc::StatusCode::NOT_FOUND);
  score.set_adapter("");
  score.add_token_ids(100000);
  EXPECT_EQ(Score(*inference_, score, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ServerTest, UploadErrorCodes) {
  StartServer({"--max_upload_bytes=4MiB"});
  const AdapterFiles good = ReadAdapter("lora-qv-r8");
  v1::AdapterInfo info;

  // Digest mismatch.
  v1::UploadManifest manifest = Manifest("digest", good);
  manifest.set_sha256(Sha256Hex("something else"));
  grpc::Status status = UploadMessages(*adapters_, UploadStream(manifest, good.weights), &info);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DATA_LOSS) << status.error_message();

  // Truncated: fewer bytes than declared.
  status = UploadMessages(*adapters_,
                          UploadStream(Manifest("truncated", good),
                                       good.weights.substr(0, good.weights.size() / 2)),
                          &info);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();

  // Declared size over --max_upload_bytes.
  manifest = Manifest("too-big", good);
  manifest.set_size_bytes(5ull << 20);
  status = UploadMessages(*adapters_, UploadStream(manifest, ""), &info);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();

  // Invalid name.
  status = UploadMessages(*adapters_, UploadStream(Manifest("../etc", good), good.weights), &info);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();

  // A chunk over 1 MiB.
  const std::string big((1 << 20) + 1, '\0');
  manifest = Manifest("big-chunk", {good.config, big});
  status = UploadMessages(*adapters_, UploadStream(manifest, big, big.size()), &info);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("chunk"));

  // A chunk before the manifest; a stream with no manifest at all.
  std::vector<v1::UploadRequest> no_manifest(1);
  no_manifest[0].set_chunk(good.weights.substr(0, 100));
  status = UploadMessages(*adapters_, no_manifest, &info);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  status = UploadMessages(*adapters_, {}, &info);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();

  // Shapes that do not fit the base: lora_A of layer 0 q_proj with in = 96 instead of 64.
  const std::string wrong_shape = RewriteSafetensors(
      good.weights, [](TensorView& view, std::vector<uint8_t>& data) {
        if (view.name != "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight") return;
        view.shape = {view.shape[0], 96};
        data.assign(static_cast<size_t>(view.shape[0]) * 96 * sizeof(float), 0);
      });
  status = Upload(*adapters_, "wrong-shape", {good.config, wrong_shape}, &info);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << status.error_message();

  // Non-finite weights.
  const std::string with_nan = RewriteSafetensors(
      good.weights, [](TensorView& view, std::vector<uint8_t>& data) {
        if (view.name != "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight") return;
        const float nan = std::nanf("");
        std::memcpy(data.data() + 4 * sizeof(float), &nan, sizeof(float));
      });
  status = Upload(*adapters_, "nan", {good.config, with_nan}, &info);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();

  // None of the failed uploads left anything behind.
  for (const std::string name : {"digest", "truncated", "too-big", "big-chunk", "wrong-shape",
                                 "nan"}) {
    grpc::ClientContext context;
    context.set_deadline(In(10));
    v1::GetAdapterRequest get;
    get.set_name(name);
    EXPECT_EQ(adapters_->Get(&context, get, &info).error_code(), grpc::StatusCode::NOT_FOUND)
        << name;
  }
  // The good one still goes through.
  status = Upload(*adapters_, "good", good, &info);
  EXPECT_TRUE(status.ok()) << status.error_message();
}

TEST_F(ServerTest, AdminRpcs) {
  StartServer();
  UploadLlamaAdapters();
  // Get reports what was uploaded.
  for (const char* name : kLlamaAdapters) {
    grpc::ClientContext context;
    context.set_deadline(In(10));
    v1::GetAdapterRequest get;
    get.set_name(name);
    v1::AdapterInfo info;
    ASSERT_TRUE(adapters_->Get(&context, get, &info).ok()) << name;
    EXPECT_EQ(info.name(), name);
    EXPECT_EQ(info.version(), versions_[name]);
    EXPECT_EQ(info.format(), v1::PEFT);
    EXPECT_EQ(info.size_bytes(), ReadAdapter(name).weights.size());
    EXPECT_EQ(info.use_dora(), std::string(name).rfind("dora", 0) == 0) << name;
  }
  // List in pages of 2 sees every name once, sorted.
  std::vector<std::string> listed;
  std::string token;
  for (int page = 0; page < 10; ++page) {
    grpc::ClientContext context;
    context.set_deadline(In(10));
    v1::ListAdaptersRequest list;
    list.set_page_size(2);
    list.set_page_token(token);
    v1::ListAdaptersResponse response;
    ASSERT_TRUE(adapters_->List(&context, list, &response).ok());
    EXPECT_LE(response.adapters_size(), 2);
    for (const auto& info : response.adapters()) listed.push_back(info.name());
    token = response.next_page_token();
    if (token.empty()) break;
  }
  std::vector<std::string> expected(std::begin(kLlamaAdapters), std::end(kLlamaAdapters));
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(listed, expected);

  // Load with pin makes it resident on the device; Unload drops the pin.
  {
    grpc::ClientContext context;
    context.set_deadline(In(30));
    v1::LoadAdapterRequest load;
    load.set_name("dora-qkvo-r8");
    load.set_pin(true);
    v1::AdapterInfo info;
    const grpc::Status status = adapters_->Load(&context, load, &info);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(info.residency(), v1::DEVICE);
    EXPECT_TRUE(info.pinned());
    EXPECT_EQ(info.rank(), 8);
  }
  {
    grpc::ClientContext context;
    context.set_deadline(In(10));
    v1::UnloadAdapterRequest unload;
    unload.set_name("dora-qkvo-r8");
    v1::AdapterInfo info;
    ASSERT_TRUE(adapters_->Unload(&context, unload, &info).ok());
    EXPECT_FALSE(info.pinned());
    EXPECT_NE(info.residency(), v1::DEVICE);
  }
  // Re-uploading the same bytes is idempotent.
  v1::AdapterInfo again;
  ASSERT_TRUE(Upload(*adapters_, "lora-qv-r8", ReadAdapter("lora-qv-r8"), &again).ok());
  EXPECT_EQ(again.version(), versions_["lora-qv-r8"]);

  // Delete: gone for admin and inference alike.
  {
    grpc::ClientContext context;
    context.set_deadline(In(10));
    v1::DeleteAdapterRequest del;
    del.set_name("lora-pattern");
    v1::DeleteAdapterResponse response;
    ASSERT_TRUE(adapters_->Delete(&context, del, &response).ok());
  }
  const GenerateOutcome gone =
      Generate(*inference_, MakeGenerate("lora-pattern", Golden("llama-tiny/base")[0].prompt, 4));
  EXPECT_EQ(gone.status.error_code(), grpc::StatusCode::NOT_FOUND);
  for (const char* rpc : {"Get", "Load", "Delete"}) {
    grpc::ClientContext context;
    context.set_deadline(In(10));
    v1::AdapterInfo info;
    grpc::Status status;
    if (std::string(rpc) == "Get") {
      v1::GetAdapterRequest r;
      r.set_name("lora-pattern");
      status = adapters_->Get(&context, r, &info);
    } else if (std::string(rpc) == "Load") {
      v1::LoadAdapterRequest r;
      r.set_name("lora-pattern");
      status = adapters_->Load(&context, r, &info);
    } else {
      v1::DeleteAdapterRequest r;
      r.set_name("lora-pattern");
      v1::DeleteAdapterResponse response;
      status = adapters_->Delete(&context, r, &response);
    }
    EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND) << rpc;
  }
}

TEST_F(ServerTest, FullQueueIsResourceExhausted) {
  StartServer({"--max_queue=1", "--max_running_requests=1"});
  const std::vector<int32_t> prompt = Golden("llama-tiny/base")[0].prompt;
  constexpr int kRequests = 8;
  std::vector<GenerateOutcome> outs(kRequests);
  std::vector<std::thread> threads;
  for (int i = 0; i < kRequests; ++i) {
    threads.emplace_back([this, &outs, &prompt, i] {
      outs[i] = Generate(*inference_, MakeGenerate("", prompt, 400));
    });
  }
  for (std::thread& t : threads) t.join();
  int exhausted = 0, ok = 0;
  for (const GenerateOutcome& out : outs) {
    if (out.status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) ++exhausted;
    if (out.status.ok()) {
      ++ok;
      ExpectCompleteStream(out, 400);
    }
    EXPECT_TRUE(out.status.ok() ||
                out.status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED)
        << out.status.error_message();
  }
  EXPECT_GE(exhausted, 1);
  EXPECT_GE(ok, 1);
}

// ---------------------------------------------------------------------------------------------
// Auth, TLS, health, reflection, metrics.
// ---------------------------------------------------------------------------------------------

TEST_F(ServerTest, TokensGuardTheirServices) {
  const std::string dir = MakeTempDir();
  WriteFile(dir + "/admin", "admin-secret\n");
  WriteFile(dir + "/inference", "  inference-secret \n");
  StartServer({"--admin_token_file=" + dir + "/admin",
               "--inference_token_file=" + dir + "/inference"});
  auto list = [this](const std::string& token) {
    grpc::ClientContext context;
    context.set_deadline(In(10));
    Authorize(context, token);
    v1::ListAdaptersResponse response;
    return adapters_->List(&context, v1::ListAdaptersRequest(), &response);
  };
  EXPECT_EQ(list("").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(list("wrong").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(list("inference-secret").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(list("admin-secret").ok());
  v1::AdapterInfo info;
  EXPECT_EQ(Upload(*adapters_, "lora-qv-r8", ReadAdapter("lora-qv-r8"), &info).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(Upload(*adapters_, "lora-qv-r8", ReadAdapter("lora-qv-r8"), &info, "admin-secret")
                  .ok());

  const GoldenCase c = Golden("llama-tiny/lora-qv-r8")[0];
  const v1::GenerateRequest request = MakeGenerate("lora-qv-r8", c.prompt, kGoldenSteps);
  EXPECT_EQ(Generate(*inference_, request).status.error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Generate(*inference_, request, 30, "admin-secret").status.error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  const GenerateOutcome out = Generate(*inference_, request, 30, "inference-secret");
  ASSERT_TRUE(out.status.ok()) << out.status.error_message();
  EXPECT_EQ(out.tokens, c.tokens);
  // Health never needs a token.
  EXPECT_EQ(CheckHealth(channel_), 1);
  std::error_code ignored;
  fs::remove_all(dir, ignored);
}

TEST_F(ServerTest, ServesTls) {
  if (!HaveCommand("openssl")) GTEST_SKIP() << "the openssl CLI is not installed";
  const std::string dir = MakeTempDir();
  const std::string cert = dir + "/cert.pem", key = dir + "/key.pem";
  const std::string command =
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
      "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout " + key + " -out " + cert +
      " >/dev/null 2>&1";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  server_ = std::make_unique<ServerProcess>(
      std::vector<std::string>{"--tls_cert_file=" + cert, "--tls_key_file=" + key});
  ASSERT_TRUE(server_->ok()) << server_->Log();

  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ReadFile(cert);
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride("localhost");
  auto channel = Connect(server_->address(), grpc::SslCredentials(ssl), args);
  auto stub = v1::Inference::NewStub(channel);
  const GoldenCase c = Golden("llama-tiny/base")[1];
  const GenerateOutcome out = Generate(*stub, MakeGenerate("", c.prompt, kGoldenSteps));
  ASSERT_TRUE(out.status.ok()) << out.status.error_message();
  EXPECT_EQ(out.tokens, c.tokens);
  EXPECT_EQ(CheckHealth(channel), 1);

  // A plaintext client gets nowhere.
  auto plain = v1::Inference::NewStub(
      grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  EXPECT_FALSE(Generate(*plain, MakeGenerate("", c.prompt, 2), /*timeout_s=*/3).status.ok());
  std::error_code ignored;
  fs::remove_all(dir, ignored);
}

TEST_F(ServerTest, HealthAndReflectionAnswer) {
  StartServer();
  EXPECT_EQ(CheckHealth(channel_), 1);
  EXPECT_EQ(CheckHealth(channel_, "loramux.v1.Inference"), 1);
  EXPECT_EQ(CheckHealth(channel_, "loramux.v1.Adapters"), 1);
  grpc::Status status;
  EXPECT_EQ(CheckHealth(channel_, "no.such.Service", &status), -1);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);

  const std::string services = ReflectionListServices(channel_);
  EXPECT_THAT(services, HasSubstr("loramux.v1.Inference"));
  EXPECT_THAT(services, HasSubstr("loramux.v1.Adapters"));
  EXPECT_THAT(services, HasSubstr("grpc.health.v1.Health"));
}

TEST_F(ServerTest, MetricsPagePassesPromtool) {
  StartServer();
  UploadLlamaAdapters();
  const GoldenCase c = Golden("llama-tiny/dora-qkvo-r8")[0];
  ASSERT_TRUE(Generate(*inference_, MakeGenerate("dora-qkvo-r8", c.prompt, kGoldenSteps)).status.ok());
  EXPECT_EQ(Generate(*inference_, MakeGenerate("missing", c.prompt, 2)).status.error_code(),
            grpc::StatusCode::NOT_FOUND);
  ASSERT_FALSE(server_->metrics_address().empty()) << server_->Log();
  const std::string page = Metrics();
  ASSERT_FALSE(page.empty());
  for (const char* name :
       {"loramux_requests_total{", "loramux_request_duration_seconds_bucket{",
        "loramux_time_to_first_token_seconds_bucket{", "loramux_inter_token_latency_seconds_bucket{",
        "loramux_generated_tokens_total ", "loramux_queue_depth ", "loramux_running_requests ",
        "loramux_batch_tokens ", "loramux_kv_cache_used_blocks ",
        "loramux_kv_cache_capacity_blocks ", "loramux_adapter_cache_hits_total ",
        "loramux_adapter_cache_misses_total ", "loramux_adapter_loads_total ",
        "loramux_adapter_evictions_total ", "loramux_adapter_resident_bytes{"}) {
    EXPECT_THAT(page, HasSubstr(name));
  }
  EXPECT_THAT(page, HasSubstr("code=\"NOT_FOUND\",rpc=\"Generate\""));
  EXPECT_THAT(page, HasSubstr("code=\"OK\",rpc=\"Upload\""));
  EXPECT_GE(MetricValue(page, "loramux_generated_tokens_total"), kGoldenSteps);
  // No adapter names as labels.
  EXPECT_THAT(page, Not(HasSubstr("dora-qkvo-r8")));

  if (!HaveCommand("promtool")) GTEST_SKIP() << "promtool is not installed";
  const std::string path = server_->dir() + "/metrics.txt";
  WriteFile(path, page);
  FILE* pipe = popen(("promtool check metrics < " + path + " 2>&1").c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buffer[512];
  while (fgets(buffer, sizeof(buffer), pipe) != nullptr) output += buffer;
  const int rc = pclose(pipe);
  EXPECT_EQ(rc, 0) << output;
  EXPECT_EQ(output, "");
}

// ---------------------------------------------------------------------------------------------
// SIGTERM drain.
// ---------------------------------------------------------------------------------------------

TEST_F(ServerTest, SigtermDrainsAndExitsZero) {
  // One request runs at a time, so the queued ones keep the drain busy for a while; they were
  // accepted before SIGTERM and must complete too.
  StartServer({"--max_running_requests=1"});
  const std::vector<GoldenCase> golden = Golden("llama-tiny/base");
  const std::vector<int32_t> prompt = golden[0].prompt;
  constexpr int kStreams = 6, kTokens = 480;
  std::atomic<int> first_messages{0};
  std::vector<GenerateOutcome> outs(kStreams);
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([this, &outs, &golden, &first_messages, i] {
      grpc::ClientContext context;
      context.set_deadline(In(60));
      auto reader =
          inference_->Generate(&context, MakeGenerate("", golden[i % 3].prompt, kTokens));
      v1::GenerateResponse response;
      while (reader->Read(&response)) {
        if (outs[i].messages++ == 0) ++first_messages;
        outs[i].tokens.insert(outs[i].tokens.end(), response.token_ids().begin(),
                              response.token_ids().end());
        outs[i].last = response;
      }
      outs[i].status = reader->Finish();
    });
  }
  // Wait until generation is under way, then ask the server to stop.
  for (int i = 0; i < 500 && first_messages.load() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_GT(first_messages.load(), 0);
  server_->Signal(SIGTERM);

  int health = -2;
  for (int i = 0; i < 250; ++i) {
    health = CheckHealth(channel_);
    if (health == 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(health, 2) << "health should turn NOT_SERVING while draining";
  const GenerateOutcome refused = Generate(*inference_, MakeGenerate("", prompt, 4), 10);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << refused.status.error_message();

  for (std::thread& t : threads) t.join();
  for (const GenerateOutcome& out : outs) {
    ASSERT_TRUE(out.status.ok()) << out.status.error_message();
    ExpectCompleteStream(out, kTokens);
  }
  const std::optional<int> code = server_->WaitExit(30);
  ASSERT_TRUE(code.has_value()) << "the server did not exit after draining";
  EXPECT_EQ(*code, 0) << server_->Log();
}

}  // namespace
}  // namespace loramux
