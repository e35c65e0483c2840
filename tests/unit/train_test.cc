// loramux train / merge against the references: the training forward equals PEFT's logits for
// every golden adapter; adapter gradients equal finite differences in float64 (LoRA, rsLoRA,
// DoRA with PEFT's detached norm and with a differentiable one); a trained adapter served by the
// engine (AdapterWeights + LlamaModel, the server's path) gives the trainer's logits; merges equal
// PEFT's merge_and_unload weights and logits; training is deterministic, resumable and learns.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "adapters/adapter_weights.h"
#include "engine/text_codec.h"
#include "tensor/tensor_util.h"
#include "tests/status_matchers.h"
#include "tests/test_util.h"
#include "train/merge.h"
#include "train/train_data.h"
#include "train/trainer.h"

namespace loramux {
namespace {

#define ASSERT_OK(expr)                                       \
  do {                                                        \
    const absl::Status assert_ok_status_ = StatusOf(expr);    \
    ASSERT_TRUE(assert_ok_status_.ok()) << assert_ok_status_; \
  } while (0)

using ::loramux::testing::DataPath;
using ::loramux::testing::LoadGolden;
using ::loramux::testing::LoadModel;
using ::loramux::testing::MakeTempDir;
using ::loramux::testing::MaxAbsDiff;
using ::loramux::testing::ReadFile;
using ::loramux::testing::RunBatch;
using ::loramux::testing::TestSequence;
using ::loramux::testing::ToVector;

struct AdapterCase {
  std::string model;
  std::string adapter;
};

const std::vector<AdapterCase> kGoldenAdapters = {
    {"llama-tiny", "lora-qv-r8"},   {"llama-tiny", "lora-all-r4-rslora"},
    {"llama-tiny", "dora-qkvo-r8"}, {"llama-tiny", "lora-pattern"},
    {"llama-tiny", "dora-mlp-r4"},  {"qwen2-tiny", "qwen-lora-r8"},
    {"qwen2-tiny", "qwen-dora-r4"}};

PeftAdapterConfig ConfigOf(const std::string& json) {
  auto config = PeftAdapterConfig::FromJson(json, "test");
  TORCH_CHECK(config.ok(), std::string(config.status().message()));
  return *config;
}

// A golden PEFT adapter read into a trainable model (its config picks the modules).
std::unique_ptr<TrainableModel> GoldenAdapterModel(const LlamaModel& base,
                                                   const std::string& adapter,
                                                   torch::ScalarType dtype = torch::kFloat32,
                                                   DoraNorm norm = DoraNorm::kDetached) {
  const std::string dir = DataPath("adapters/" + adapter);
  auto model = TrainableModel::ForAdapter(base, ConfigOf(ReadFile(dir + "/adapter_config.json")),
                                          dtype, 0, norm);
  TORCH_CHECK(model.ok(), std::string(model.status().message()));
  auto file = SafetensorsFile::Open(dir + "/adapter_model.safetensors");
  TORCH_CHECK(file.ok());
  const absl::Status loaded = (*model)->LoadTensors(**file);
  TORCH_CHECK(loaded.ok(), std::string(loaded.message()));
  return std::move(*model);
}

TEST(TrainForwardTest, EqualsPeftLogitsForEveryGoldenAdapter) {
  for (const AdapterCase& c : kGoldenAdapters) {
    auto base = LoadModel(c.model);
    auto model = GoldenAdapterModel(*base, c.adapter);
    auto golden = LoadGolden("cases/" + c.model + "/" + c.adapter + ".safetensors");
    torch::NoGradGuard no_grad;
    for (int p = 0; p < 3; ++p) {
      const std::string key = "p" + std::to_string(p) + ".";
      const torch::Tensor logits = model->Forward(golden[key + "input_ids"].unsqueeze(0))[0];
      EXPECT_LE(MaxAbsDiff(logits, golden[key + "logits"]), 1e-4) << c.adapter << " " << key;
    }
  }
}

TEST(TrainForwardTest, FullModelEqualsTheBase) {
  auto base = LoadModel("qwen2-tiny");
  auto model = TrainableModel::ForFullFineTune(*base, torch::kFloat32);
  auto golden = LoadGolden("cases/qwen2-tiny/base.safetensors");
  torch::NoGradGuard no_grad;
  const torch::Tensor logits = model->Forward(golden["p0.input_ids"].unsqueeze(0))[0];
  EXPECT_LE(MaxAbsDiff(logits, golden["p0.logits"]), 1e-4);
}

TEST(TrainInitTest, FollowsPeft) {
  auto base = LoadModel("llama-tiny");
  auto model = TrainableModel::ForAdapter(
      *base,
      ConfigOf(
          R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "use_dora": true, "target_modules": ["q_proj", "down_proj"]})"),
      torch::kFloat32, 7);
  ASSERT_OK(model.status());
  ASSERT_EQ((*model)->modules().size(), 4u);
  for (const TrainableModule& m : (*model)->modules()) {
    const torch::Tensor& w = base->module_weight(m.index);
    const double bound = 1.0 / std::sqrt(static_cast<double>(w.size(1)));
    EXPECT_EQ(m.lora_a.sizes(), (std::vector<int64_t>{4, w.size(1)}));
    EXPECT_LE(m.lora_a.abs().max().item<double>(), bound);
    EXPECT_GT(m.lora_a.abs().max().item<double>(), 0.8 * bound);  // uniform over the whole range
    EXPECT_EQ(m.lora_b.count_nonzero().item<int64_t>(), 0);
    EXPECT_LE(MaxAbsDiff(m.magnitude, w.norm(2, {1})), 1e-6);
    EXPECT_DOUBLE_EQ(m.scale, 2.0);
  }
}

// What the command line writes (PeftConfigJson) selects modules as PEFT would: a regex over module
// paths, names limited to layers_to_transform, all-linear expanded to the seven projections.
TEST(TrainInitTest, WrittenConfigsSelectTheModulesPeftWould) {
  auto base = LoadModel("llama-tiny");
  auto paths = [&](const AdapterSpec& spec) {
    auto model =
        TrainableModel::ForAdapter(*base, ConfigOf(PeftConfigJson(spec)), torch::kFloat32, 0);
    EXPECT_TRUE(model.ok()) << model.status();
    std::vector<std::string> out;
    if (model.ok()) {
      for (const TrainableModule& m : (*model)->modules()) out.push_back(m.path);
    }
    return out;
  };
  AdapterSpec regex;
  regex.target_regex = R"(.*\.1\.mlp\.(gate|up)_proj)";
  EXPECT_EQ(paths(regex), (std::vector<std::string>{"model.layers.1.mlp.gate_proj",
                                                    "model.layers.1.mlp.up_proj"}));
  AdapterSpec layers;
  layers.target_names = {"o_proj"};
  layers.layers_to_transform = {0};
  EXPECT_EQ(paths(layers), (std::vector<std::string>{"model.layers.0.self_attn.o_proj"}));
  AdapterSpec all;
  all.target_names.assign(kProjectionNames.begin(), kProjectionNames.end());
  EXPECT_EQ(paths(all).size(), 14u);
}

// ---- gradients against central finite differences, float64 --------------------------------

struct GradCase {
  std::string name;
  std::string config;
  DoraNorm norm = DoraNorm::kDetached;
  std::string model = "llama-tiny";
};

void PrintTo(const GradCase& c, std::ostream* os) { *os << c.name; }

class GradientTest : public ::testing::TestWithParam<GradCase> {};

double Loss(const TrainableModel& model, const torch::Tensor& tokens, const torch::Tensor& mask) {
  return CompletionLoss(model.Forward(tokens), tokens, mask).first.item<double>();
}

TEST_P(GradientTest, AdapterGradientsEqualFiniteDifferences) {
  torch::manual_seed(3);
  auto base = LoadModel(GetParam().model);
  auto made = TrainableModel::ForAdapter(*base, ConfigOf(GetParam().config), torch::kFloat64, 1,
                                         GetParam().norm);
  ASSERT_OK(made.status());
  TrainableModel& model = **made;
  {
    // B = 0 at init would leave A without gradient; move every factor away from its init.
    torch::NoGradGuard no_grad;
    for (TrainableModule& m : model.modules()) {
      m.lora_b.normal_(0, 0.3);
      if (m.dora) m.magnitude.mul_(torch::rand_like(m.magnitude) + 0.5);
    }
  }
  const torch::Tensor tokens = torch::randint(3, 300, {2, 7}, torch::kInt64);
  torch::Tensor mask = torch::zeros({2, 7}, torch::kBool);
  mask.narrow(1, 3, 4).fill_(true);
  model.Forward(tokens);  // warm-up
  CompletionLoss(model.Forward(tokens), tokens, mask).first.backward();

  // With PEFT's detached norm the gradient is that of the loss with the norm held at its value.
  if (GetParam().norm == DoraNorm::kDetached) {
    torch::NoGradGuard no_grad;
    for (TrainableModule& m : model.modules()) {
      if (!m.dora) continue;
      const torch::Tensor& w = base->module_weight(m.index).to(torch::kFloat64);
      m.norm_override = (w + m.scale * m.lora_b.mm(m.lora_a)).norm(2, {1});
    }
  }
  std::mt19937 pick(5);
  int checked = 0;
  double worst = 0;
  for (const torch::Tensor& p : model.parameters()) {
    ASSERT_TRUE(p.grad().defined());
    const torch::Tensor flat = p.view({-1});
    const torch::Tensor grad = p.grad().view({-1});
    for (int k = 0; k < 3; ++k) {
      const int64_t i = std::uniform_int_distribution<int64_t>(0, flat.numel() - 1)(pick);
      const double h = 1e-6, keep = flat[i].item<double>();
      double up, down;
      {
        torch::NoGradGuard no_grad;
        flat[i].fill_(keep + h);
        up = Loss(model, tokens, mask);
        flat[i].fill_(keep - h);
        down = Loss(model, tokens, mask);
        flat[i].fill_(keep);
      }
      const double numeric = (up - down) / (2 * h), analytic = grad[i].item<double>();
      const double error = std::abs(numeric - analytic) / std::max(1e-3, std::abs(numeric));
      worst = std::max(worst, error);
      EXPECT_LE(error, 1e-5) << "entry " << i << ": autograd " << analytic
                             << ", finite differences " << numeric;
      ++checked;
    }
  }
  EXPECT_GE(checked, 12);
  RecordProperty("worst_relative_error", std::to_string(worst));
}

// The detached and the differentiable norm give different gradients for A and B (so the test
// above tells them apart), and the same gradient for the magnitude.
TEST(GradientTest, DetachedNormDiffersFromTheFullGradient) {
  auto base = LoadModel("llama-tiny");
  const std::string config =
      R"({"peft_type": "LORA", "r": 2, "lora_alpha": 4, "use_dora": true, "target_modules": ["v_proj"]})";
  std::vector<std::vector<torch::Tensor>> grads;
  for (DoraNorm norm : {DoraNorm::kDetached, DoraNorm::kDifferentiable}) {
    auto model = TrainableModel::ForAdapter(*base, ConfigOf(config), torch::kFloat64, 1, norm);
    ASSERT_OK(model.status());
    {
      torch::NoGradGuard no_grad;
      torch::manual_seed(9);
      for (TrainableModule& m : (*model)->modules()) m.lora_b.normal_(0, 0.3);
    }
    const torch::Tensor tokens = torch::arange(5, 12, torch::kInt64).unsqueeze(0);
    CompletionLoss((*model)->Forward(tokens), tokens, torch::ones({1, 7}, torch::kBool))
        .first.backward();
    std::vector<torch::Tensor> g;
    for (const torch::Tensor& p : (*model)->parameters()) g.push_back(p.grad().clone());
    grads.push_back(g);
  }
  EXPECT_GT(MaxAbsDiff(grads[0][0], grads[1][0]), 1e-6);   // A
  EXPECT_LE(MaxAbsDiff(grads[0][2], grads[1][2]), 1e-12);  // m
}

INSTANTIATE_TEST_SUITE_P(
    Adapters, GradientTest,
    ::testing::Values(
        GradCase{
            "lora",
            R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"]})"},
        GradCase{
            "rslora",
            R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "use_rslora": true, "target_modules": "all-linear"})"},
        GradCase{
            "dora_detached_as_peft",
            R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "use_dora": true, "target_modules": ["k_proj", "o_proj", "up_proj"]})"},
        GradCase{
            "dora_differentiable_norm",
            R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "use_dora": true, "target_modules": ["k_proj", "o_proj", "up_proj"]})",
            DoraNorm::kDifferentiable},
        GradCase{
            "qwen_dora_with_bias",
            R"({"peft_type": "LORA", "r": 2, "lora_alpha": 4, "use_dora": true, "target_modules": ["q_proj", "v_proj"], "layers_to_transform": [1]})",
            DoraNorm::kDetached, "qwen2-tiny"}),
    [](const auto& info) { return info.param.name; });

