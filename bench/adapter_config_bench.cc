// What an adapter_config.json costs the loader thread: parsing it (every regex compiled once) and
// planning an 80-layer model's 560 modules against it (Targets, ScaleOf per
// module, as PlanPeft does), for a typical PEFT config and for configs at the limits of
// adapter_limits.h; and the refusal of configs beyond them (issue 12, finding 10: 81,492
// rank_pattern keys in 1 MiB took 10.8 s and 290 MB before the limits).
// Usage: adapter_config_bench
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "adapters/adapter_config.h"
#include "adapters/adapter_limits.h"

namespace {

using loramux::PeftAdapterConfig;

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// `count` JSON object entries "<prefix><i>": value, or list items "<prefix><i>".
std::string Entries(const std::string& prefix, size_t count, const std::string& value) {
  std::vector<std::string> parts;
  for (size_t i = 0; i < count; ++i) {
    parts.push_back(value.empty() ? absl::StrCat("\"", prefix, i, "\"")
                                  : absl::StrCat("\"", prefix, i, "\": ", value));
  }
  return absl::StrJoin(parts, ", ");
}

std::vector<std::string> ModulePaths(int layers) {
  std::vector<std::string> paths;
  for (int layer = 0; layer < layers; ++layer) {
    for (const char* proj : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                             "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}) {
      paths.push_back(absl::StrCat("model.layers.", layer, ".", proj));
    }
  }
  return paths;
}

void Run(const char* name, const std::string& json, const std::vector<std::string>& paths) {
  constexpr int kRepeats = 5;
  double parse_s = 0, plan_s = 0;
  int targeted = 0;
  std::string outcome = "accepted";
  for (int i = 0; i < kRepeats; ++i) {
    auto start = std::chrono::steady_clock::now();
    absl::StatusOr<PeftAdapterConfig> config = PeftAdapterConfig::FromJson(json, "bench");
    parse_s += Seconds(start);
    if (!config.ok()) {
      outcome = std::string(config.status().message().substr(0, 60));
      continue;
    }
    start = std::chrono::steady_clock::now();
    targeted = 0;
    for (const std::string& path : paths) {
      if (!config->Targets(path)) continue;
      ++targeted;
      if (!config->ScaleOf(path).ok()) outcome = "scale refused";
    }
    plan_s += Seconds(start);
  }
  std::printf("%-34s %8zu %10.3f %10.3f %9d  %s\n", name, json.size(), 1e3 * parse_s / kRepeats,
              1e3 * plan_s / kRepeats, targeted, outcome.c_str());
}

}  // namespace

int main() {
  using loramux::kMaxAdapterConfigEntries;
  const std::vector<std::string> paths = ModulePaths(80);
  const std::string base = R"("peft_type": "LORA", "r": 16, "lora_alpha": 32)";
  const size_t n = kMaxAdapterConfigEntries;
  std::printf("%zu module paths (80 layers x 7 projections); mean of 5 runs\n", paths.size());
  std::printf("%-34s %8s %10s %10s %9s  %s\n", "config", "bytes", "parse ms", "plan ms", "targeted",
              "outcome");
  Run("typical (q,k,v,o; 1 pattern)",
      absl::StrCat("{", base, R"(, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
          "rank_pattern": {"o_proj": 8}, "alpha_pattern": {"o_proj": 8}})"),
      paths);
  Run("all-linear, 256+256 literal keys",
      absl::StrCat("{", base, R"(, "target_modules": "all-linear", "rank_pattern": {)",
                   Entries("r", n, "4"), R"(}, "alpha_pattern": {)", Entries("a", n, "8"), "}}"),
      paths);
  // Regex keys as costly as RE2 takes within the size limit: bounded repeats of any character.
  Run("all-linear, 256+256 regex keys",
      absl::StrCat("{", base, R"(, "target_modules": "all-linear", "rank_pattern": {)",
                   Entries("layers.1[0-9].self_attn.q_proj|", n, "4"), R"(}, "alpha_pattern": {)",
                   Entries("(q|v)_proj|", n, "8"), "}}"),
      paths);
  Run("keys as costly as RE2 takes (refused)",
      absl::StrCat("{", base, R"(, "target_modules": "all-linear", "rank_pattern": {)",
                   Entries(".{1000}", n, "4"), R"(}, "alpha_pattern": {)",
                   Entries("[a-z_.0-9]{0,1000}", n, "8"), "}}"),
      paths);
  Run("256 target names, 256 excludes",
      absl::StrCat("{", base, R"(, "target_modules": [)", Entries("t", n - 1, ""),
                   R"(, "q_proj"], "exclude_modules": [)", Entries("x", n, ""), "]}"),
      paths);
  Run("257 rank_pattern keys (refused)",
      absl::StrCat("{", base, R"(, "target_modules": "all-linear", "rank_pattern": {)",
                   Entries("r", n + 1, "4"), "}}"),
      paths);
  Run("81,492 keys, 1 MiB (refused)",
      absl::StrCat("{", base, R"(, "target_modules": "all-linear", "rank_pattern": {)",
                   Entries("k", 81492, "4"), "}}"),
      paths);
  return 0;
}
