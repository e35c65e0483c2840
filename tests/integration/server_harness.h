// Helpers for tests that run the real loramux_server binary as a child process on a loopback
// port: the process itself, golden data, adapter files, and thin RPC wrappers.
//
// Every wait is bounded (deadlines on each RPC, a timeout on the server's start). Nothing here
// is thread-safe unless said otherwise; the RPC helpers may be called from several threads at
// once on one stub (gRPC stubs are thread-safe).
//
// Needs the compile definitions LORAMUX_TEST_DATA (tests/data) and LORAMUX_BINARY_DIR (the build
// dir holding loramux_server) on the library that compiles server_harness.cc.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "formats/safetensors.h"
#include "loramux/v1/loramux.grpc.pb.h"
#include "tests/test_files.h"  // ReadFile, WriteFile, MakeTempDir

namespace loramux::testing {

using Clock = std::chrono::steady_clock;

extern const char kServerBinary[];       // <build dir>/loramux_server
extern const char kData[];               // tests/data
inline constexpr int kGoldenSteps = 12;  // greedy tokens per golden generation case
inline constexpr const char* kLlamaAdapters[] = {"lora-qv-r8", "lora-all-r4-rslora", "dora-qkvo-r8",
                                                 "lora-pattern", "dora-mlp-r4"};

// `seconds` from now, as a gRPC deadline.
std::chrono::system_clock::time_point In(double seconds);

// True when `name` is on the PATH.
bool HaveCommand(const std::string& name);

// ---------------------------------------------------------------------------------------------
// The server as a child process.
// ---------------------------------------------------------------------------------------------

// One loramux_server process. The destructor kills it (SIGKILL) if still running, or in the
// ASan build stops it through its exit path (SIGTERM; a second one after 5 s; SIGKILL after 20 s
// more) so that LeakSanitizer checks it; then it adds a test failure when the server's log holds
// a sanitizer report (see SanitizerReport). The child gets SIGKILL when the
// test process dies (PR_SET_PDEATHSIG). Its temporary dir (log, default store) is removed by the
// destructor.
class ServerProcess {
 public:
  // Starts loramux_server with the test defaults (127.0.0.1:0 for gRPC and metrics, a store in
  // dir()/store, the llama-tiny model) plus `flags` (later flags win, so `--adapter_store=...`
  // points it elsewhere) and waits up to `start_timeout_s` for its `listening on` line.
  // ok() tells whether that line came.
  explicit ServerProcess(const std::vector<std::string>& flags, double start_timeout_s = 60);
  ~ServerProcess();
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  bool ok() const { return !address_.empty(); }
  const std::string& address() const { return address_; }  // "127.0.0.1:PORT"
  const std::string& metrics_address() const { return metrics_address_; }
  // The HTTP front's "127.0.0.1:PORT" (given --http_listen), else "".
  const std::string& http_address() const { return http_address_; }
  const std::string& dir() const { return dir_; }
  pid_t pid() const { return pid_; }
  std::string Log() const;  // its stderr so far
  void Signal(int signal_number);

  // The exit code (128 + signal when killed), or nullopt when still running after `seconds`.
  std::optional<int> WaitExit(double seconds);

 private:
  bool Exited();

