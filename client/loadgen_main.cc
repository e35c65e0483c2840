// loramux_loadgen: drives a loramux server with concurrent Generate (or Score) requests and
// prints one markdown table row (see client/loadgen.h for what is measured).
//
//   loramux_loadgen --server 127.0.0.1:50051 --streams 64 --adapters a0,a1,a2
//       --prompt_len 16 --max_new_tokens 32 --duration_s 3 [--header]
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/loadgen.h"

ABSL_FLAG(std::string, server, "127.0.0.1:50051", "The server, HOST:PORT.");
ABSL_FLAG(std::string, token_file, "", "Bearer token file, sent to both services.");
ABSL_FLAG(std::string, tls_ca_file, "", "Use TLS, trusting this PEM root certificate.");
ABSL_FLAG(std::string, rpc, "generate", "generate or score.");
ABSL_FLAG(int32_t, streams, 8, "Concurrent request loops (threads).");
ABSL_FLAG(std::string, adapters, "",
          "Comma-separated adapters used round-robin; empty or \"base\" entries mean the base "
          "model.");
ABSL_FLAG(int32_t, prompt_len, 16, "Prompt tokens per request (Score: tokens scored).");
ABSL_FLAG(int32_t, max_new_tokens, 32, "Tokens generated per request.");
ABSL_FLAG(double, temperature, 0, "Sampling temperature; 0 = greedy.");
ABSL_FLAG(uint64_t, seed, 1, "Seed of the random prompts and sampling.");
ABSL_FLAG(int64_t, requests, 0, "Total requests; 0 = run for --duration_s.");
ABSL_FLAG(double, duration_s, 10, "Seconds to run; 0 = until --requests.");
ABSL_FLAG(int32_t, vocab_size, 0, "Prompt ids come from [1, vocab); 0 = ask the server.");
ABSL_FLAG(int32_t, channels, 1, "Separate connections to spread the streams over.");
ABSL_FLAG(bool, preload, false, "Load every named adapter before the run (admin call).");
ABSL_FLAG(int32_t, warmup_requests, 0, "Untimed sequential requests before the run.");
ABSL_FLAG(double, request_timeout_s, 120, "Deadline of each request.");
ABSL_FLAG(std::string, label, "", "The first column of the row (default: a summary).");
ABSL_FLAG(bool, header, false, "Print the table header before the row.");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "loramux_loadgen --server HOST:PORT --streams N --adapters a,b,c --duration_s S");
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() > 1) {
    std::cerr << "loramux_loadgen: unexpected argument \"" << positional[1] << "\"\n";
    return 2;
  }
  loramux::ClientOptions client;
  client.target = absl::GetFlag(FLAGS_server);
  if (!absl::GetFlag(FLAGS_token_file).empty()) {
    absl::StatusOr<std::string> token =
        loramux::ReadSecretFile(absl::GetFlag(FLAGS_token_file), "--token_file", true);
    if (!token.ok()) {
      std::cerr << "loramux_loadgen: " << token.status().message() << "\n";
      return 2;
    }
    client.admin_token = client.inference_token = *token;
  }
  if (!absl::GetFlag(FLAGS_tls_ca_file).empty()) {
    absl::StatusOr<std::string> pem =
        loramux::ReadSecretFile(absl::GetFlag(FLAGS_tls_ca_file), "--tls_ca_file", false);
    if (!pem.ok()) {
      std::cerr << "loramux_loadgen: " << pem.status().message() << "\n";
      return 2;
    }
    client.tls = true;
    client.tls_root_cert_pem = *pem;
  }

  loramux::LoadgenOptions options;
  const std::string rpc = absl::GetFlag(FLAGS_rpc);
  if (rpc == "score") {
    options.rpc = loramux::LoadgenOptions::Rpc::kScore;
  } else if (rpc != "generate") {
    std::cerr << "loramux_loadgen: --rpc=" << rpc << " is unknown; use generate or score\n";
    return 2;
  }
  options.streams = absl::GetFlag(FLAGS_streams);
  options.adapters.clear();
  for (absl::string_view name : absl::StrSplit(absl::GetFlag(FLAGS_adapters), ',')) {
    options.adapters.push_back(name == "base" ? std::string() : std::string(name));
  }
  options.prompt_len = absl::GetFlag(FLAGS_prompt_len);
  options.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  options.temperature = static_cast<float>(absl::GetFlag(FLAGS_temperature));
  options.seed = absl::GetFlag(FLAGS_seed);
  options.requests = absl::GetFlag(FLAGS_requests);
  const double duration_s = absl::GetFlag(FLAGS_duration_s);
  options.duration = duration_s > 0 ? absl::Seconds(duration_s) : absl::InfiniteDuration();
  options.vocab_size = absl::GetFlag(FLAGS_vocab_size);
  options.channels = absl::GetFlag(FLAGS_channels);
  options.preload = absl::GetFlag(FLAGS_preload);
  options.warmup_requests = absl::GetFlag(FLAGS_warmup_requests);
  options.request_timeout = absl::Seconds(absl::GetFlag(FLAGS_request_timeout_s));

  absl::StatusOr<loramux::LoadgenResult> result = loramux::RunLoad(client, options);
  if (!result.ok()) {
    std::cerr << "loramux_loadgen: " << absl::StatusCodeToString(result.status().code()) << ": "
              << result.status().message() << "\n";
    return 1;
  }
  std::string label = absl::GetFlag(FLAGS_label);
  if (label.empty()) label = absl::StrCat(rpc, " prompt=", options.prompt_len);
  if (absl::GetFlag(FLAGS_header)) std::cout << loramux::MarkdownHeader(options.rpc);
  std::cout << loramux::MarkdownRow(label, options, *result) << std::endl;
  if (result->errors > 0) {
    std::cerr << "loramux_loadgen: " << result->errors
              << " request(s) failed; first: " << result->first_error << "\n";
    return 1;
  }
  return 0;
}
