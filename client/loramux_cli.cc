// loramux: the command-line client for a loramux server.
//
//   loramux [--server HOST:PORT] [--token_file F] [--tls_ca_file F] COMMAND [flags] ARGS...
//
// Commands: health, upload, list, get, delete, load, unload, generate, chat, score, tokenize,
// detokenize; train and merge (handed to loramux_train) (see `loramux help`). `--json` prints each
// result as one JSON object (the proto3 JSON mapping of the reply, field names as in the .proto)
// for scripts. Errors print the gRPC code name and the server's message on stderr (with --json, as
// {"error":{"code","message"}}). Exit codes: 0 done, 1 the server refused or failed the call
// (or `health` found it not serving), 2 bad usage, 3 the server is unreachable (UNAVAILABLE
// after the retries).
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/loramux_client.h"
#include "google/protobuf/util/json_util.h"
#include "nlohmann/json.hpp"

namespace loramux {
namespace {

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitUnreachable = 3;

constexpr char kUsage[] = R"(usage: loramux [global flags] COMMAND [flags] ARGS...

Health:
  health [--service NAME]
                      gRPC health check: prints SERVING (exit 0), NOT_SERVING (exit 1, e.g.
                      while the server drains) or nothing reachable (exit 3)

Training (runs the loramux_train program built beside this one; `loramux train --help`):
  train --model_dir DIR --data FILE.jsonl --out DIR [--rank R] [--alpha A] [--dora] [--rslora]
        [--targets q_proj,v_proj|all-linear] [--epochs N] [--max_steps N] [--lr X]
        [--batch_size B] [--seed S] [--upload NAME --server HOST:PORT]
                      fine-tune a LoRA / DoRA adapter (PEFT directory); last line `loss: X`
  merge --model_dir DIR --adapter DIR --out DIR
                      write base + adapter merged into a HuggingFace checkpoint

Adapter administration (needs the admin token when the server sets one):
  upload NAME DIR [--format peft|seed] [--config FILE] [--weights FILE]
                      upload DIR/adapter_config.json + DIR/adapter_model.safetensors as NAME
                      (a progress bar with bytes/s when stdout is a terminal)
  list                list every stored adapter
  get NAME[@VERSION]  show one adapter
  delete NAME         delete an adapter (all versions)
  load NAME[@VERSION] [--pin]   make an adapter resident now (--pin: never evict it)
  unload NAME         drop residency (and any pin)

Inference (needs the inference token when the server sets one):
  generate [--adapter NAME] [--scale S] [--max_new_tokens N] [--temperature T] [--top_k K]
           [--top_p P] [--seed S] [--stop ID,ID...] [--stop_text STR] [--logprobs]
           (TOKEN... | --text TEXT)
                      stream generated token ids (or, with --text, the text) to stdout; a
                      summary goes to stderr
  chat (--file CONVERSATION.json | [--system TEXT] --user TEXT) [--kwargs JSON] [generate's flags]
                      render the conversation (an OpenAI-style JSON array of messages) with the
                      model's chat template and stream the answer's text
  tokenize [--no_special] TEXT
  tokenize --file CONVERSATION.json [--no_generation_prompt] [--kwargs JSON]
                      print token ids (and a conversation's rendered prompt on stderr)
  detokenize [--keep_special] ID...   print the text of token ids
  score [--adapter NAME] [--scale S] TOKEN...
                      print log p(token i+1 | tokens <= i) for each position

Global flags (anywhere on the line):
  --server HOST:PORT  the server (default 127.0.0.1:50051)
  --token_file FILE   bearer token sent to both services
  --tls_ca_file FILE  use TLS, trusting this PEM root certificate
  --tls               use TLS with the system roots
  --tls_server_name N the name to check in the server certificate
  --timeout_s S       deadline of each call in seconds (default 600; 0 = none)
  --retries N         retry calls that are safe to repeat up to N times when the server is
                      UNAVAILABLE, with exponential backoff (default 3; 0 = none)
  --json              print each result as one JSON object on stdout (errors as JSON on stderr)

Exit codes: 0 done; 1 the server refused or failed the call; 2 bad usage; 3 the server could not
be reached (UNAVAILABLE after the retries).
)";

// Flags that take no value.
const std::set<std::string> kBoolFlags = {
    "pin", "logprobs", "tls", "help", "no_special", "keep_special", "no_generation_prompt", "json"};
const std::set<std::string> kGlobalFlags = {
    "server",    "token_file", "tls_ca_file", "tls", "tls_server_name",
    "timeout_s", "retries",    "json",        "help"};
const std::map<std::string, std::set<std::string>> kCommandFlags = {
    {"health", {"service"}},
    {"upload", {"format", "config", "weights"}},
    {"list", {}},
    {"get", {}},
    {"delete", {}},
    {"load", {"pin"}},
    {"unload", {}},
    {"generate",
     {"adapter", "scale", "max_new_tokens", "temperature", "top_k", "top_p", "seed", "stop",
      "stop_text", "logprobs", "text"}},
    {"chat",
     {"adapter", "scale", "max_new_tokens", "temperature", "top_k", "top_p", "seed", "stop",
      "stop_text", "logprobs", "file", "system", "user", "kwargs"}},
    {"score", {"adapter", "scale"}},
    {"tokenize", {"no_special", "file", "no_generation_prompt", "kwargs"}},
    {"detokenize", {"keep_special"}},
};

struct CommandLine {
  std::string command;
  std::vector<std::string> args;
  std::map<std::string, std::string> flags;
  bool Has(const std::string& name) const { return flags.count(name) > 0; }
  std::string Get(const std::string& name, const std::string& fallback = "") const {
    auto it = flags.find(name);
    return it == flags.end() ? fallback : it->second;
  }
};

// Set once from --json before any command runs.
bool g_json = false;

// {"error":{"code":"NOT_FOUND","message":"..."}} on stderr.
void PrintJsonError(const std::string& code, const std::string& message) {
  std::cerr << nlohmann::json{{"error", {{"code", code}, {"message", message}}}}.dump() << "\n";
}

int Usage(const std::string& message) {
  if (g_json) {
    PrintJsonError("USAGE", message);
  } else {
    std::cerr << "loramux: " << message << "\n(run `loramux help` for usage)\n";
  }
  return kExitUsage;
}

int Failed(const std::string& what, const absl::Status& status) {
  const bool unreachable = status.code() == absl::StatusCode::kUnavailable;
  if (g_json) {
    PrintJsonError(absl::StatusCodeToString(status.code()),
                   absl::StrCat(what, " failed: ", status.message()));
  } else {
    std::cerr << "loramux: " << what << " failed: " << absl::StatusCodeToString(status.code())
              << ": " << status.message() << "\n";
    if (unreachable) {
      std::cerr << "(is a loramux server listening at --server? if it serves TLS, pass "
                   "--tls_ca_file or --tls)\n";
    }
  }
  return unreachable ? kExitUnreachable : kExitFailed;
}

// One reply as JSON on stdout (proto3 JSON mapping, .proto field names, defaults printed).
void PrintJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string json;
  if (!google::protobuf::util::MessageToJsonString(message, &json, options).ok()) {
    json = nlohmann::json{{"error", "cannot print the reply as JSON"}}.dump();
  }
  std::cout << json << "\n";
}

// Draws "upload NAME [#####.....]  42% 1.2 MiB of 3.0 MiB, 5.1 MiB/s" in place on stdout.
class ProgressBar {
 public:
  explicit ProgressBar(std::string label) : label_(std::move(label)), start_(absl::Now()) {}
  void Update(uint64_t sent, uint64_t total) {
    constexpr int kWidth = 30;
    const double fraction = total == 0 ? 1.0 : static_cast<double>(sent) / total;
    const int filled = static_cast<int>(fraction * kWidth);
    const double seconds = std::max(1e-3, absl::ToDoubleSeconds(absl::Now() - start_));
    std::cout << "\r" << label_ << " [" << std::string(filled, '#')
              << std::string(kWidth - filled, '.') << "] " << static_cast<int>(fraction * 100)
              << "% " << Mib(sent) << " of " << Mib(total) << ", "
              << Mib(static_cast<uint64_t>(sent / seconds)) << "/s   " << std::flush;
    drawn_ = true;
  }
  ~ProgressBar() {
    if (drawn_) std::cout << "\n";
  }

