// See server_harness.h.
#include "tests/integration/server_harness.h"

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
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <list>
#include <random>
#include <sstream>
#include <thread>

#include <grpcpp/generic/generic_stub.h>

#include "common/sha256.h"
#include "gtest/gtest.h"

namespace loramux::testing {

namespace fs = std::filesystem;

const char kServerBinary[] = LORAMUX_BINARY_DIR "/loramux_server";
const char kData[] = LORAMUX_TEST_DATA;

std::chrono::system_clock::time_point In(double seconds) {
  return std::chrono::system_clock::now() +
         std::chrono::duration_cast<std::chrono::system_clock::duration>(
             std::chrono::duration<double>(seconds));
}

bool HaveCommand(const std::string& name) {
  return std::system(("command -v " + name + " >/dev/null 2>&1").c_str()) == 0;
}

// ---------------------------------------------------------------------------------------------
// The server as a child process.
// ---------------------------------------------------------------------------------------------

ServerProcess::ServerProcess(const std::vector<std::string>& flags, double start_timeout_s) {
  dir_ = MakeTempDir();
  log_path_ = dir_ + "/server.log";
  std::vector<std::string> args = {
      kServerBinary, "--listen=127.0.0.1:0", "--metrics_listen=127.0.0.1:0",
      "--adapter_store=" + dir_ + "/store", std::string("--model_dir=") + kData + "/llama-tiny",
      "--drain_timeout_s=30",
      // The golden data are float32's (the default, auto, picks
      // bfloat16 on CPUs with native bfloat16); tests may override.
      "--dtype=float32"};
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
  const auto deadline = Clock::now() + std::chrono::duration<double>(start_timeout_s);
  while (Clock::now() < deadline) {
    pollfd p{stdout_fd_, POLLIN, 0};
    if (poll(&p, 1, 200) > 0) {
      char buffer[512];
      const ssize_t n = read(stdout_fd_, buffer, sizeof(buffer));
      if (n <= 0) break;  // the server exited
      seen.append(buffer, static_cast<size_t>(n));
      // "listening on HOST:PORT" at the start of a line (not "http listening on").
      const size_t at = seen.rfind('\n' + std::string("listening on "));
      const size_t start = seen.rfind("listening on ", 0) == 0 ? 0
                           : at == std::string::npos           ? at
                                                               : at + 1;
      const size_t end = start == std::string::npos ? start : seen.find('\n', start);
      if (end != std::string::npos) {
        address_ = seen.substr(start + 13, end - start - 13);
        const size_t http_at = seen.find("http listening on ");
        if (http_at != std::string::npos) {
          http_address_ = seen.substr(http_at + 18, seen.find('\n', http_at) - http_at - 18);
        }
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

// In the ASan build (scripts/test_sanitized.sh) a server still running at the end of a test is
// stopped through its exit path, so that LeakSanitizer checks it; elsewhere it is killed, which
// saves the ~3 s a graceful exit takes.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kGracefulStop = true;
#else
constexpr bool kGracefulStop = false;
#endif

ServerProcess::~ServerProcess() {
  if (pid_ > 0 && !Exited()) {
    bool exited = false;
    if (kGracefulStop) {
      kill(pid_, SIGTERM);  // drain, then exit through main
      exited = WaitExit(5).has_value();
      if (!exited) {
        kill(pid_, SIGTERM);  // a second signal ends the drain at once
        exited = WaitExit(20).has_value();
      }
    }
    if (!exited) {
      kill(pid_, SIGKILL);
      int status = 0;
      waitpid(pid_, &status, 0);
    }
  }
  if (pid_ > 0) {
    const std::string report = SanitizerReport(Log());
    EXPECT_EQ(report, "") << "loramux_server (pid " << pid_ << ") reported a sanitizer finding";
  }
  if (stdout_fd_ >= 0) close(stdout_fd_);
  if (!dir_.empty()) {
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }
}

std::string ServerProcess::Log() const { return ReadFile(log_path_); }

void ServerProcess::Signal(int signal_number) {
  if (pid_ > 0 && !exit_code_.has_value()) kill(pid_, signal_number);
}

std::optional<int> ServerProcess::WaitExit(double seconds) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
  while (!Exited() && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return exit_code_;
}

bool ServerProcess::Exited() {
  if (exit_code_.has_value()) return true;
  if (pid_ <= 0) return true;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) != pid_) return false;
  exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return true;
}

std::string SanitizerReport(const std::string& log) {
  static const char* const kMarkers[] = {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                                         "runtime error:", "WARNING: ThreadSanitizer"};
  size_t first = std::string::npos;
  for (const char* marker : kMarkers) first = std::min(first, log.find(marker));
  if (first == std::string::npos) return "";
  const size_t line = log.rfind('\n', first);
  const size_t from = line == std::string::npos ? 0 : line + 1;
  return log.substr(from, 8192);
}

std::shared_ptr<grpc::Channel> Connect(const std::string& address,
                                       std::shared_ptr<grpc::ChannelCredentials> credentials,
                                       grpc::ChannelArguments args) {
  args.SetMaxReceiveMessageSize(64 << 20);
  auto channel = grpc::CreateCustomChannel(address, credentials, args);
  channel->WaitForConnected(In(10));
  return channel;
}

// ---------------------------------------------------------------------------------------------
// Golden data.
// ---------------------------------------------------------------------------------------------

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

AdapterFiles ReadAdapter(const std::string& name) {
  const std::string dir = std::string(kData) + "/adapters/" + name;
  return {ReadFile(dir + "/adapter_config.json"), ReadFile(dir + "/adapter_model.safetensors")};
}

// Rewrites a safetensors file, letting `edit` change any tensor (shape and data).
namespace {

// Tensors of a safetensors file being built: each tensor's data is kept until serialisation.
class TensorWriter {
 public:
  explicit TensorWriter(uint32_t seed, float stddev) : rng_(seed), normal_(0.0f, stddev) {}
  void Add(const std::string& name, std::vector<int64_t> shape, bool ones = false) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    data_.emplace_back(static_cast<size_t>(n));
    for (float& v : data_.back()) v = ones ? 1.0f : normal_(rng_);
    TensorView view;
    view.name = name;
    view.dtype = DType::kF32;
    view.shape = std::move(shape);
    view.data = reinterpret_cast<const uint8_t*>(data_.back().data());
    view.nbytes = static_cast<size_t>(n) * 4;
    views_.push_back(view);
  }
  std::string Serialize() const { return SerializeSafetensors(views_); }

 private:
  std::mt19937 rng_;
  std::normal_distribution<float> normal_;
  std::list<std::vector<float>> data_;  // stable addresses
  std::vector<TensorView> views_;
};

constexpr int kHidden = 32, kInter = 64, kHeads = 4, kKvHeads = 2, kHeadDim = 8;

}  // namespace

void WriteRandomLlama(const std::string& dir, int vocab, int max_position_embeddings) {
  WriteFile(dir + "/config.json",
            nlohmann::json{{"architectures", {"LlamaForCausalLM"}},
                           {"vocab_size", vocab},
                           {"hidden_size", kHidden},
                           {"intermediate_size", kInter},
                           {"num_hidden_layers", 1},
                           {"num_attention_heads", kHeads},
                           {"num_key_value_heads", kKvHeads},
                           {"max_position_embeddings", max_position_embeddings},
                           {"rms_norm_eps", 1e-6},
                           {"tie_word_embeddings", true},
                           {"bos_token_id", 1},
                           {"eos_token_id", 2}}
                .dump());
  TensorWriter w(7, 0.5f);
  w.Add("model.embed_tokens.weight", {vocab, kHidden});
  w.Add("model.norm.weight", {kHidden}, true);
  const std::string l = "model.layers.0.";
  w.Add(l + "input_layernorm.weight", {kHidden}, true);
  w.Add(l + "post_attention_layernorm.weight", {kHidden}, true);
  w.Add(l + "self_attn.q_proj.weight", {kHeads * kHeadDim, kHidden});
  w.Add(l + "self_attn.k_proj.weight", {kKvHeads * kHeadDim, kHidden});
  w.Add(l + "self_attn.v_proj.weight", {kKvHeads * kHeadDim, kHidden});
  w.Add(l + "self_attn.o_proj.weight", {kHidden, kHeads * kHeadDim});
  w.Add(l + "mlp.gate_proj.weight", {kInter, kHidden});
  w.Add(l + "mlp.up_proj.weight", {kInter, kHidden});
  w.Add(l + "mlp.down_proj.weight", {kHidden, kInter});
  WriteFile(dir + "/model.safetensors", w.Serialize());
}

void WriteChatLlama(const std::string& dir, int max_position_embeddings) {
  WriteRandomLlama(dir, 32000, max_position_embeddings);
  WriteFile(dir + "/tokenizer.json",
            ReadFile(std::string(kData) + "/tokenizers/llama2/tokenizer.json"));
  WriteFile(dir + "/tokenizer_config.json",
            ReadFile(std::string(kData) + "/chat_templates/llama2/tokenizer_config.json"));
}

AdapterFiles RandomLlamaLora(uint32_t seed) {
  AdapterFiles files;
  files.config =
      R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"],
                     "lora_dropout": 0.0, "bias": "none", "task_type": "CAUSAL_LM"})";
  TensorWriter w(seed, 1.0f);
  const std::string p = "base_model.model.model.layers.0.self_attn.";
  w.Add(p + "q_proj.lora_A.weight", {4, kHidden});
  w.Add(p + "q_proj.lora_B.weight", {kHeads * kHeadDim, 4});
  w.Add(p + "v_proj.lora_A.weight", {4, kHidden});
  w.Add(p + "v_proj.lora_B.weight", {kKvHeads * kHeadDim, 4});
  files.weights = w.Serialize();
  return files;
}

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