  std::string dir_;
  std::string log_path_;
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  std::string address_;
  std::string metrics_address_;
  std::string http_address_;
  std::optional<int> exit_code_;
};

// The first AddressSanitizer, LeakSanitizer, UndefinedBehaviorSanitizer or ThreadSanitizer
// report in a child's log (with up to 8 KiB that follow it), or "" when there is none. The
// sanitized builds (scripts/test_sanitized.sh) stop a child at its first report, so a report
// means the child found a bug: tests fail on a non-empty result.
std::string SanitizerReport(const std::string& log);

// A channel to `address`, after waiting (up to 10 s) for it to connect. Receives up to 64 MiB.
std::shared_ptr<grpc::Channel> Connect(
    const std::string& address,
    std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials(),
    grpc::ChannelArguments args = {});

// ---------------------------------------------------------------------------------------------
// Golden data and adapter files.
// ---------------------------------------------------------------------------------------------

struct GoldenCase {
  std::vector<int32_t> prompt;
  std::vector<int32_t> tokens;  // greedy, kGoldenSteps of them
};

// tests/data/cases/results.json, parsed once (thread-safe).
const nlohmann::json& Results();
// The greedy generation cases under results.json "generation" → `key` ("llama-tiny/base",
// "llama-tiny/lora-qv-r8", ...).
std::vector<GoldenCase> Golden(const std::string& key);

struct AdapterFiles {
  std::string config;   // adapter_config.json
  std::string weights;  // adapter_model.safetensors
};

// tests/data/adapters/<name>/.
AdapterFiles ReadAdapter(const std::string& name);

// A random one-layer Llama (hidden 32, 4 heads, 2 KV heads, tied embeddings, BOS 1, EOS 2) with
// `vocab` tokens: config.json and model.safetensors in `dir`. Seeded: the same files every time.
void WriteRandomLlama(const std::string& dir, int vocab, int max_position_embeddings = 512);
// WriteRandomLlama with llama2's vocabulary, tokenizer.json and chat template: a model that
// serves text and conversations.
void WriteChatLlama(const std::string& dir, int max_position_embeddings = 512);
// A PEFT LoRA adapter (rank 4, alpha 8, q_proj and v_proj) for WriteRandomLlama's model, with
// factors drawn from `seed` large enough to change its greedy tokens.
AdapterFiles RandomLlamaLora(uint32_t seed);

// Rewrites a safetensors file, letting `edit` change any tensor (shape and data). Adds a test
// failure and returns "" when `bytes` do not parse.
std::string RewriteSafetensors(
    const std::string& bytes,
    const std::function<void(TensorView& view, std::vector<uint8_t>& data)>& edit);

// ---------------------------------------------------------------------------------------------
// RPC helpers.
// ---------------------------------------------------------------------------------------------

// Adds `authorization: Bearer <token>` unless `token` is empty.
void Authorize(grpc::ClientContext& context, const std::string& token);

v1::GenerateRequest MakeGenerate(const std::string& adapter, const std::vector<int32_t>& prompt,
                                 int max_new_tokens);

struct GenerateOutcome {
  grpc::Status status;
  std::vector<int32_t> tokens;  // all messages' tokens, in order
  std::vector<float> logprobs;  // likewise
  std::string text;             // likewise (empty without a tokenizer)
  int messages = 0;
  v1::GenerateResponse last;  // the last message read
};

// Reads the whole stream (deadline `timeout_s`).
GenerateOutcome Generate(v1::Inference::Stub& stub, const v1::GenerateRequest& request,
                         double timeout_s = 30, const std::string& token = "");

// Expects a stream that ended normally: every token arrived and the last message says why it
// ended (max_new_tokens, or llama-tiny's EOS).
void ExpectCompleteStream(const GenerateOutcome& out, int max_new_tokens);

grpc::Status Score(v1::Inference::Stub& stub, const v1::ScoreRequest& request,
                   v1::ScoreResponse* response, double timeout_s = 30);

// Sends `messages` as one Upload stream (whatever the server does with them); deadline 30 s.
grpc::Status UploadMessages(v1::Adapters::Stub& stub,
                            const std::vector<v1::UploadRequest>& messages, v1::AdapterInfo* info,
                            const std::string& token = "");

// A PEFT manifest for `files` under `name`, with their true size and sha256.
v1::UploadManifest Manifest(const std::string& name, const AdapterFiles& files);

// The manifest, then `weights` in chunks of `chunk` bytes.
std::vector<v1::UploadRequest> UploadStream(const v1::UploadManifest& manifest,
                                            const std::string& weights, size_t chunk = 4096);

// Uploads `files` under `name` with a correct manifest.
grpc::Status Upload(v1::Adapters::Stub& stub, const std::string& name, const AdapterFiles& files,
                    v1::AdapterInfo* info, const std::string& token = "");

// Adapters.Get / Delete / List (all pages, names sorted as the server returns them); deadline
// 10 s per call.
grpc::Status GetAdapter(v1::Adapters::Stub& stub, const std::string& name, v1::AdapterInfo* info);
grpc::Status DeleteAdapter(v1::Adapters::Stub& stub, const std::string& name);
grpc::Status ListAdapters(v1::Adapters::Stub& stub, std::vector<v1::AdapterInfo>* adapters);

// grpc.health.v1.Health/Check through the generic stub (Debian ships no health.proto). Returns
// the ServingStatus (1 SERVING, 2 NOT_SERVING) or -1 when the RPC failed.
int CheckHealth(const std::shared_ptr<grpc::Channel>& channel, const std::string& service = "",
                grpc::Status* rpc_status = nullptr);

// One ServerReflectionInfo exchange asking for list_services; returns the raw response bytes.
std::string ReflectionListServices(const std::shared_ptr<grpc::Channel>& channel);

// Runs a shell command under `timeout 120`, returning its stdout.
std::string RunCommand(const std::string& command);
// `s` quoted for the shell.
std::string ShellQuote(const std::string& s);

struct HttpReply {
  int status = 0;  // 0 when curl could not connect
  std::string headers;
  std::string body;
  nlohmann::json json() const {
    return nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  }
};

// curl METHOD ORIGIN/path (ORIGIN "http://host:port" or "https://...") with an optional JSON
// `body`, bearer `token` and further curl arguments (e.g. "--cacert FILE"); 60 s at most.
HttpReply Curl(const std::string& origin, const std::string& method, const std::string& path,
               const std::string& body = "", const std::string& token = "",
               const std::string& curl_args = "");

// GET http://host:port/path with HTTP/1.0 (5 s socket timeouts); returns the body ("" on failure).
std::string HttpGet(const std::string& host_port, const std::string& path);

// The value of the sample line starting with `series` ("name" or "name{labels}"), or NaN.
double MetricValue(const std::string& page, const std::string& series);

// ---------------------------------------------------------------------------------------------
// Process and store inspection (for soak-style tests).
// ---------------------------------------------------------------------------------------------

// The resident set size of process `pid` in bytes (VmRSS in /proc/PID/status), or -1 when the
// process is gone or a zombie (no VmRSS line). Thread-safe.
int64_t ResidentBytes(pid_t pid);

// Checks an adapter store root (adapters/<name>/CURRENT, adapters/<name>/versions/<sha256>/):
// every version directory holds MANIFEST.json, adapter_config.json and adapter_model.safetensors
// whose sha256 is the directory's name, and every CURRENT names an existing version. Returns one
// line per problem (empty: the store verifies). `versions_checked`, when given, gets the count of
// version directories read.
std::vector<std::string> VerifyStore(const std::string& root, int* versions_checked = nullptr);

}  // namespace loramux::testing