 private:
  static std::string Mib(uint64_t bytes) {
    return absl::StrFormat("%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  }
  std::string label_;
  absl::Time start_;
  bool drawn_ = false;
};

// Splits argv into command, positional args and --flags (`--name=value`, `--name value`, or a
// bare `--name` for boolean flags). `--` ends the flags. Unknown flags are usage errors.
absl::Status ParseCommandLine(int argc, char** argv, CommandLine* out) {
  bool flags_done = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (!flags_done && arg == "--") {
      flags_done = true;
      continue;
    }
    if (!flags_done && (arg == "-h" || arg == "--help")) {
      out->flags["help"] = "true";
      continue;
    }
    if (flags_done || arg.size() < 3 || arg.compare(0, 2, "--") != 0) {
      if (out->command.empty()) {
        out->command = arg;
      } else {
        out->args.push_back(arg);
      }
      continue;
    }
    std::string name = arg.substr(2);
    std::string value;
    bool has_value = false;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    if (kBoolFlags.count(name) > 0) {
      if (has_value && value != "true" && value != "false") {
        return absl::InvalidArgumentError(
            absl::StrCat("--", name, " takes no value (or =true/=false), got \"", value, "\""));
      }
      if (!has_value || value == "true") {
        out->flags[name] = "true";
      } else {
        out->flags.erase(name);
      }
      continue;
    }
    if (!has_value) {
      if (i + 1 >= argc) {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      }
      value = argv[++i];
    }
    out->flags[name] = value;
  }
  if (out->command.empty() || out->command == "help") return absl::OkStatus();
  auto known = kCommandFlags.find(out->command);
  if (known == kCommandFlags.end()) {
    return absl::InvalidArgumentError(absl::StrCat("unknown command \"", out->command, "\""));
  }
  for (const auto& [name, value] : out->flags) {
    if (kGlobalFlags.count(name) == 0 && known->second.count(name) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, " is not a flag of `", out->command, "`"));
    }
  }
  return absl::OkStatus();
}

absl::Status ExpectArgs(const CommandLine& cl, size_t count, const std::string& what) {
  if (cl.args.size() != count) {
    return absl::InvalidArgumentError(
        absl::StrCat("`", cl.command, "` takes ", what, "; got ", cl.args.size(), " argument(s)"));
  }
  return absl::OkStatus();
}

template <typename T>
absl::Status ParseNumber(const std::string& flag, const std::string& text, T* out) {
  bool ok = false;
  if constexpr (std::is_same_v<T, float>) {
    ok = absl::SimpleAtof(text, out);
  } else if constexpr (std::is_same_v<T, double>) {
    ok = absl::SimpleAtod(text, out);
  } else {
    ok = absl::SimpleAtoi(text, out);
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": \"", text, "\" is not a valid number"));
  }
  return absl::OkStatus();
}