// ---- training end to end -----------------------------------------------------------------

// Token-id examples for llama-tiny: the completion is the prompt's last token, then 7 8 9, EOS.
std::string WriteTokenData(const std::string& dir, int count) {
  std::mt19937 rng(11);
  std::ofstream out(dir + "/data.jsonl");
  for (int i = 0; i < count; ++i) {
    std::vector<int> p = {1};
    for (int k = 0; k < 5; ++k) p.push_back(std::uniform_int_distribution<int>(3, 40)(rng));
    out << "{\"prompt_token_ids\": [";
    for (size_t k = 0; k < p.size(); ++k) out << (k ? "," : "") << p[k];
    out << "], \"completion_token_ids\": [" << p[5] << ",7,8,9,2]}\n";
  }
  return dir + "/data.jsonl";
}

TrainOptions SmallRun(const std::string& dir, const std::string& data) {
  TrainOptions o;
  o.model_dir = DataPath("llama-tiny");
  o.data = data;
  o.out = dir + "/adapter";
  o.adapter.rank = 4;
  o.adapter.alpha = 8;
  o.adapter.target_names = {"q_proj", "v_proj", "up_proj"};
  o.adapter.base_model_name_or_path = "llama-tiny";
  o.epochs = 3;
  o.batch_size = 4;
  o.grad_accum = 2;
  o.lr = 5e-3;
  o.seed = 42;
  o.threads = 1;
  return o;
}

