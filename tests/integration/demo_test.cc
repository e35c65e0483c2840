// The built-in demo (scripts/make_demo.sh, cached in build/demo): served by the real server, the
// base and every demo adapter answer the same held-out prompts, each with its own task, per
// request and without a reload; each adapter is right (greedy, exact text) on at least 90% of its
// held-out examples, words that occur in no training file. The test fails when the demo has not
// been built (scripts/test.sh builds it first).
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "nlohmann/json.hpp"
#include "tests/integration/server_harness.h"

namespace loramux::testing {
namespace {

struct Example {
  std::string prompt, completion;
};

std::vector<Example> ReadExamples(const std::string& path) {
  std::vector<Example> examples;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    examples.push_back({j["prompt"].get<std::string>(), j["completion"].get<std::string>()});
  }
  return examples;
}

// The fraction of `examples` whose greedy completion through `adapter` is exactly right.
double Accuracy(v1::Inference::Stub& stub, const std::string& adapter,
                const std::vector<Example>& examples, std::string* first_wrong) {
  int correct = 0;
  for (const Example& ex : examples) {
    v1::GenerateRequest request;
    request.set_adapter(adapter);
    request.set_prompt_text(ex.prompt);
    request.mutable_sampling()->set_max_new_tokens(12);
    request.mutable_sampling()->set_temperature(0);
    const GenerateOutcome out = Generate(stub, request);
    EXPECT_TRUE(out.status.ok()) << out.status.error_message();
    if (out.text == ex.completion) {
      ++correct;
    } else if (first_wrong->empty()) {
      *first_wrong = ex.prompt + " ->" + out.text + " (want" + ex.completion + ")";
    }
  }
  return static_cast<double>(correct) / static_cast<double>(examples.size());
}

TEST(DemoTest, EveryDemoAdapterAnswersItsHeldOutExamples) {
  const std::string demo = LORAMUX_DEMO_DIR;
  ASSERT_TRUE(std::filesystem::exists(demo + "/stamp"))
      << demo << " is missing: build the demo with ./scripts/make_demo.sh (scripts/test.sh does)";
  ServerProcess server({"--model_dir=" + demo + "/base"});
  ASSERT_TRUE(server.ok()) << server.Log();
  auto channel = Connect(server.address());
  v1::Adapters::Stub adapters(channel);
  v1::Inference::Stub inference(channel);
  const std::vector<std::string> tasks = {"upper", "rot13", "mask", "initial"};
  for (const std::string& task : tasks) {
    AdapterFiles files{ReadFile(demo + "/adapters/" + task + "/adapter_config.json"),
                       ReadFile(demo + "/adapters/" + task + "/adapter_model.safetensors")};
    v1::AdapterInfo info;
    ASSERT_TRUE(Upload(adapters, task, files, &info).ok()) << task;
  }
  // The base echoes: the same prompts, a different task.
  std::string wrong;
  const auto echo = ReadExamples(demo + "/data/upper.heldout.jsonl");
  std::vector<Example> base_examples;
  for (const Example& ex : echo)
    base_examples.push_back({ex.prompt, " " + ex.prompt.substr(0, ex.prompt.size() - 2)});
  EXPECT_GE(Accuracy(inference, "", base_examples, &wrong), 0.9) << "base: " << wrong;
  for (const std::string& task : tasks) {
    wrong.clear();
    const auto examples = ReadExamples(demo + "/data/" + task + ".heldout.jsonl");
    ASSERT_GE(examples.size(), 100u) << task;
    const double accuracy = Accuracy(inference, task, examples, &wrong);
    RecordProperty(task + "_accuracy", std::to_string(accuracy));
    EXPECT_GE(accuracy, 0.9) << task << ": e.g. " << wrong;
  }
}

// The issue's fixed command line through the CLI: `loramux train ... --upload NAME --server` trains
// (token-id data for llama-tiny), uploads to a running server, and ends with `loss: X`; the server
// then serves the adapter.
TEST(TrainCliTest, TrainsUploadsAndPrintsTheLoss) {
  ServerProcess server({});
  ASSERT_TRUE(server.ok()) << server.Log();
  const std::string dir = MakeTempDir();
  {
    std::ofstream data(dir + "/data.jsonl");
    for (int i = 0; i < 16; ++i) {
      data << "{\"prompt_token_ids\": [1, " << 10 + i << ", " << 40 + i
           << "], \"completion_token_ids\": [7, 8, 2]}\n";
    }
  }
  const std::string out =
      RunCommand(std::string(LORAMUX_CLI) + " train --model_dir " + LORAMUX_TEST_DATA_DIR +
                 "/llama-tiny --data " + dir + "/data.jsonl --out " + dir +
                 "/adapter --rank 4 --alpha 8 --dora --targets q_proj,v_proj --epochs 2 "
                 "--lr 0.01 --batch_size 4 --seed 3 --upload cli-trained --server " +
                 server.address() + " 2>&1");
  const size_t last = out.rfind("loss: ");
  ASSERT_NE(last, std::string::npos) << out;
  EXPECT_EQ(out.find('\n', last), out.size() - 1) << "`loss: X` is not the last line:\n" << out;
  EXPECT_GT(std::stod(out.substr(last + 6)), 0.0);
  EXPECT_NE(out.find("uploaded cli-trained@"), std::string::npos) << out;
  auto channel = Connect(server.address());
  v1::Inference::Stub inference(channel);
  const GenerateOutcome gen = Generate(inference, MakeGenerate("cli-trained", {1, 12, 42}, 3));
  EXPECT_TRUE(gen.status.ok()) << gen.status.error_message();
  EXPECT_EQ(gen.tokens.size(), 3u);
  // Bad usage is refused with the reason.
  const std::string bad =
      RunCommand(std::string(LORAMUX_CLI) + " train --model_dir " + LORAMUX_TEST_DATA_DIR +
                 "/llama-tiny --data " + dir + "/data.jsonl --out " + dir + "/x --rank 0 2>&1");
  EXPECT_NE(bad.find("--rank must be >= 1"), std::string::npos) << bad;
}

}  // namespace
}  // namespace loramux::testing