absl::Status ParseTokens(const std::vector<std::string>& texts, std::vector<int32_t>* out) {
  for (const std::string& text : texts) {
    // Accept "1 2 3" as well as "1,2,3".
    for (absl::string_view piece : absl::StrSplit(text, ',', absl::SkipEmpty())) {
      int32_t id = 0;
      if (!absl::SimpleAtoi(piece, &id)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "token \"", std::string(piece), "\" is not an integer id; prompts are token ids"));
      }
      out->push_back(id);
    }
  }
  if (out->empty()) return absl::InvalidArgumentError("give at least one TOKEN id");
  return absl::OkStatus();
}

absl::StatusOr<ClientOptions> OptionsFrom(const CommandLine& cl) {
  ClientOptions options;
  options.target = cl.Get("server", "127.0.0.1:50051");
  double timeout_s = 600;
  if (cl.Has("timeout_s")) {
    if (absl::Status s = ParseNumber("--timeout_s", cl.Get("timeout_s"), &timeout_s); !s.ok()) {
      return s;
    }
  }
  options.timeout = timeout_s > 0 ? absl::Seconds(timeout_s) : absl::InfiniteDuration();
  if (cl.Has("token_file")) {
    absl::StatusOr<std::string> token =
        ReadSecretFile(cl.Get("token_file"), "--token_file", /*trim=*/true);
    if (!token.ok()) return token.status();
    options.admin_token = *token;
    options.inference_token = *token;
  }
  if (cl.Has("tls_ca_file")) {
    absl::StatusOr<std::string> pem =
        ReadSecretFile(cl.Get("tls_ca_file"), "--tls_ca_file", /*trim=*/false);
    if (!pem.ok()) return pem.status();
    options.tls_root_cert_pem = *pem;
    options.tls = true;
  }
  options.tls = options.tls || cl.Has("tls");
  options.tls_server_name = cl.Get("tls_server_name");
  int retries = 3;
  if (cl.Has("retries")) {
    if (absl::Status s = ParseNumber("--retries", cl.Get("retries"), &retries); !s.ok()) return s;
    if (retries < 0 || retries > 100) {
      return absl::InvalidArgumentError(
          absl::StrCat("--retries must be between 0 and 100, got ", retries));
    }
  }
  options.max_attempts = retries + 1;
  return options;
}