TEST(TrainerTest, TrainedAdapterServedByTheEngineGivesTheTrainersLogits) {
  for (bool dora : {false, true}) {
    const std::string dir = MakeTempDir();
    TrainOptions o = SmallRun(dir, WriteTokenData(dir, 24));
    o.adapter.use_dora = dora;
    std::ostringstream log;
    auto result = Train(o, log);
    ASSERT_OK(result.status());
    auto base = LoadModel("llama-tiny");
    StoredAdapter stored;
    stored.name = "trained";
    stored.version = "v";
    stored.format = AdapterFormat::kPeft;
    stored.config_json = ReadFile(o.out + "/adapter_config.json");
    stored.weights_path = o.out + "/adapter_model.safetensors";
    auto served = AdapterWeights::Load(stored, *base, AdapterLimits{});
    ASSERT_OK(served.status());
    auto trained =
        TrainableModel::ForAdapter(*base, ConfigOf(stored.config_json), torch::kFloat32, 0);
    ASSERT_OK(trained.status());
    auto file = SafetensorsFile::Open(stored.weights_path);
    ASSERT_OK(file.status());
    ASSERT_OK((*trained)->LoadTensors(**file));
    // The adapter moved away from B = 0 (else both would be the base).
    EXPECT_GT((*trained)->modules()[0].lora_b.abs().max().item<double>(), 1e-3);
    const std::vector<int64_t> prompt = {1, 17, 33, 5, 21, 9, 30, 12};
    auto run = RunBatch(*base, {TestSequence{prompt, served->get()}}, 1);
    torch::NoGradGuard no_grad;
    const torch::Tensor logits = (*trained)->Forward(torch::tensor(prompt).unsqueeze(0))[0];
    EXPECT_LE(MaxAbsDiff(run.prompt_logits[0], logits), 1e-4) << (dora ? "DoRA" : "LoRA");
    auto plain = RunBatch(*base, {TestSequence{prompt, nullptr}}, 1);
    EXPECT_GT(MaxAbsDiff(plain.prompt_logits[0], logits), 1e-2);
  }
}

