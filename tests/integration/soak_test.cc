// Soak (issue 12): the real loramux_server on loopback under hundreds of concurrent streams over
// many adapters, with hostile requests mixed in and adapters uploaded and deleted meanwhile.
//
//  1. Quiet: every honest request spec (adapter source, prompt, sampling variant) runs alone once;
//     its result is what the same spec must give under load.
//  2. Warm-up: one concurrent burst, then the server's RSS is the baseline.
//  3. Soak, bounded by kSoakRequests and kSoakTime: kInFlight client threads issue honest
//     Generate/Score requests over kAliases names (the llama-tiny golden LoRA and DoRA adapters,
//     each uploaded under several names) and the base, mixed with hostile ones (extreme
//     adapter_scale, 100k stop ids, a 2M-token prompt, a message over the 4 MiB limit, absurd
//     sampling values, unknown adapters, out-of-vocabulary ids, over-large Score logits, adapters
//     whose factors are finite but x1e20, cancellations and disconnects mid-stream, past and short
//     deadlines); admin threads upload new versions of and delete other names, pin and unpin.
//  4. Checks: the process stays alive; every honest response equals its quiet run (tokens and
//     finish reason exactly, floats within kFloatTolerance); every hostile one ends with one of
//     the codes its kind allows (never INTERNAL, never OK with garbage); afterwards running
//     requests, queue and KV blocks are 0, RSS is near the warm-up level, the store verifies,
//     and once every name is deleted no adapter stays resident (a leaked user would keep one).
//
// Prints a summary table (requests by kind and code, RSS, duration). Label `soak`.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "common/sha256.h"
#include "gtest/gtest.h"
#include "loramux/v1/loramux.grpc.pb.h"
#include "tests/integration/server_harness.h"