void PrintAdapter(const v1::AdapterInfo& info) {
  if (g_json) return PrintJson(info);
  std::cout << "name:           " << info.name() << "\n"
            << "version:        " << info.version() << "\n"
            << "format:         " << FormatName(info.format()) << "\n"
            << "rank:           " << info.rank() << "\n"
            << "dora:           " << (info.use_dora() ? "yes" : "no") << "\n"
            << "target_modules: " << absl::StrJoin(info.target_modules(), ",") << "\n"
            << "size_bytes:     " << info.size_bytes() << "\n"
            << "residency:      " << ResidencyName(info.residency()) << "\n"
            << "pinned:         " << (info.pinned() ? "yes" : "no") << "\n";
}

int RunUpload(LoramuxClient& client, const CommandLine& cl) {
  if (absl::Status s = ExpectArgs(cl, 2, "NAME DIR"); !s.ok())
    return Usage(std::string(s.message()));
  UploadSpec spec;
  spec.name = cl.args[0];
  const std::string dir = cl.args[1];
  const std::string format = cl.Get("format", "peft");
  if (format == "peft" || format == "PEFT") {
    spec.format = v1::PEFT;
  } else if (format == "seed" || format == "SEED") {
    spec.format = v1::SEED;
  } else {
    return Usage(absl::StrCat("--format \"", format, "\" is unknown; use peft or seed"));
  }
  const std::string config_path = cl.Get("config", dir + "/adapter_config.json");
  spec.weights_path = cl.Get("weights", dir + "/adapter_model.safetensors");
  absl::StatusOr<std::string> config = ReadSecretFile(config_path, "adapter config", false);
  if (!config.ok()) return Failed("upload", config.status());
  spec.config_json = *config;
  std::optional<ProgressBar> bar;
  if (!g_json && isatty(STDOUT_FILENO)) {
    bar.emplace("upload " + spec.name);
    spec.on_progress = [&bar](uint64_t sent, uint64_t total) { bar->Update(sent, total); };
  }
  absl::StatusOr<v1::AdapterInfo> info = client.UploadAdapter(spec);
  bar.reset();
  if (!info.ok()) return Failed(absl::StrCat("upload of \"", spec.name, "\""), info.status());
  if (!g_json) std::cout << "uploaded " << info->name() << "@" << info->version() << "\n";
  PrintAdapter(*info);
  return 0;
}