TEST(TrainerTest, LearnsAndHeldOutLossFalls) {
  const std::string dir = MakeTempDir();
  TrainOptions o = SmallRun(dir, WriteTokenData(dir, 60));
  o.epochs = 6;
  o.eval_fraction = 0.2;
  std::ostringstream log;
  auto result = Train(o, log);
  ASSERT_OK(result.status());
  ASSERT_EQ(result->eval_losses.size(), 6u) << log.str();
  EXPECT_LT(result->eval_losses.back(), result->eval_losses.front() - 0.5) << log.str();
  EXPECT_NE(log.str().find("tok/s"), std::string::npos);
  EXPECT_NE(log.str().find("ETA"), std::string::npos);
  EXPECT_NE(log.str().find("held-out loss"), std::string::npos);
}

TEST(TrainerTest, DeterministicAndResumable) {
  const std::string dir = MakeTempDir();
  const std::string data = WriteTokenData(dir, 24);
  std::ostringstream log;
  TrainOptions a = SmallRun(dir + "/a", data), b = SmallRun(dir + "/b", data),
               c = SmallRun(dir + "/c", data);
  c.adapter.use_dora = a.adapter.use_dora = b.adapter.use_dora = true;
  ASSERT_OK(Train(a, log).status());
  ASSERT_OK(Train(b, log).status());
  EXPECT_EQ(ReadFile(a.out + "/adapter_model.safetensors"),
            ReadFile(b.out + "/adapter_model.safetensors"));
  // c stops after 2 steps (mid-epoch), then resumes twice in 2-step sessions, then to the end.
  c.stop_after = 2;
  c.resume = true;
  auto first = Train(c, log);
  ASSERT_OK(first.status());
  EXPECT_TRUE(first->stopped_early);
  EXPECT_FALSE(std::filesystem::exists(c.out + "/adapter_model.safetensors"));
  ASSERT_OK(Train(c, log).status());
  c.stop_after = 0;
  auto last = Train(c, log);
  ASSERT_OK(last.status());
  EXPECT_FALSE(last->stopped_early);
  EXPECT_EQ(ReadFile(a.out + "/adapter_model.safetensors"),
            ReadFile(c.out + "/adapter_model.safetensors"));
  // A checkpoint of other options is refused, not silently mixed in.
  TrainOptions other = c;
  other.lr = 1e-3;
  other.stop_after = 1;
  EXPECT_EQ(Train(other, log).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(TrainerTest, BadInputIsRefusedWithTheReason) {
  const std::string dir = MakeTempDir();
  std::ostringstream log;
  auto write = [&](const std::string& text) {
    std::ofstream(dir + "/bad.jsonl") << text;
    return dir + "/bad.jsonl";
  };
  TrainOptions o = SmallRun(
      dir, write("{\"prompt_token_ids\": [1, 2], \"completion_token_ids\": [3]}\nnot json\n"));
  auto status = Train(o, log).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("bad.jsonl:2"), std::string::npos) << status;
  o.data = write("{\"prompt_token_ids\": [1, 2], \"completion_token_ids\": [999]}\n");
  status = Train(o, log).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("[0, 320)"), std::string::npos) << status;
  o.data = write("{\"prompt\": \"hi\", \"completion\": \"there\"}\n");
  status = Train(o, log).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("tokenizer"), std::string::npos) << status;
  o.data = WriteTokenData(dir, 8);
  o.adapter.target_names = {"q_prj"};
  status = Train(o, log).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("q_prj"), std::string::npos) << status;
  o = SmallRun(dir, dir + "/missing.jsonl");
  EXPECT_EQ(Train(o, log).status().code(), absl::StatusCode::kNotFound);
  o = SmallRun(dir, WriteTokenData(dir, 8));
  o.batch_size = 0;
  EXPECT_EQ(Train(o, log).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TrainDataTest, ChatExamplesLearnOnlyTheAssistantReply) {
  // qwen3's template and tokenizer (tests/data/tokenizers/qwen3) on a model dir of its own.
  const std::string dir = MakeTempDir();
  std::filesystem::copy(DataPath("llama-tiny"), dir + "/model");
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
    if (std::filesystem::exists(DataPath(std::string("tokenizers/qwen3/") + f))) {
      std::filesystem::copy(DataPath(std::string("tokenizers/qwen3/") + f), dir + "/model/" + f);
    }
  }
  if (!std::filesystem::exists(dir + "/model/tokenizer_config.json"))
    GTEST_SKIP() << "no qwen3 chat template in tests/data";
  auto codec = TextCodec::Load(dir + "/model");
  ASSERT_OK(codec.status());
  std::ofstream(dir + "/chat.jsonl")
      << R"({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]})"
      << "\n";
  auto config = ModelConfig::FromDirectory(dir + "/model");
  ASSERT_OK(config.status());
  config->vocab_size = (*codec)->tokenizer()->vocab_size();
  auto examples = ReadTrainData(dir + "/chat.jsonl", *config, **codec, 512);
  ASSERT_OK(examples.status());
  const TrainExample& ex = (*examples)[0];
  std::vector<int32_t> completion(ex.tokens.begin() + ex.prompt_length, ex.tokens.end());
  auto text = (*codec)->Decode(completion, false);
  ASSERT_OK(text.status());
  // The reply and what the template closes it with; the conversation before it is the prompt.
  EXPECT_NE(text->find("Hello!"), std::string::npos) << *text;
  std::vector<int32_t> prompt(ex.tokens.begin(), ex.tokens.begin() + ex.prompt_length);
  auto prompt_text = (*codec)->Decode(prompt, false);
  ASSERT_OK(prompt_text.status());
  EXPECT_NE(prompt_text->find("Hi"), std::string::npos) << *prompt_text;
  EXPECT_EQ(prompt_text->find("Hello!"), std::string::npos) << *prompt_text;
  RecordProperty("completion", *text);
}