namespace loramux::testing {
namespace {

using grpc::StatusCode;

constexpr int kAliases = 24;         // names serving the 5 llama-tiny adapters (alias i -> i % 5)
constexpr int kChurnNames = 4;       // uploaded, re-versioned and deleted during the soak
constexpr int kSoakRequests = 4000;  // at most this many client requests ...
constexpr auto kSoakTime = std::chrono::seconds(60);  // ... within at most this long
constexpr int kInFlight = 64;                         // client threads, one request at a time each
constexpr int kChannels = 4;                  // separate connections the client threads share
constexpr int kLongTokens = 300;              // honest long streams, and what cancels/deadlines cut
constexpr double kFloatTolerance = 1e-4;      // logprobs and logits vs the quiet run
constexpr int kHugePromptTokens = 2'000'000;  // 2-byte varints: just under 4 MiB
constexpr int kOversizePromptTokens = 2'200'000;  // just over the 4 MiB message limit
// Small adapter budgets so the 24 names keep being evicted and reloaded under load.
const std::vector<std::string> kServerFlags = {"--max_device_adapter_bytes=256KiB",
                                               "--max_host_adapter_bytes=128KiB",
                                               "--max_score_logits_bytes=64KiB"};

const char* CodeName(StatusCode code) {
  switch (code) {
    case StatusCode::OK: return "OK";
    case StatusCode::CANCELLED: return "CANCELLED";
    case StatusCode::UNKNOWN: return "UNKNOWN";
    case StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case StatusCode::NOT_FOUND: return "NOT_FOUND";
    case StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case StatusCode::ABORTED: return "ABORTED";
    case StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case StatusCode::INTERNAL: return "INTERNAL";
    case StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case StatusCode::DATA_LOSS: return "DATA_LOSS";
    case StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "?";
  }
}

std::string AliasName(int i) { return "a" + std::to_string(100 + i).substr(1); }  // a00..a23
std::string SourceOfAlias(int i) { return kLlamaAdapters[i % std::size(kLlamaAdapters)]; }

// ---------------------------------------------------------------------------------------------
// Honest requests and their quiet results.
// ---------------------------------------------------------------------------------------------

// One honest request shape. `source` is "" (base) or a tests/data/adapters name; the request
// goes to any name serving that source.
struct Spec {
  std::string source;
  int prompt = 0;  // index into the golden cases of llama-tiny/<source or base>
  bool score = false;
  int max_new_tokens = kGoldenSteps;
  float adapter_scale = 0;  // 0 = 1
  float temperature = 0;    // 1e-45 is accepted as greedy
  bool logprobs = false;
  std::vector<int32_t> stop_token_ids;
  bool golden = false;  // plain greedy kGoldenSteps: must also equal the golden tokens
};

// What a spec gave when it ran alone.
struct Quiet {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;  // generate: per token; score: token_logprobs
  std::vector<float> logits;    // score only
  v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED;
};

std::vector<int32_t> PromptOf(const Spec& spec) {
  return Golden("llama-tiny/" +
                (spec.source.empty() ? std::string("base") : spec.source))[spec.prompt]
      .prompt;
}

v1::GenerateRequest GenerateFor(const Spec& spec, const std::string& adapter) {
  v1::GenerateRequest request = MakeGenerate(adapter, PromptOf(spec), spec.max_new_tokens);
  request.set_adapter_scale(spec.adapter_scale);
  request.mutable_sampling()->set_temperature(spec.temperature);
  request.set_logprobs(spec.logprobs);
  for (int32_t id : spec.stop_token_ids) request.add_stop_token_ids(id);
  return request;
}

v1::ScoreRequest ScoreFor(const Spec& spec, const std::string& adapter) {
  v1::ScoreRequest request;
  request.set_adapter(adapter);
  request.set_adapter_scale(spec.adapter_scale);
  for (int32_t id : PromptOf(spec)) request.add_token_ids(id);
  request.set_return_logits(true);
  return request;
}

std::vector<Spec> MakeSpecs() {
  std::vector<std::string> sources = {""};
  sources.insert(sources.end(), std::begin(kLlamaAdapters), std::end(kLlamaAdapters));
  std::vector<Spec> specs;
  for (size_t s = 0; s < sources.size(); ++s) {
    const std::string& source = sources[s];
    const GoldenCase stop_case =
        Golden("llama-tiny/" + (source.empty() ? std::string("base") : source))[2];
    for (int p = 0; p < 3; ++p) {
      Spec plain{source, p};
      plain.golden = true;
      specs.push_back(plain);
    }
    Spec denormal{source, static_cast<int>(s % 3)};
    denormal.temperature = 1e-45f;
    denormal.logprobs = true;
    specs.push_back(denormal);
    Spec stops{source, 2};
    stops.stop_token_ids = {stop_case.tokens[5], 319};
    specs.push_back(stops);
    Spec score{source, static_cast<int>((s + 1) % 3)};
    score.score = true;
    specs.push_back(score);
    if (!source.empty()) {
      Spec scaled{source, 1};
      scaled.adapter_scale = 0.5f;
      scaled.logprobs = true;
      specs.push_back(scaled);
    }
    if (s < 3) {
      Spec long_run{source, 0};
      long_run.max_new_tokens = kLongTokens;
      specs.push_back(long_run);
    }
  }
  return specs;
}

// "" when `got` matches `want` (generate or score), else what differs. Tracks the largest float
// difference seen in `worst`.
std::string Compare(const Quiet& want, const Quiet& got, double* worst) {
  if (got.tokens != want.tokens) {
    std::string message = "tokens differ: got";
    for (int32_t t : got.tokens) message += " " + std::to_string(t);
    message += ", quiet run";
    for (int32_t t : want.tokens) message += " " + std::to_string(t);
    return message;
  }
  if (got.finish != want.finish) {
    return "finish reason " + std::to_string(got.finish) + ", quiet run " +
           std::to_string(want.finish);
  }
  auto close = [worst](const std::vector<float>& a, const std::vector<float>& b,
                       const char* what) -> std::string {
    if (a.size() != b.size()) {
      return std::string(what) + ": " + std::to_string(a.size()) + " values, quiet run " +
             std::to_string(b.size());
    }
    for (size_t i = 0; i < a.size(); ++i) {
      const double diff = std::abs(double(a[i]) - double(b[i]));
      if (!(diff <= kFloatTolerance)) {
        return std::string(what) + "[" + std::to_string(i) + "] = " + std::to_string(a[i]) +
               ", quiet run " + std::to_string(b[i]);
      }
      *worst = std::max(*worst, diff);
    }
    return "";
  };
  if (std::string m = close(got.logprobs, want.logprobs, "logprobs"); !m.empty()) return m;
  return close(got.logits, want.logits, "logits");
}

bool IsPrefix(const std::vector<int32_t>& prefix, const std::vector<int32_t>& of) {
  return prefix.size() <= of.size() && std::equal(prefix.begin(), prefix.end(), of.begin());
}

Quiet FromGenerate(const GenerateOutcome& out) {
  return {out.tokens, out.logprobs, {}, out.last.finish_reason()};
}

Quiet FromScore(const v1::ScoreResponse& response) {
  return {{},
          {response.token_logprobs().begin(), response.token_logprobs().end()},
          {response.logits().begin(), response.logits().end()},
          v1::FINISH_REASON_UNSPECIFIED};
}

// ---------------------------------------------------------------------------------------------
// Outcome bookkeeping.
// ---------------------------------------------------------------------------------------------

enum class Kind {
  kHonestGenerate,
  kHonestScore,
  kExtremeScale,
  kHugeStopIds,
  kHugePrompt,
  kOversizeMessage,
  kHugeMaxNewTokens,
  kBadSampling,
  kUnknownAdapter,
  kOutOfVocabulary,
  kBadScore,
  kPromptText,
  kHugeFactors,
  kChurnReader,
  kCancelMidStream,
  kDisconnect,
  kPastDeadline,
  kShortDeadline,
  kCount
};

const char* KindName(Kind kind) {
  switch (kind) {
    case Kind::kHonestGenerate: return "honest Generate";
    case Kind::kHonestScore: return "honest Score (logits)";
    case Kind::kExtremeScale: return "adapter_scale 3e38/-1e30/NaN/inf";
    case Kind::kHugeStopIds: return "100k stop_token_ids";
    case Kind::kHugePrompt: return "2M-token prompt (<4 MiB)";
    case Kind::kOversizeMessage: return "message over 4 MiB";
    case Kind::kHugeMaxNewTokens: return "max_new_tokens 1e9";
    case Kind::kBadSampling: return "temperature -1/NaN, top_p 2/NaN";
    case Kind::kUnknownAdapter: return "unknown / malformed adapter";
    case Kind::kOutOfVocabulary: return "token ids outside vocab";
    case Kind::kBadScore: return "Score: bad ids/adapter/logits";
    case Kind::kPromptText: return "prompt_text (no tokenizer.json)";
    case Kind::kHugeFactors: return "adapter factors x 1e20";
    case Kind::kChurnReader: return "Generate on churned names";
    case Kind::kCancelMidStream: return "cancel mid-stream";
    case Kind::kDisconnect: return "disconnect mid-stream";
    case Kind::kPastDeadline: return "deadline already past";
    case Kind::kShortDeadline: return "deadline 5-30 ms, 300 tokens";
    case Kind::kCount: break;
  }
  return "?";
}

// Relative frequency of each kind in the soak.
int Weight(Kind kind) {
  switch (kind) {
    case Kind::kHonestGenerate: return 40;
    case Kind::kHonestScore: return 8;
    case Kind::kHugePrompt:
    case Kind::kOversizeMessage: return 1;
    default: return 3;
  }
}

class Ledger {
 public:
  void Record(const std::string& what, StatusCode code, const std::string& message = "") {
    std::lock_guard<std::mutex> lock(mu_);
    ++total_;
    if (++counts_[what][code] == 1 && code != StatusCode::OK) examples_[{what, code}] = message;
  }
  // Every call recorded, Clear() or not.
  int64_t total() const {
    std::lock_guard<std::mutex> lock(mu_);
    return total_;
  }
  void Violation(const std::string& what, const std::string& detail) {
    std::lock_guard<std::mutex> lock(mu_);
    violations_.push_back(what + ": " + detail);
  }
  std::map<std::string, std::map<StatusCode, int>> counts() const {
    std::lock_guard<std::mutex> lock(mu_);
    return counts_;
  }
  std::vector<std::string> violations() const {
    std::lock_guard<std::mutex> lock(mu_);
    return violations_;
  }
  // The first error message seen for each (kind, code).
  std::map<std::pair<std::string, StatusCode>, std::string> examples() const {
    std::lock_guard<std::mutex> lock(mu_);
    return examples_;
  }
  void Clear() {
    std::lock_guard<std::mutex> lock(mu_);
    counts_.clear();
    examples_.clear();
    violations_.clear();
  }

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::map<StatusCode, int>> counts_;
  std::map<std::pair<std::string, StatusCode>, std::string> examples_;
  std::vector<std::string> violations_;
  int64_t total_ = 0;
};

// ---------------------------------------------------------------------------------------------
// The soak.
// ---------------------------------------------------------------------------------------------

class SoakTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<ServerProcess>(kServerFlags);
    ASSERT_TRUE(server_->ok()) << server_->Log();
    for (int c = 0; c < kChannels; ++c) {
      grpc::ChannelArguments args;
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // one connection per channel
      auto channel = Connect(server_->address(), grpc::InsecureChannelCredentials(), args);
      inference_.push_back(v1::Inference::NewStub(channel));
      adapters_.push_back(v1::Adapters::NewStub(channel));
    }
    for (const char* source : kLlamaAdapters) {
      files_[source] = ReadAdapter(source);
      source_of_version_[Sha256Hex(files_[source].weights)] = source;
    }
    // lora-qv-r8 with its factors scaled: "huge" (A and B x1e20, as engine_test's hostile
    // adapter: finite factors, a delta past float32) and "loud" (B alone x1e20: huge but finite
    // activations, which RMSNorm tames; its own output is garbage, not an error).
    huge_ = ScaledFactors(files_["lora-qv-r8"], "lora_", 1e20f);
    loud_ = ScaledFactors(files_["lora-qv-r8"], "lora_B", 1e20f);
  }

