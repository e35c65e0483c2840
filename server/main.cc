// loramux_server: serves one base model with many LoRA/DoRA adapters over gRPC.
// See server/server_config.h for the flags and server/server.h for the lifecycle.
#include <iostream>
#include <vector>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "server/server.h"
#include "server/server_config.h"

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "serves a base LLM with many LoRA/DoRA adapters over gRPC.\n"
      "  loramux_server [--model_dir=DIR] [--listen=HOST:PORT] [--adapter_store=DIR] ...\n"
      "With no flags it serves the built-in tiny Llama on 127.0.0.1:50051 "
      "(metrics on 127.0.0.1:9090).");
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) {
    return absl::StrContains(file, "server_config.cc");  // where the server's flags live
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  const std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() > 1) {
    std::cerr << "loramux_server: unexpected argument \"" << positional[1]
              << "\"; every setting is a --flag (see --help)\n";
    return 2;
  }
  absl::StatusOr<loramux::ServerConfig> config = loramux::ServerConfigFromFlags();
  if (!config.ok()) {
    std::cerr << "loramux_server: " << config.status().message() << "\n";
    return 2;
  }
  return loramux::RunServer(*config);
}
