// Bad model directories give clear errors, never crashes.
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <unistd.h>

#include "formats/safetensors.h"
#include "tests/status_matchers.h"
#include "tests/test_util.h"

namespace loramux {
namespace {

namespace fs = std::filesystem;
using ::loramux::testing::DataPath;
using ::loramux::testing::ReadFile;
using ::loramux::testing::ToVector;

class ModelLoadErrorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/bad_model_" + std::to_string(::getpid()) + "_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    config_ = ReadFile(DataPath("llama-tiny/config.json"));
    weights_ = ReadFile(DataPath("llama-tiny/model.safetensors"));
  }
  void TearDown() override { fs::remove_all(dir_); }

  void Write(const std::string& config, const std::string& weights) {
    if (!config.empty()) std::ofstream(dir_ + "/config.json") << config;
    if (!weights.empty()) std::ofstream(dir_ + "/model.safetensors", std::ios::binary) << weights;
  }

  absl::Status Load() { return LlamaModel::Load(dir_, torch::kCPU, torch::kFloat32).status(); }

  // The original weights with one tensor renamed or reshaped.
  std::string RewriteTensor(const std::string& name, const std::string& new_name,
                            std::vector<int64_t> new_shape) {
    auto file = SafetensorsFile::FromBytes(weights_, "llama-tiny").value();
    std::vector<TensorView> views = file->tensors();
    for (TensorView& v : views) {
      if (v.name != name) continue;
      v.name = new_name;
      if (!new_shape.empty()) v.shape = new_shape;
    }
    return SerializeSafetensors(views);
  }

  std::string dir_, config_, weights_;
};

TEST_F(ModelLoadErrorsTest, MissingConfig) {
  Write("", weights_);
  const absl::Status s = Load();
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kNotFound)) << s;
  EXPECT_NE(s.message().find("config.json"), absl::string_view::npos) << s;
}

TEST_F(ModelLoadErrorsTest, MissingWeights) {
  Write(config_, "");
  const absl::Status s = Load();
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kNotFound)) << s;
  EXPECT_NE(s.message().find("model.safetensors"), absl::string_view::npos) << s;
}

TEST_F(ModelLoadErrorsTest, UnsupportedArchitecture) {
  std::string config = config_;
  config.replace(config.find("LlamaForCausalLM"), 16, "GPT2LMHeadModel");
  Write(config, weights_);
  const absl::Status s = Load();
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kUnimplemented)) << s;
  EXPECT_NE(s.message().find("GPT2LMHeadModel"), absl::string_view::npos) << s;
}

TEST_F(ModelLoadErrorsTest, MalformedConfig) {
  Write("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": -4", weights_);
  EXPECT_THAT(Load(), StatusIs(absl::StatusCode::kInvalidArgument));
  std::string config = config_;
  config.replace(config.find("\"hidden_size\": 64"), 17, "\"hidden_size\": \"big\"");
  Write(config, weights_);
  const absl::Status s = Load();
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument)) << s;
  EXPECT_NE(s.message().find("hidden_size"), absl::string_view::npos) << s;
}

TEST_F(ModelLoadErrorsTest, MissingTensor) {
  Write(config_,
        RewriteTensor("model.layers.1.mlp.up_proj.weight", "model.layers.1.mlp.upp.weight", {}));
  const absl::Status s = Load();
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument)) << s;
  EXPECT_NE(s.message().find("model.layers.1.mlp.up_proj.weight"), absl::string_view::npos) << s;
}

TEST_F(ModelLoadErrorsTest, WrongShape) {
  // Same byte count, other shape: only the shape check can catch it.
  Write(config_, RewriteTensor("model.layers.0.self_attn.q_proj.weight",
                               "model.layers.0.self_attn.q_proj.weight", {32, 128}));
  const absl::Status s = Load();
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument)) << s;
  EXPECT_NE(s.message().find("[32,128]"), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find("[64,64]"), absl::string_view::npos) << s;
}

TEST_F(ModelLoadErrorsTest, TruncatedAndCorruptWeights) {
  const std::vector<std::string> corrupt = {
      weights_.substr(0, weights_.size() / 2),  // truncated data
      weights_.substr(0, 5),                    // truncated header length
      std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8) + weights_.substr(8),  // absurd header
      weights_.substr(0, 8) + "{not json" + weights_.substr(17),                // broken JSON
  };
  for (size_t i = 0; i < corrupt.size(); ++i) {
    Write(config_, corrupt[i]);
    const absl::Status s = Load();
    EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument)) << i << ": " << s;
    EXPECT_NE(s.message().find("model.safetensors"), absl::string_view::npos) << s;
  }
}

TEST_F(ModelLoadErrorsTest, ShardedCheckpointLoadsAndMatches) {
  // Split the weights into two shards with an index, as save_pretrained does for big models.
  auto file = SafetensorsFile::FromBytes(weights_, "llama-tiny").value();
  std::vector<TensorView> first, second;
  std::string map;
  for (const TensorView& v : file->tensors()) {
    const bool early = v.name.find("layers.1.") == std::string::npos;
    (early ? first : second).push_back(v);
    map += std::string(map.empty() ? "" : ",") + "\"" + v.name + "\": \"model-0000" +
           (early ? "1" : "2") + "-of-00002.safetensors\"";
  }
  std::ofstream(dir_ + "/model-00001-of-00002.safetensors", std::ios::binary)
      << SerializeSafetensors(first);
  std::ofstream(dir_ + "/model-00002-of-00002.safetensors", std::ios::binary)
      << SerializeSafetensors(second);
  std::ofstream(dir_ + "/model.safetensors.index.json")
      << "{\"metadata\": {}, \"weight_map\": {" << map << "}}";
  Write(config_, "");
  auto sharded = LlamaModel::Load(dir_, torch::kCPU, torch::kFloat32);
  ASSERT_TRUE(sharded.ok()) << sharded.status();
  auto golden = ::loramux::testing::LoadGolden("cases/llama-tiny/base.safetensors");
  const torch::Tensor ids = golden["p1.input_ids"];
  auto run = ::loramux::testing::RunBatch(
      **sharded,
      {{std::vector<int64_t>(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel())}}, 1);
  EXPECT_LE(::loramux::testing::MaxAbsDiff(run.prompt_logits[0], golden["p1.logits"]), 1e-4);
}

TEST(RopeScalingTest, Llama3AndLinearScalingParse) {
  auto llama3 = ModelConfig::FromJson(R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 8,
      "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
      "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}})",
                                      "c");
  ASSERT_TRUE(llama3.ok()) << llama3.status();
  EXPECT_EQ(llama3->rope_scaling.type, RopeScaling::Type::kLlama3);
  auto unknown = ModelConfig::FromJson(R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 8,
      "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
      "rope_scaling": {"type": "yarn", "factor": 4.0}})",
                                       "c");
  EXPECT_THAT(unknown.status(), StatusIs(absl::StatusCode::kUnimplemented));
}

}  // namespace
}  // namespace loramux
