// Chat-template rendering speed: per template family, the golden conversations rendered
// repeatedly (one thread), and a long conversation (qwen3 template, 2,000 messages). The
// "differ" column counts conversations whose rendering (or error) differs from the file's
// expectation ("expected", "expected_error", or "failure": any error), so the program doubles as
// a differential check on other case sets of the same layout.
// Usage: chat_template_bench [folder with <family>/{tokenizer_config.json,cases.json}]
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "text/chat_template.h"

namespace {

using Json = nlohmann::ordered_json;

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  const std::string root = argc > 1 ? argv[1] : LORAMUX_SOURCE_DIR "/tests/data/chat_templates";
  std::printf("%-16s %8s %12s %12s %10s %8s\n", "template", "renders", "us/render", "MB/s out",
              "load ms", "differ");
  for (const char* family :
       {"qwen3", "llama3_1", "llama3_1_tools", "llama2", "gemma3", "deepseek_v3"}) {
    const std::string dir = root + "/" + family;
    auto load_start = std::chrono::steady_clock::now();
    absl::StatusOr<loramux::ChatTemplate> t = loramux::ChatTemplate::FromModelDir(dir);
    const double load_s = Seconds(load_start);
    if (!t.ok()) {
      std::fprintf(stderr, "%s\n", t.status().ToString().c_str());
      return 1;
    }
    std::ifstream file(dir + "/cases.json");
    std::stringstream text;
    text << file.rdbuf();
    const Json cases = Json::parse(text.str());
    int differ = 0;
    for (const Json& c : cases) {
      absl::StatusOr<std::string> out =
          t->Render(c["messages"], c["add_generation_prompt"].get<bool>(), c["kwargs"]);
      bool same = false;
      if (c.contains("expected")) {
        same = out.ok() && *out == c["expected"].get<std::string>();
      } else if (c.contains("expected_error")) {
        same = !out.ok() &&
               absl::EndsWith(out.status().message(), c["expected_error"].get<std::string>());
      } else {
        same = !out.ok() && out.status().code() == absl::StatusCode::kInvalidArgument;
      }
      if (!same) {
        ++differ;
        std::fprintf(stderr, "%s/%s differs: %s\n", family, c["name"].get<std::string>().c_str(),
                     out.ok() ? "rendered" : out.status().ToString().c_str());
      }
    }
    int64_t renders = 0;
    size_t bytes = 0;
    auto start = std::chrono::steady_clock::now();
    for (int round = 0; round < 20; ++round) {
      for (const Json& c : cases) {
        absl::StatusOr<std::string> out =
            t->Render(c["messages"], c["add_generation_prompt"].get<bool>(), c["kwargs"]);
        if (out.ok()) bytes += out->size();
        ++renders;
      }
    }
    const double s = Seconds(start);
    std::printf("%-16s %8lld %12.1f %12.1f %10.2f %8d\n", family, static_cast<long long>(renders),
                1e6 * s / renders, bytes / s / 1e6, 1e3 * load_s, differ);
  }
  absl::StatusOr<loramux::ChatTemplate> qwen = loramux::ChatTemplate::FromModelDir(root + "/qwen3");
  Json messages = Json::array();
  for (int i = 0; i < 2000; ++i) {
    messages.push_back(
        {{"role", i % 2 == 0 ? "user" : "assistant"},
         {"content", "message number " + std::to_string(i) + " with some ordinary text in it"}});
  }
  auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::string> out = qwen->Render(messages, true, nullptr);
  std::printf("qwen3, 2000 messages: %.2f ms, %zu bytes out (%s)\n", 1e3 * Seconds(start),
              out.ok() ? out->size() : 0, out.ok() ? "ok" : out.status().ToString().c_str());
  return 0;
}