int RunList(LoramuxClient& client, const CommandLine& cl) {
  if (absl::Status s = ExpectArgs(cl, 0, "no arguments"); !s.ok())
    return Usage(std::string(s.message()));
  absl::StatusOr<std::vector<v1::AdapterInfo>> adapters = client.ListAdapters();
  if (!adapters.ok()) return Failed("list", adapters.status());
  if (g_json) {
    v1::ListAdaptersResponse all;
    for (const v1::AdapterInfo& info : *adapters) *all.add_adapters() = info;
    PrintJson(all);
    return 0;
  }
  size_t width = 4;
  for (const v1::AdapterInfo& info : *adapters) width = std::max(width, info.name().size());
  auto pad = [](const std::string& s, size_t n) {
    return s + std::string(n > s.size() ? n - s.size() : 0, ' ');
  };
  std::cout << pad("NAME", width) << "  VERSION       FORMAT  RANK  DORA  SIZE        RESIDENCY  "
            << "PINNED  TARGETS\n";
  for (const v1::AdapterInfo& info : *adapters) {
    std::cout << pad(info.name(), width) << "  " << pad(info.version().substr(0, 12), 12) << "  "
              << pad(FormatName(info.format()), 6) << "  " << pad(absl::StrCat(info.rank()), 4)
              << "  " << pad(info.use_dora() ? "yes" : "no", 4) << "  "
              << pad(absl::StrCat(info.size_bytes()), 10) << "  "
              << pad(ResidencyName(info.residency()), 9) << "  "
              << pad(info.pinned() ? "yes" : "no", 6) << "  "
              << absl::StrJoin(info.target_modules(), ",") << "\n";
  }
  return 0;
}

// Sampling, adapter and stop flags shared by generate and chat.
absl::Status FillGenerateFlags(const CommandLine& cl, v1::GenerateRequest& request) {
  request.set_adapter(cl.Get("adapter"));
  request.set_logprobs(cl.Has("logprobs"));
  v1::SamplingParams* sampling = request.mutable_sampling();
  absl::Status s = absl::OkStatus();
  float scale = 0, temperature = 0, top_p = 0;
  int32_t max_new_tokens = 0, top_k = 0;
  uint64_t seed = 0;
  if (cl.Has("scale")) s.Update(ParseNumber("--scale", cl.Get("scale"), &scale));
  if (cl.Has("max_new_tokens")) {
    s.Update(ParseNumber("--max_new_tokens", cl.Get("max_new_tokens"), &max_new_tokens));
  }
  if (cl.Has("temperature"))
    s.Update(ParseNumber("--temperature", cl.Get("temperature"), &temperature));
  if (cl.Has("top_k")) s.Update(ParseNumber("--top_k", cl.Get("top_k"), &top_k));
  if (cl.Has("top_p")) s.Update(ParseNumber("--top_p", cl.Get("top_p"), &top_p));
  if (cl.Has("seed")) {
    s.Update(ParseNumber("--seed", cl.Get("seed"), &seed));
    sampling->set_has_seed(true);
  }
  if (cl.Has("stop")) {
    std::vector<int32_t> stop;
    s.Update(ParseTokens({cl.Get("stop")}, &stop));
    request.mutable_stop_token_ids()->Add(stop.begin(), stop.end());
  }
  if (cl.Has("stop_text")) request.add_stop(cl.Get("stop_text"));
  request.set_adapter_scale(scale);
  sampling->set_max_new_tokens(max_new_tokens);
  sampling->set_temperature(temperature);
  sampling->set_top_k(top_k);
  sampling->set_top_p(top_p);
  sampling->set_seed(seed);
  return s;
}

// Streams `request`, printing the text (as_text) or the token ids, then a summary on stderr.
// With --json, the whole stream as one GenerateResponse: every token, logprob and piece of text,
// and the last message's finish reason, usage and adapter version. Collected without a callback,
// so a stream that fails UNAVAILABLE is retried whole.
int CollectGenerate(LoramuxClient& client, const v1::GenerateRequest& request) {
  absl::StatusOr<GenerateResult> result = client.Generate(request);
  if (!result.ok()) return Failed("generate", result.status());
  v1::GenerateResponse all;
  all.mutable_token_ids()->Add(result->token_ids.begin(), result->token_ids.end());
  all.mutable_logprobs()->Add(result->logprobs.begin(), result->logprobs.end());
  all.set_text(result->text);
  all.set_finish_reason(result->finish_reason);
  *all.mutable_usage() = result->usage;
  all.set_adapter_version(result->adapter_version);
  PrintJson(all);
  return 0;
}