GenerateOutcome Generate(v1::Inference::Stub& stub, const v1::GenerateRequest& request,
                         double timeout_s, const std::string& token) {
  GenerateOutcome out;
  grpc::ClientContext context;
  context.set_deadline(In(timeout_s));
  Authorize(context, token);
  auto reader = stub.Generate(&context, request);
  v1::GenerateResponse response;
  while (reader->Read(&response)) {
    out.tokens.insert(out.tokens.end(), response.token_ids().begin(), response.token_ids().end());
    out.logprobs.insert(out.logprobs.end(), response.logprobs().begin(), response.logprobs().end());
    out.text += response.text();
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
                   v1::ScoreResponse* response, double timeout_s) {
  grpc::ClientContext context;
  context.set_deadline(In(timeout_s));
  return stub.Score(&context, request, response);
}

// Sends `messages` as one Upload stream (whatever the server does with them).
grpc::Status UploadMessages(v1::Adapters::Stub& stub,
                            const std::vector<v1::UploadRequest>& messages, v1::AdapterInfo* info,
                            const std::string& token) {
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
                                            const std::string& weights, size_t chunk) {
  std::vector<v1::UploadRequest> messages(1);
  *messages[0].mutable_manifest() = manifest;
  for (size_t at = 0; at < weights.size(); at += chunk) {
    messages.emplace_back().set_chunk(weights.substr(at, chunk));
  }
  return messages;
}

grpc::Status Upload(v1::Adapters::Stub& stub, const std::string& name, const AdapterFiles& files,
                    v1::AdapterInfo* info, const std::string& token) {
  return UploadMessages(stub, UploadStream(Manifest(name, files), files.weights), info, token);
}

grpc::Status GetAdapter(v1::Adapters::Stub& stub, const std::string& name, v1::AdapterInfo* info) {
  grpc::ClientContext context;
  context.set_deadline(In(10));
  v1::GetAdapterRequest request;
  request.set_name(name);
  return stub.Get(&context, request, info);
}

grpc::Status DeleteAdapter(v1::Adapters::Stub& stub, const std::string& name) {
  grpc::ClientContext context;
  context.set_deadline(In(10));
  v1::DeleteAdapterRequest request;
  request.set_name(name);
  v1::DeleteAdapterResponse response;
  return stub.Delete(&context, request, &response);
}

grpc::Status ListAdapters(v1::Adapters::Stub& stub, std::vector<v1::AdapterInfo>* adapters) {
  adapters->clear();
  std::string token;
  for (int page = 0; page < 1000; ++page) {  // bounded even if a server never ends the listing
    grpc::ClientContext context;
    context.set_deadline(In(10));
    v1::ListAdaptersRequest request;
    request.set_page_token(token);
    v1::ListAdaptersResponse response;
    const grpc::Status status = stub.List(&context, request, &response);
    if (!status.ok()) return status;
    adapters->insert(adapters->end(), response.adapters().begin(), response.adapters().end());
    token = response.next_page_token();
    if (token.empty()) return grpc::Status::OK;
  }
  return grpc::Status(grpc::StatusCode::INTERNAL, "List did not end after 1000 pages");
}

// grpc.health.v1.Health/Check through the generic stub (Debian ships no health.proto). Returns
// the ServingStatus (1 SERVING, 2 NOT_SERVING) or -1 when the RPC failed.
int CheckHealth(const std::shared_ptr<grpc::Channel>& channel, const std::string& service,
                grpc::Status* rpc_status) {
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
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
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
std::string RunCommand(const std::string& command) {
  std::string out;
  FILE* pipe = popen(("timeout 120 " + command).c_str(), "r");
  if (pipe == nullptr) return out;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) out.append(buffer, n);
  pclose(pipe);
  return out;
}

std::string ShellQuote(const std::string& s) {
  std::string quoted = "'";
  for (char c : s) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

HttpReply Curl(const std::string& origin, const std::string& method, const std::string& path,
               const std::string& body, const std::string& token, const std::string& curl_args) {
  const std::string dir = MakeTempDir();
  WriteFile(dir + "/body", body);
  std::string command = "curl -sS -m 60 -X " + method + " -o " + dir + "/out -D " + dir +
                        "/headers -w '%{http_code}' " + curl_args;
  if (!body.empty())
    command += " -H 'Content-Type: application/json' --data-binary @" + dir + "/body";
  if (!token.empty()) command += " -H " + ShellQuote("Authorization: Bearer " + token);
  HttpReply reply;
  reply.status = std::atoi(RunCommand(command + " " + ShellQuote(origin + path)).c_str());
  reply.headers = ReadFile(dir + "/headers");
  reply.body = ReadFile(dir + "/out");
  fs::remove_all(dir);
  return reply;
}

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
// Process and store inspection.
// ---------------------------------------------------------------------------------------------

int64_t ResidentBytes(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atoll(line.c_str() + 6) * 1024;  // "N kB"
  }
  return -1;
}

std::vector<std::string> VerifyStore(const std::string& root, int* versions_checked) {
  std::vector<std::string> problems;
  int checked = 0;
  std::error_code ec;
  const fs::path adapters = fs::path(root) / "adapters";
  for (const auto& name_dir : fs::directory_iterator(adapters, ec)) {
    const std::string name = name_dir.path().filename().string();
    std::error_code versions_ec;
    for (const auto& version_dir :
         fs::directory_iterator(name_dir.path() / "versions", versions_ec)) {
      ++checked;
      const fs::path dir = version_dir.path();
      for (const char* file :
           {"MANIFEST.json", "adapter_config.json", "adapter_model.safetensors"}) {
        if (!fs::is_regular_file(dir / file)) problems.push_back(dir.string() + ": no " + file);
      }
      const std::string digest = Sha256Hex(ReadFile((dir / "adapter_model.safetensors").string()));
      if (digest != dir.filename().string()) {
        problems.push_back(dir.string() + ": the weights hash to " + digest);
      }
    }
    if (versions_ec) problems.push_back(name + ": cannot list versions/: " + versions_ec.message());
    std::string current = ReadFile((name_dir.path() / "CURRENT").string());
    while (!current.empty() && std::isspace(static_cast<unsigned char>(current.back()))) {
      current.pop_back();
    }
    if (current.empty()) {
      problems.push_back(name + ": no CURRENT (or an empty one)");
    } else if (!fs::is_directory(name_dir.path() / "versions" / current)) {
      problems.push_back(name + ": CURRENT names " + current + ", which is not a version");
    }
  }
  if (ec) problems.push_back("listing " + adapters.string() + ": " + ec.message());
  if (versions_checked != nullptr) *versions_checked = checked;
  return problems;
}

}  // namespace loramux::testing