// ---- merge -------------------------------------------------------------------------------

class MergeTest : public ::testing::TestWithParam<AdapterCase> {};

TEST_P(MergeTest, EqualsPeftMergeAndUnload) {
  const std::string out = MakeTempDir() + "/merged";
  MergeOptions o;
  o.model_dir = DataPath(GetParam().model);
  o.adapter_dir = DataPath("adapters/" + GetParam().adapter);
  o.out = out;
  ASSERT_OK(Merge(o));
  auto merged = SafetensorsFile::Open(out + "/model.safetensors");
  ASSERT_OK(merged.status());
  auto golden = LoadGolden("cases/merged/" + GetParam().adapter + ".safetensors");
  ASSERT_FALSE(golden.empty());
  for (const auto& [name, want] : golden) {
    const TensorView* view = (*merged)->Find(name);
    ASSERT_NE(view, nullptr) << name;
    auto got = ToTorch(*view, torch::kCPU, torch::kFloat32);
    ASSERT_OK(got.status());
    EXPECT_LE(MaxAbsDiff(*got, want), 1e-5) << name;
  }
  // Served as a plain base, the merged checkpoint gives PEFT's merged logits.
  auto model = LlamaModel::Load(out, torch::kCPU, torch::kFloat32);
  ASSERT_OK(model.status());
  auto cases = LoadGolden("cases/" + GetParam().model + "/" + GetParam().adapter + ".safetensors");
  auto run = RunBatch(**model, {TestSequence{ToVector(cases["p0.input_ids"]), nullptr}}, 1);
  EXPECT_LE(MaxAbsDiff(run.prompt_logits[0], cases["p0.merged_logits"]), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Adapters, MergeTest, ::testing::ValuesIn(kGoldenAdapters),
                         [](const auto& info) {
                           std::string name = info.param.adapter;
                           for (char& c : name)
                             c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return name;
                         });

TEST(MergeErrorsTest, MissingAdapterIsNotFound) {
  MergeOptions o;
  o.model_dir = DataPath("llama-tiny");
  o.adapter_dir = MakeTempDir();
  o.out = MakeTempDir() + "/m";
  EXPECT_EQ(Merge(o).code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace loramux