int StreamGenerate(LoramuxClient& client, const v1::GenerateRequest& request, bool as_text) {
  if (g_json) return CollectGenerate(client, request);
  bool first = true;
  absl::StatusOr<GenerateResult> result =
      client.Generate(request, [&](const v1::GenerateResponse& response) {
        if (as_text) {
          std::cout << response.text();
          first = first && response.text().empty();
        }
        for (int i = 0; !as_text && i < response.token_ids_size(); ++i) {
          std::cout << (first ? "" : " ") << response.token_ids(i);
          if (request.logprobs() && i < response.logprobs_size()) {
            std::cout << ":" << response.logprobs(i);
          }
          first = false;
        }
        std::cout.flush();
        return true;
      });
  if (!first) std::cout << "\n";
  std::cout.flush();
  if (!result.ok()) return Failed("generate", result.status());
  std::cerr << "finish=" << FinishReasonName(result->finish_reason)
            << " prompt_tokens=" << result->usage.prompt_tokens()
            << " generated_tokens=" << result->usage.generated_tokens() << " adapter_version="
            << (result->adapter_version.empty() ? "-" : result->adapter_version) << "\n";
  return 0;
}

int RunGenerate(LoramuxClient& client, const CommandLine& cl) {
  v1::GenerateRequest request;
  if (cl.Has("text")) {
    if (!cl.args.empty()) return Usage("give either --text or token ids, not both");
    request.set_prompt_text(cl.Get("text"));
  } else {
    std::vector<int32_t> prompt;
    if (absl::Status s = ParseTokens(cl.args, &prompt); !s.ok())
      return Usage(std::string(s.message()));
    request.mutable_prompt_token_ids()->Add(prompt.begin(), prompt.end());
  }
  if (absl::Status s = FillGenerateFlags(cl, request); !s.ok())
    return Usage(std::string(s.message()));
  return StreamGenerate(client, request, cl.Has("text"));
}