  // `files` with every float32 tensor whose name contains `match` multiplied by `factor`.
  static AdapterFiles ScaledFactors(AdapterFiles files, const std::string& match, float factor) {
    files.weights =
        RewriteSafetensors(files.weights, [&](TensorView& view, std::vector<uint8_t>& data) {
          if (view.name.find(match) == std::string::npos) return;
          ASSERT_EQ(view.dtype, DType::kF32) << view.name;
          float* values = reinterpret_cast<float*>(data.data());
          for (size_t i = 0; i < data.size() / sizeof(float); ++i) values[i] *= factor;
        });
    return files;
  }

  v1::Inference::Stub& inference(int i) { return *inference_[i % kChannels]; }
  v1::Adapters::Stub& adapters(int i) { return *adapters_[i % kChannels]; }
  std::string Metrics() { return HttpGet(server_->metrics_address(), "/metrics"); }
  bool Alive() { return ResidentBytes(server_->pid()) > 0; }

  // Runs a spec (alone or under load) against `adapter`.
  grpc::Status Run(const Spec& spec, const std::string& adapter, int channel, Quiet* out) {
    if (spec.score) {
      v1::ScoreResponse response;
      const grpc::Status status = Score(inference(channel), ScoreFor(spec, adapter), &response, 60);
      *out = FromScore(response);
      return status;
    }
    const GenerateOutcome generated = Generate(inference(channel), GenerateFor(spec, adapter), 120);
    *out = FromGenerate(generated);
    return generated.status;
  }

  // A name serving `source` ("" = base).
  std::string NameFor(const std::string& source, std::mt19937& rng) {
    if (source.empty()) return "";
    const int sources = std::size(kLlamaAdapters);
    int index = 0;
    while (SourceOfAlias(index) != source) ++index;
    const int alias = index + sources * std::uniform_int_distribution<int>(
                                            0, (kAliases - 1 - index) / sources)(rng);
    std::string name = AliasName(alias);
    if (rng() % 8 == 0) name += "@" + Sha256Hex(files_[source].weights).substr(0, 10);
    return name;
  }

  void OneRequest(Kind kind, int worker, std::mt19937& rng);
  // kInFlight client threads run up to `requests` requests, until `end` (or the server dies);
  // hostile kinds only when `hostile`. Returns how many ran.
  int RunLoad(int requests, Clock::time_point end, bool hostile, uint32_t seed);
  void ChurnLoop(int thread, Clock::time_point end);
  void PinLoop(Clock::time_point end);
  // Polls /metrics (up to 30 s) until nothing runs, waits or holds KV blocks; returns the last
  // page.
  std::string WaitForIdle();

  std::unique_ptr<ServerProcess> server_;
  std::vector<std::unique_ptr<v1::Inference::Stub>> inference_;
  std::vector<std::unique_ptr<v1::Adapters::Stub>> adapters_;
  std::map<std::string, AdapterFiles> files_;
  std::map<std::string, std::string> source_of_version_;
  AdapterFiles huge_, loud_;
  std::vector<Spec> specs_;
  std::vector<Quiet> quiet_;
  std::vector<int> long_specs_;  // indices of the kLongTokens specs
  Ledger ledger_;
  std::mutex worst_mu_;
  double worst_float_diff_ = 0;
  double slowest_honest_s_ = 0;           // the longest honest request, in seconds
  std::atomic<int> churn_generation_{0};  // the newest "huge-N" uploaded
  std::atomic<bool> load_done_{false};    // the client threads have finished
};