// The conversation of --file, or one built from --system and --user, as a JSON array.
absl::StatusOr<std::string> ConversationJson(const CommandLine& cl) {
  if (cl.Has("file")) {
    if (cl.Has("system") || cl.Has("user"))
      return absl::InvalidArgumentError("give --file or --system/--user");
    std::ifstream in(cl.Get("file"), std::ios::binary);
    if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read --file ", cl.Get("file")));
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  if (!cl.Has("user"))
    return absl::InvalidArgumentError("give --file CONVERSATION.json or --user TEXT");
  nlohmann::json messages = nlohmann::json::array();
  if (cl.Has("system")) messages.push_back({{"role", "system"}, {"content", cl.Get("system")}});
  messages.push_back({{"role", "user"}, {"content", cl.Get("user")}});
  return messages.dump();
}

int RunChat(LoramuxClient& client, const CommandLine& cl) {
  if (!cl.args.empty()) return Usage("chat takes no positional arguments");
  v1::GenerateRequest request;
  absl::StatusOr<std::string> conversation = ConversationJson(cl);
  if (!conversation.ok()) return Usage(std::string(conversation.status().message()));
  request.set_messages_json(*conversation);
  request.set_chat_template_kwargs_json(cl.Get("kwargs"));
  if (absl::Status s = FillGenerateFlags(cl, request); !s.ok())
    return Usage(std::string(s.message()));
  return StreamGenerate(client, request, /*as_text=*/true);
}

int RunTokenize(LoramuxClient& client, const CommandLine& cl) {
  v1::TokenizeRequest request;
  if (cl.Has("file")) {
    if (!cl.args.empty()) return Usage("give either --file or TEXT");
    absl::StatusOr<std::string> conversation = ConversationJson(cl);
    if (!conversation.ok()) return Usage(std::string(conversation.status().message()));
    request.set_messages_json(*conversation);
    request.set_add_generation_prompt(!cl.Has("no_generation_prompt"));
    request.set_chat_template_kwargs_json(cl.Get("kwargs"));
  } else {
    if (absl::Status s = ExpectArgs(cl, 1, "one TEXT (quote it)"); !s.ok())
      return Usage(std::string(s.message()));
    request.set_text(cl.args[0]);
    request.set_add_special_tokens(!cl.Has("no_special"));
  }
  absl::StatusOr<v1::TokenizeResponse> response = client.Tokenize(request);
  if (!response.ok()) return Failed("tokenize", response.status());
  if (g_json) {
    PrintJson(*response);
    return 0;
  }
  std::cout << absl::StrJoin(response->token_ids(), " ") << "\n";
  if (!response->text().empty()) std::cerr << response->text() << "\n";
  return 0;
}

int RunDetokenize(LoramuxClient& client, const CommandLine& cl) {
  v1::DetokenizeRequest request;
  std::vector<int32_t> ids;
  if (absl::Status s = ParseTokens(cl.args, &ids); !s.ok()) return Usage(std::string(s.message()));
  request.mutable_token_ids()->Add(ids.begin(), ids.end());
  request.set_skip_special_tokens(!cl.Has("keep_special"));
  absl::StatusOr<v1::DetokenizeResponse> response = client.Detokenize(request);
  if (!response.ok()) return Failed("detokenize", response.status());
  if (g_json) {
    PrintJson(*response);
    return 0;
  }
  std::cout << response->text() << "\n";
  return 0;
}

int RunScore(LoramuxClient& client, const CommandLine& cl) {
  v1::ScoreRequest request;
  std::vector<int32_t> tokens;
  if (absl::Status s = ParseTokens(cl.args, &tokens); !s.ok())
    return Usage(std::string(s.message()));
  request.mutable_token_ids()->Add(tokens.begin(), tokens.end());
  request.set_adapter(cl.Get("adapter"));
  if (cl.Has("scale")) {
    float scale = 0;
    if (absl::Status s = ParseNumber("--scale", cl.Get("scale"), &scale); !s.ok()) {
      return Usage(std::string(s.message()));
    }
    request.set_adapter_scale(scale);
  }
  absl::StatusOr<v1::ScoreResponse> response = client.Score(request);
  if (!response.ok()) return Failed("score", response.status());
  if (g_json) {
    PrintJson(*response);
    return 0;
  }
  double total = 0;
  std::cout << "position\ttoken\tlogprob\n";
  for (int i = 0; i < response->token_logprobs_size(); ++i) {
    const size_t next = static_cast<size_t>(i) + 1;
    std::cout << next << "\t" << (next < tokens.size() ? tokens[next] : -1) << "\t"
              << response->token_logprobs(i) << "\n";
    total += response->token_logprobs(i);
  }
  std::cerr << "sum_logprob=" << total << " vocab_size=" << response->vocab_size()
            << " adapter_version="
            << (response->adapter_version().empty() ? "-" : response->adapter_version()) << "\n";
  return 0;
}

int RunHealth(LoramuxClient& client, const CommandLine& cl) {
  if (absl::Status s = ExpectArgs(cl, 0, "no arguments"); !s.ok())
    return Usage(std::string(s.message()));
  absl::StatusOr<std::string> serving = client.CheckHealth(cl.Get("service"));
  if (!serving.ok()) return Failed("health check", serving.status());
  if (g_json) {
    std::cout << nlohmann::json{{"status", *serving}}.dump() << "\n";
  } else {
    std::cout << *serving << "\n";
  }
  return *serving == "SERVING" ? 0 : kExitFailed;
}

// `train` and `merge` run on LibTorch, which this client does not link: they are handed to the
// loramux_train program built beside it (build/train/loramux_train, or the same directory).
int ExecTrainer(int argc, char** argv) {
  char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  std::string dir = n > 0 ? std::string(self, n) : std::string(argv[0]);
  dir = dir.substr(0, dir.find_last_of('/') + 1);
  for (const std::string& candidate : {dir + "loramux_train", dir + "../train/loramux_train"}) {
    if (access(candidate.c_str(), X_OK) != 0) continue;
    std::vector<char*> args = {const_cast<char*>(candidate.c_str())};
    for (int i = 1; i <= argc; ++i) args.push_back(argv[i]);  // argv[argc] is the null pointer
    execv(candidate.c_str(), args.data());
    std::cerr << "loramux: cannot run " << candidate << ": " << std::strerror(errno) << "\n";
    return kExitFailed;
  }
  std::cerr << "loramux: " << argv[1]
            << " needs the loramux_train program beside this one (build it: "
            << "cmake --build build --target loramux_train_cli)\n";
  return kExitFailed;
}

int Run(int argc, char** argv) {
  if (argc > 1 && (std::string(argv[1]) == "train" || std::string(argv[1]) == "merge")) {
    return ExecTrainer(argc, argv);
  }
  CommandLine cl;
  absl::Status parsed = ParseCommandLine(argc, argv, &cl);
  g_json = cl.Has("json");
  if (!parsed.ok()) return Usage(std::string(parsed.message()));
  if (cl.command.empty() || cl.command == "help" || cl.Has("help")) {
    if (cl.command.empty() && !cl.Has("help")) {
      std::cerr << kUsage;
      return kExitUsage;
    }
    std::cout << kUsage;
    return 0;
  }
  absl::StatusOr<ClientOptions> options = OptionsFrom(cl);
  if (!options.ok()) return Usage(std::string(options.status().message()));
  absl::StatusOr<std::unique_ptr<LoramuxClient>> client = LoramuxClient::Connect(*options);
  if (!client.ok()) return Failed("connect", client.status());
  LoramuxClient& c = **client;

  const std::string& command = cl.command;
  if (command == "health") return RunHealth(c, cl);
  if (command == "upload") return RunUpload(c, cl);
  if (command == "list") return RunList(c, cl);
  if (command == "generate") return RunGenerate(c, cl);
  if (command == "chat") return RunChat(c, cl);
  if (command == "tokenize") return RunTokenize(c, cl);
  if (command == "detokenize") return RunDetokenize(c, cl);
  if (command == "score") return RunScore(c, cl);
  // The single-name commands.
  if (absl::Status s = ExpectArgs(cl, 1, "one NAME"); !s.ok())
    return Usage(std::string(s.message()));
  const std::string& name = cl.args[0];
  if (command == "get") {
    absl::StatusOr<v1::AdapterInfo> info = c.GetAdapter(name);
    if (!info.ok()) return Failed(absl::StrCat("get \"", name, "\""), info.status());
    PrintAdapter(*info);
    return 0;
  }
  if (command == "delete") {
    absl::Status status = c.DeleteAdapter(name);
    if (!status.ok()) return Failed(absl::StrCat("delete \"", name, "\""), status);
    if (g_json) {
      std::cout << nlohmann::json{{"deleted", name}}.dump() << "\n";
    } else {
      std::cout << "deleted " << name << "\n";
    }
    return 0;
  }
  if (command == "load") {
    absl::StatusOr<v1::AdapterInfo> info = c.LoadAdapter(name, cl.Has("pin"));
    if (!info.ok()) return Failed(absl::StrCat("load \"", name, "\""), info.status());
    PrintAdapter(*info);
    return 0;
  }
  if (command == "unload") {
    absl::StatusOr<v1::AdapterInfo> info = c.UnloadAdapter(name);
    if (!info.ok()) return Failed(absl::StrCat("unload \"", name, "\""), info.status());
    PrintAdapter(*info);
    return 0;
  }
  return Usage(absl::StrCat("unknown command \"", command, "\""));
}

}  // namespace
}  // namespace loramux

int main(int argc, char** argv) { return loramux::Run(argc, argv); }