// Expects the outcome's code to be one of `allowed`; records it under the kind.
void Expect(Ledger& ledger, Kind kind, const grpc::Status& status,
            const std::set<StatusCode>& allowed, const std::string& what) {
  ledger.Record(KindName(kind), status.error_code(), status.error_message());
  if (!allowed.count(status.error_code())) {
    ledger.Violation(KindName(kind), what + " ended " + CodeName(status.error_code()) + ": " +
                                         status.error_message());
  } else if (!status.ok() && status.error_message().empty()) {
    ledger.Violation(KindName(kind),
                     what + " ended " + CodeName(status.error_code()) + " with an empty message");
  }
}

void SoakTest::OneRequest(Kind kind, int worker, std::mt19937& rng) {
  auto pick = [&rng](size_t n) { return static_cast<size_t>(rng() % n); };
  const std::string alias = AliasName(static_cast<int>(pick(kAliases)));
  const std::vector<int32_t> prompt = Golden("llama-tiny/base")[pick(3)].prompt;
  const std::set<StatusCode> invalid = {StatusCode::INVALID_ARGUMENT};
  switch (kind) {
    case Kind::kHonestGenerate:
    case Kind::kHonestScore: {
      size_t index;
      do index = pick(specs_.size());
      while (specs_[index].score != (kind == Kind::kHonestScore) ||
             (specs_[index].max_new_tokens == kLongTokens && pick(4) != 0));
      const Spec& spec = specs_[index];
      const std::string name = NameFor(spec.source, rng);
      Quiet got;
      const auto start = Clock::now();
      const grpc::Status status = Run(spec, name, worker, &got);
      const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
      {
        std::lock_guard<std::mutex> lock(worst_mu_);
        slowest_honest_s_ = std::max(slowest_honest_s_, seconds);
      }
      Expect(ledger_, kind, status, {StatusCode::OK}, "\"" + name + "\"");
      if (status.ok()) {
        double worst = 0;
        const std::string diff = Compare(quiet_[index], got, &worst);
        if (!diff.empty()) {
          ledger_.Violation(KindName(kind),
                            "\"" + name + "\" prompt " + std::to_string(spec.prompt) + ": " + diff);
        }
        std::lock_guard<std::mutex> lock(worst_mu_);
        worst_float_diff_ = std::max(worst_float_diff_, worst);
      }
      return;
    }
    case Kind::kExtremeScale: {
      const float scales[] = {3e38f,
                              -1e30f,
                              std::numeric_limits<float>::quiet_NaN(),
                              std::numeric_limits<float>::infinity(),
                              -std::numeric_limits<float>::infinity(),
                              1001.0f};
      v1::GenerateRequest request = MakeGenerate(alias, prompt, kGoldenSteps);
      request.set_adapter_scale(scales[pick(std::size(scales))]);
      Expect(ledger_, kind, Generate(inference(worker), request).status, invalid,
             "scale " + std::to_string(request.adapter_scale()));
      return;
    }
    case Kind::kHugeStopIds: {
      v1::GenerateRequest request = MakeGenerate(alias, prompt, kGoldenSteps);
      request.mutable_stop_token_ids()->Resize(100'000, 7);
      Expect(ledger_, kind, Generate(inference(worker), request).status, invalid, "");
      return;
    }
    case Kind::kHugePrompt:
    case Kind::kOversizeMessage: {
      v1::GenerateRequest request = MakeGenerate(pick(2) ? alias : "", {}, kGoldenSteps);
      request.mutable_prompt_token_ids()->Resize(
          kind == Kind::kHugePrompt ? kHugePromptTokens : kOversizePromptTokens, 300);
      Expect(ledger_, kind, Generate(inference(worker), request).status,
             {kind == Kind::kHugePrompt ? StatusCode::INVALID_ARGUMENT
                                        : StatusCode::RESOURCE_EXHAUSTED},
             std::to_string(request.ByteSizeLong()) + " bytes");
      return;
    }
    case Kind::kHugeMaxNewTokens: {
      Expect(ledger_, kind,
             Generate(inference(worker), MakeGenerate(alias, prompt, 1'000'000'000)).status,
             invalid, "");
      return;
    }
    case Kind::kBadSampling: {
      v1::GenerateRequest request = MakeGenerate(alias, prompt, kGoldenSteps);
      switch (pick(5)) {
        case 0: request.mutable_sampling()->set_temperature(-1); break;
        case 1: request.mutable_sampling()->set_temperature(std::nanf("")); break;
        case 2: request.mutable_sampling()->set_top_p(2); break;
        case 3: request.mutable_sampling()->set_top_p(std::nanf("")); break;
        default: request.mutable_sampling()->set_top_k(-5); break;
      }
      Expect(ledger_, kind, Generate(inference(worker), request).status, invalid,
             request.sampling().ShortDebugString());
      return;
    }
    case Kind::kUnknownAdapter: {
      const std::pair<std::string, StatusCode> cases[] = {
          {"ghost-" + std::to_string(pick(1000)), StatusCode::NOT_FOUND},
          {alias + "@ffffffffffff", StatusCode::NOT_FOUND},
          {"bad/name", StatusCode::INVALID_ARGUMENT},
          {std::string(300, 'x'), StatusCode::INVALID_ARGUMENT},
          {alias + "@not-hex", StatusCode::INVALID_ARGUMENT}};
      const auto& [name, code] = cases[pick(std::size(cases))];
      Expect(ledger_, kind, Generate(inference(worker), MakeGenerate(name, prompt, 4)).status,
             {code}, "\"" + name.substr(0, 40) + "\"");
      return;
    }
    case Kind::kOutOfVocabulary: {
      v1::GenerateRequest request = MakeGenerate(alias, {5, 320}, 4);
      switch (pick(4)) {
        case 0: break;
        case 1: request = MakeGenerate(alias, {-1, 5}, 4); break;
        case 2: request = MakeGenerate("", {5, std::numeric_limits<int32_t>::max()}, 4); break;
        default: request = MakeGenerate(alias, prompt, 4); request.add_stop_token_ids(320);
      }
      Expect(ledger_, kind, Generate(inference(worker), request).status, invalid, "");
      return;
    }
    case Kind::kBadScore: {
      v1::ScoreRequest request;
      request.set_adapter(alias);
      for (int32_t id : prompt) request.add_token_ids(id);
      StatusCode want = StatusCode::INVALID_ARGUMENT;
      switch (pick(4)) {
        case 0: request.add_token_ids(320); break;
        case 1:
          request.set_adapter("ghost");
          want = StatusCode::NOT_FOUND;
          break;
        case 2: request.set_adapter_scale(std::numeric_limits<float>::infinity()); break;
        default:  // 100 x 320 x 4 bytes of logits, past --max_score_logits_bytes=64KiB
          request.mutable_token_ids()->Resize(100, 9);
          request.set_return_logits(true);
      }
      v1::ScoreResponse response;
      Expect(ledger_, kind, Score(inference(worker), request, &response), {want}, "");
      return;
    }
    case Kind::kPromptText: {
      v1::GenerateRequest request = MakeGenerate(alias, {}, 4);
      request.set_prompt_text("hello");
      Expect(ledger_, kind, Generate(inference(worker), request).status,
             {StatusCode::FAILED_PRECONDITION}, "");
      return;
    }
    case Kind::kHugeFactors: {
      // "huge" stays; "huge-N" names come and go (NOT_FOUND once deleted). "loud" may serve
      // (finite garbage, its own business) or fail as not finite; never anything else.
      const int generation = churn_generation_.load();
      const int which = static_cast<int>(pick(4));
      const bool churned = which == 1 && generation > 0;
      const std::string name = which == 0 ? "loud"
                               : churned  ? "huge-" + std::to_string(generation)
                                          : "huge";
      std::set<StatusCode> allowed = invalid;
      if (churned) allowed.insert(StatusCode::NOT_FOUND);
      if (name == "loud") allowed.insert(StatusCode::OK);
      grpc::Status status;
      if (pick(4) == 0) {
        v1::ScoreRequest request;
        request.set_adapter(name);
        for (int32_t id : prompt) request.add_token_ids(id);
        v1::ScoreResponse response;
        status = Score(inference(worker), request, &response);
      } else {
        status = Generate(inference(worker), MakeGenerate(name, prompt, kGoldenSteps)).status;
      }
      Expect(ledger_, kind, status, allowed, "\"" + name + "\"");
      if (status.error_code() == StatusCode::INVALID_ARGUMENT &&
          status.error_message().find("finite") == std::string::npos) {
        ledger_.Violation(KindName(kind),
                          "the message does not say what is not finite: " + status.error_message());
      }
      return;
    }
    case Kind::kChurnReader: {
      const std::string name = "churn-" + std::to_string(pick(kChurnNames));
      const int p = static_cast<int>(pick(3));
      const GenerateOutcome out = Generate(
          inference(worker), MakeGenerate(name, Golden("llama-tiny/base")[p].prompt, kGoldenSteps));
      Expect(ledger_, kind, out.status, {StatusCode::OK, StatusCode::NOT_FOUND},
             "\"" + name + "\"");
      if (!out.status.ok()) return;
      const auto source = source_of_version_.find(out.last.adapter_version());
      if (source == source_of_version_.end()) {
        ledger_.Violation(KindName(kind), "served unknown version " + out.last.adapter_version());
        return;
      }
      // Expected: the source's greedy tokens for the base prompt p, from its golden data when
      // the prompts agree (they do: every llama-tiny case uses the same three prompts).
      const std::vector<GoldenCase> golden = Golden("llama-tiny/" + source->second);
      if (golden[p].prompt != Golden("llama-tiny/base")[p].prompt) return;
      if (out.tokens != golden[p].tokens) {
        ledger_.Violation(KindName(kind), "\"" + name + "\" served " + source->second +
                                              " with tokens unlike its golden ones");
      }
      return;
    }
    case Kind::kCancelMidStream:
    case Kind::kDisconnect:
    case Kind::kPastDeadline:
    case Kind::kShortDeadline: {
      const int index = long_specs_[pick(long_specs_.size())];
      const Spec& spec = specs_[index];
      std::shared_ptr<grpc::Channel> own;  // kDisconnect: a connection of its own, dropped after
      std::unique_ptr<v1::Inference::Stub> own_stub;
      if (kind == Kind::kDisconnect) {
        grpc::ChannelArguments args;
        args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
        own =
            grpc::CreateCustomChannel(server_->address(), grpc::InsecureChannelCredentials(), args);
        own_stub = v1::Inference::NewStub(own);
      }
      v1::Inference::Stub& stub = own_stub ? *own_stub : inference(worker);
      grpc::ClientContext context;
      const double timeout_s = kind == Kind::kPastDeadline    ? -1.0
                               : kind == Kind::kShortDeadline ? 0.005 + 0.005 * pick(6)
                                                              : 120.0;
      context.set_deadline(In(timeout_s));
      auto reader = stub.Generate(&context, GenerateFor(spec, NameFor(spec.source, rng)));
      const int cancel_after = 1 + static_cast<int>(pick(3));
      v1::GenerateResponse response;
      std::vector<int32_t> tokens;
      int messages = 0;
      while (reader->Read(&response)) {
        tokens.insert(tokens.end(), response.token_ids().begin(), response.token_ids().end());
        if (++messages == cancel_after &&
            (kind == Kind::kCancelMidStream || kind == Kind::kDisconnect)) {
          context.TryCancel();
        }
      }
      const grpc::Status status = reader->Finish();
      own_stub.reset();
      own.reset();
      std::set<StatusCode> allowed = {kind == Kind::kPastDeadline || kind == Kind::kShortDeadline
                                          ? StatusCode::DEADLINE_EXCEEDED
                                          : StatusCode::CANCELLED};
      if (kind != Kind::kPastDeadline) allowed.insert(StatusCode::OK);  // it may finish first
      Expect(ledger_, kind, status, allowed, "");
      if (status.ok() && tokens != quiet_[index].tokens) {
        ledger_.Violation(KindName(kind), "a complete stream differs from its quiet run");
      } else if (!IsPrefix(tokens, quiet_[index].tokens)) {
        ledger_.Violation(KindName(kind), "the tokens streamed before it ended (" +
                                              std::to_string(tokens.size()) +
                                              ") are not a prefix of the quiet run");
      }
      return;
    }
    case Kind::kCount: break;
  }
}

int SoakTest::RunLoad(int requests, Clock::time_point end, bool hostile, uint32_t seed) {
  std::vector<Kind> kinds;  // each kind Weight() times
  for (int k = 0; k < static_cast<int>(Kind::kCount); ++k) {
    const Kind kind = static_cast<Kind>(k);
    const bool honest = kind == Kind::kHonestGenerate || kind == Kind::kHonestScore;
    if (honest || hostile) kinds.insert(kinds.end(), Weight(kind), kind);
  }
  std::atomic<int> next{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < kInFlight; ++w) {
    threads.emplace_back([this, w, seed, requests, end, &kinds, &next] {
      std::mt19937 rng(seed * 1000 + w);
      while (Clock::now() < end && Alive() && next.fetch_add(1) < requests) {
        OneRequest(kinds[rng() % kinds.size()], w, rng);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  return std::min(next.load(), requests);
}

std::string SoakTest::WaitForIdle() {
  std::string page;
  for (int i = 0; i < 300; ++i) {
    page = Metrics();
    if (MetricValue(page, "loramux_running_requests") == 0 &&
        MetricValue(page, "loramux_queue_depth") == 0 &&
        MetricValue(page, "loramux_kv_cache_used_blocks") == 0) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return page;
}

// Uploads and deletes the churn names this thread owns (thread and thread + 2): each round uploads
// them, then a new version of each (another source) while readers use them, lists, and deletes
// them. Thread 0
// also keeps a fresh "huge-N" name with the x1e20 factors (uploads the next, deletes the last).
void SoakTest::ChurnLoop(int thread, Clock::time_point end) {
  auto check = [this](const std::string& what, const grpc::Status& status) {
    const std::string admin = "admin: upload, delete, list, read";
    ledger_.Record(admin, status.error_code(), status.error_message());
    if (!status.ok()) ledger_.Violation(admin, what + ": " + status.error_message());
  };
  const std::string names[] = {"churn-" + std::to_string(thread),
                               "churn-" + std::to_string(thread + 2)};
  std::mt19937 rng(1000 + thread);
  const size_t sources = std::size(kLlamaAdapters);
  for (int round = 0; !load_done_ && Clock::now() < end && round < 200; ++round) {
    size_t source[2] = {rng() % sources, rng() % sources};
    for (int version = 0; version < 2; ++version) {
      for (int n = 0; n < 2; ++n) {
        if (version == 1) source[n] = (source[n] + 1 + rng() % (sources - 1)) % sources;
        v1::AdapterInfo info;
        const std::string uploaded = kLlamaAdapters[source[n]];
        check("Upload " + names[n], Upload(adapters(thread), names[n], files_[uploaded], &info));
        // Read your writes: the next request serves the version just uploaded.
        const GoldenCase golden = Golden("llama-tiny/" + uploaded)[version];
        const GenerateOutcome out =
            Generate(inference(thread), MakeGenerate(names[n], golden.prompt, kGoldenSteps));
        check("Generate " + names[n] + " right after its upload", out.status);
        if (out.status.ok() &&
            (out.last.adapter_version() != info.version() || out.tokens != golden.tokens)) {
          ledger_.Violation("admin", "Generate " + names[n] + " right after uploading " + uploaded +
                                         " served version " + out.last.adapter_version() +
                                         " (uploaded " + info.version() + ")");
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50 + rng() % 150));
    }
    std::vector<v1::AdapterInfo> listed;
    check("List", ListAdapters(adapters(thread), &listed));
    if (thread == 0 && round % 3 == 0) {
      const int next = churn_generation_.load() + 1;
      v1::AdapterInfo info;
      check("Upload huge-N",
            Upload(adapters(thread), "huge-" + std::to_string(next), huge_, &info));
      churn_generation_.store(next);
      if (next > 1) {
        check("Delete huge-N", DeleteAdapter(adapters(thread), "huge-" + std::to_string(next - 1)));
      }
    }
    for (const std::string& name : names)
      check("Delete " + name, DeleteAdapter(adapters(thread), name));
  }
}

// Pins and unpins the honest names (Load pin=true, Unload), which must not change their tokens.
void SoakTest::PinLoop(Clock::time_point end) {
  const std::string what = "admin: pin, unpin";
  std::mt19937 rng(77);
  for (int round = 0; !load_done_ && Clock::now() < end && round < 500; ++round) {
    const std::string name = AliasName(rng() % kAliases);
    {
      grpc::ClientContext context;
      context.set_deadline(In(30));
      v1::LoadAdapterRequest load;
      load.set_name(name);
      load.set_pin(true);
      v1::AdapterInfo info;
      const grpc::Status status = adapters(round).Load(&context, load, &info);
      // UNAVAILABLE: evicted between its load and the pin (the RPC says to retry).
      ledger_.Record(what, status.error_code(), status.error_message());
      if (!status.ok() && status.error_code() != StatusCode::UNAVAILABLE) {
        ledger_.Violation(what, "Load " + name + ": " + status.error_message());
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100 + rng() % 200));
    grpc::ClientContext context;
    context.set_deadline(In(30));
    v1::UnloadAdapterRequest unload;
    unload.set_name(name);
    v1::AdapterInfo info;
    const grpc::Status status = adapters(round).Unload(&context, unload, &info);
    ledger_.Record(what, status.error_code(), status.error_message());
    if (!status.ok()) ledger_.Violation(what, "Unload " + name + ": " + status.error_message());
  }
}

double Mib(int64_t bytes) { return bytes / 1048576.0; }

// Sum of the samples of `family` whose labels contain `label` ("code=\"INTERNAL\"").
double SumOfSeries(const std::string& page, const std::string& family, const std::string& label) {
  double sum = 0;
  std::istringstream lines(page);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(family + "{", 0) != 0 || line.find(label) == std::string::npos) continue;
    sum += std::atof(line.c_str() + line.rfind(' ') + 1);
  }
  return sum;
}

TEST_F(SoakTest, HostileLoadAndChurnChangeNoHonestResultAndLeakNothing) {
  const auto test_start = Clock::now();
  // The names: kAliases for the honest requests, "huge" with the x1e20 factors.
  for (int i = 0; i < kAliases; ++i) {
    v1::AdapterInfo info;
    const grpc::Status status = Upload(adapters(i), AliasName(i), files_[SourceOfAlias(i)], &info);
    ASSERT_TRUE(status.ok()) << AliasName(i) << ": " << status.error_message();
  }
  {
    v1::AdapterInfo info;
    const grpc::Status status = Upload(adapters(0), "huge", huge_, &info);
    ASSERT_TRUE(status.ok()) << "an adapter with finite factors x1e20 should upload: "
                             << status.error_message();
    ASSERT_TRUE(Upload(adapters(0), "loud", loud_, &info).ok());
  }

  // 1. Quiet runs: each spec alone.
  specs_ = MakeSpecs();
  std::mt19937 rng(12);
  for (size_t i = 0; i < specs_.size(); ++i) {
    const Spec& spec = specs_[i];
    const std::string name = NameFor(spec.source, rng);
    Quiet quiet;
    const grpc::Status status = Run(spec, name, static_cast<int>(i), &quiet);
    ASSERT_TRUE(status.ok()) << "quiet run of \"" << name << "\": " << status.error_message();
    if (spec.golden) {
      ASSERT_EQ(quiet.tokens,
                Golden("llama-tiny/" +
                       (spec.source.empty() ? std::string("base") : spec.source))[spec.prompt]
                    .tokens)
          << "\"" << name << "\" alone does not give the golden tokens";
    }
    if (spec.max_new_tokens == kLongTokens) long_specs_.push_back(static_cast<int>(i));
    quiet_.push_back(quiet);
  }
  const auto quiet_end = Clock::now();

  // 2. Warm-up: one burst of everything, then the baseline.
  RunLoad(2 * kInFlight, Clock::now() + std::chrono::seconds(60), /*hostile=*/true, 1);
  ASSERT_TRUE(Alive()) << server_->Log();
  WaitForIdle();
  EXPECT_TRUE(ledger_.violations().empty()) << "warm-up: " << ledger_.violations()[0];
  ledger_.Clear();
  const int64_t warm_rss = ResidentBytes(server_->pid());

  // 3. The soak, with churn and pins, and RSS sampled every 100 ms.
  std::atomic<bool> sampling{true};
  std::atomic<int64_t> peak_rss{warm_rss};
  std::atomic<int> samples{0};
  std::thread sampler([&] {
    while (sampling) {
      const int64_t rss = ResidentBytes(server_->pid());
      if (rss > peak_rss) peak_rss = rss;
      ++samples;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  const auto soak_start = Clock::now();
  const auto soak_end = soak_start + kSoakTime;
  std::vector<std::thread> admins;
  for (int t = 0; t < 2; ++t) admins.emplace_back([this, t, soak_end] { ChurnLoop(t, soak_end); });
  admins.emplace_back([this, soak_end] { PinLoop(soak_end); });
  const int ran = RunLoad(kSoakRequests, soak_end, /*hostile=*/true, 2);
  load_done_ = true;
  for (std::thread& t : admins) t.join();
  const double soak_s = std::chrono::duration<double>(Clock::now() - soak_start).count();
  sampling = false;
  sampler.join();

  // 4. Checks. The process lives and is idle: nothing running, queued or holding KV blocks.
  ASSERT_TRUE(Alive()) << "the server died; its log:\n" << server_->Log();
  const std::string idle = WaitForIdle();
  EXPECT_EQ(MetricValue(idle, "loramux_running_requests"), 0);
  EXPECT_EQ(MetricValue(idle, "loramux_queue_depth"), 0);
  EXPECT_EQ(MetricValue(idle, "loramux_kv_cache_used_blocks"), 0);
  // The server's own count: nothing ended INTERNAL or UNKNOWN.
  EXPECT_EQ(SumOfSeries(idle, "loramux_requests_total", "code=\"INTERNAL\""), 0);
  EXPECT_EQ(SumOfSeries(idle, "loramux_requests_total", "code=\"UNKNOWN\""), 0);
  // Loads are single-flight and a load is kept for the requests that waited for it, so there
  // are fewer loads than calls that could ask for one (the registry used to evict a fresh load
  // before its requester took it: 14,181 loads for ~3,600 requests).
  EXPECT_LE(MetricValue(idle, "loramux_adapter_loads_total"), ledger_.total() + 2 * specs_.size())
      << "adapters are loaded again and again (thrashing)";
  const int64_t final_rss = ResidentBytes(server_->pid());
  const int64_t rss_bound = warm_rss + std::max<int64_t>(warm_rss / 2, int64_t{100} << 20);
  EXPECT_LE(final_rss, rss_bound) << "RSS did not come back near its warm-up level";

  // Every spec alone once more: the storm left nothing behind.
  for (size_t i = 0; i < specs_.size(); ++i) {
    const std::string name = NameFor(specs_[i].source, rng);
    Quiet again;
    const grpc::Status status = Run(specs_[i], name, static_cast<int>(i), &again);
    ASSERT_TRUE(status.ok()) << "\"" << name << "\" after the soak: " << status.error_message();
    double worst = 0;
    EXPECT_EQ(Compare(quiet_[i], again, &worst), "") << "\"" << name << "\" after the soak";
  }

  // The store verifies.
  int versions = 0;
  const std::vector<std::string> problems = VerifyStore(server_->dir() + "/store", &versions);
  EXPECT_TRUE(problems.empty()) << problems.size() << " problems, e.g. " << problems[0];
  EXPECT_GE(versions, kAliases + 1);

  // No leaked user or pin: once every name is deleted (deleted ones uploaded again first, so
  // Delete drops their versions too) nothing may stay resident.
  std::vector<std::string> names = {"huge", "loud"};
  for (int i = 0; i < kAliases; ++i) names.push_back(AliasName(i));
  for (int i = 0; i < kChurnNames; ++i) names.push_back("churn-" + std::to_string(i));
  for (int i = 1; i <= churn_generation_.load(); ++i) names.push_back("huge-" + std::to_string(i));
  for (const std::string& name : names) {
    v1::AdapterInfo info;
    if (GetAdapter(adapters(0), name, &info).error_code() == StatusCode::NOT_FOUND) {
      ASSERT_TRUE(Upload(adapters(0), name, files_["lora-qv-r8"], &info).ok()) << name;
    }
    const grpc::Status deleted = DeleteAdapter(adapters(0), name);
    EXPECT_TRUE(deleted.ok()) << name << ": " << deleted.error_message();
  }
  const std::string emptied = Metrics();
  const double device_left = MetricValue(emptied, "loramux_adapters_resident{tier=\"device\"}");
  const double host_left = MetricValue(emptied, "loramux_adapters_resident{tier=\"host\"}");
  EXPECT_EQ(device_left, 0) << "adapters still resident on the device after every name was "
                               "deleted: a request (or pin) never released its adapter";
  EXPECT_EQ(host_left, 0);
  EXPECT_EQ(MetricValue(emptied, "loramux_adapter_resident_bytes{tier=\"device\"}"), 0);

  // Every honest result equal to its quiet run, every hostile one a proper error.
  const std::vector<std::string> violations = ledger_.violations();
  for (size_t i = 0; i < violations.size() && i < 30; ++i) ADD_FAILURE() << violations[i];
  EXPECT_TRUE(violations.empty()) << violations.size() << " violations";
  ASSERT_TRUE(Alive()) << server_->Log();

  // Summary.
  const auto counts = ledger_.counts();
  std::map<StatusCode, int> by_code;
  int total = 0;
  std::printf(
      "\nsoak summary: %d client requests in %.1f s (%d threads, %d adapter names, "
      "%zu quiet specs)\n",
      ran, soak_s, kInFlight, kAliases, specs_.size());
  std::printf("%-36s %6s  %s\n", "kind", "count", "outcomes");
  for (const auto& [what, codes] : counts) {
    int n = 0;
    std::string outcomes;
    for (const auto& [code, count] : codes) {
      n += count;
      outcomes += std::string(CodeName(code)) + " " + std::to_string(count) + "  ";
      if (what.rfind("admin", 0) != 0) {
        by_code[code] += count;
        total += count;
      }
    }
    std::printf("%-36s %6d  %s\n", what.c_str(), n, outcomes.c_str());
  }
  std::printf("one message per kind and error code:\n");
  for (const auto& [key, message] : ledger_.examples()) {
    std::printf("  %-34s %-19s %.110s\n", key.first.c_str(), CodeName(key.second), message.c_str());
  }
  std::printf("client requests by code:");
  for (const auto& [code, count] : by_code) std::printf("  %s %d", CodeName(code), count);
  std::printf("  (total %d)\n", total);
  std::printf(
      "largest float difference from the quiet runs: %.3g; slowest honest request "
      "%.1f s\n",
      worst_float_diff_, slowest_honest_s_);
  std::printf("adapter loads %g (failed %g), evictions %g, cache hits %g, misses %g\n",
              MetricValue(idle, "loramux_adapter_loads_total"),
              MetricValue(idle, "loramux_adapter_load_failures_total"),
              MetricValue(idle, "loramux_adapter_evictions_total"),
              MetricValue(idle, "loramux_adapter_cache_hits_total"),
              MetricValue(idle, "loramux_adapter_cache_misses_total"));
  std::printf(
      "server RSS: warm-up %.1f MiB, peak %.1f MiB, final %.1f MiB (bound %.1f MiB; "
      "%d samples)\n",
      Mib(warm_rss), Mib(peak_rss.load()), Mib(final_rss), Mib(rss_bound), samples.load());
  std::printf(
      "store: %d version directories verified; adapters resident after deleting all: "
      "device %g, host %g\n",
      versions, device_left, host_left);
  std::printf("time: quiet %.1f s, soak %.1f s, whole test %.1f s\n",
              std::chrono::duration<double>(quiet_end - test_start).count(), soak_s,
              std::chrono::duration<double>(Clock::now() - test_start).count());
}

}  // namespace
}  // namespace loramux::testing
