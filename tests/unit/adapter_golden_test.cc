// LoRA / DoRA adapters against PEFT golden data, the seed layers against the seed code, and the
// invariants of serving: mixed batches equal single runs, and the base weights are never touched.
#include <malloc.h>
#include <filesystem>
#include <fstream>
#include <sstream>
#if defined(__SANITIZE_ADDRESS__)
// From the sanitizer runtime's allocator interface (GCC 12 ships no header for it).
extern "C" size_t __sanitizer_get_current_allocated_bytes();
#endif

#include <gtest/gtest.h>

#include "adapters/adapter_config.h"
#include "adapters/adapter_weights.h"
#include "formats/safetensors.h"
#include "tensor/tensor_util.h"
#include "tests/test_util.h"

namespace loramux {
namespace {

using ::loramux::testing::DataPath;
using ::loramux::testing::LoadGolden;
using ::loramux::testing::LoadModel;
using ::loramux::testing::MaxAbsDiff;
using ::loramux::testing::ReadFile;
using ::loramux::testing::RunBatch;
using ::loramux::testing::TestSequence;
using ::loramux::testing::ToVector;

constexpr double kLogitTolerance = 1e-4;
constexpr double kModuleTolerance = 1e-5;

StoredAdapter PeftFromTestData(const std::string& name) {
  StoredAdapter a;
  a.name = name;
  a.version = "test";
  a.format = AdapterFormat::kPeft;
  a.config_json = ReadFile(DataPath("adapters/" + name + "/adapter_config.json"));
  a.weights_path = DataPath("adapters/" + name + "/adapter_model.safetensors");
  return a;
}

std::shared_ptr<const AdapterWeights> LoadAdapter(const LlamaModel& model,
                                                  const std::string& name) {
  auto weights = AdapterWeights::Load(PeftFromTestData(name), model, AdapterLimits{});
  TORCH_CHECK(weights.ok(), std::string(weights.status().message()));
  return *weights;
}

struct AdapterCase {
  std::string model;
  std::string adapter;
};

void PrintTo(const AdapterCase& c, std::ostream* os) { *os << c.model << "/" << c.adapter; }

class PeftGoldenTest : public ::testing::TestWithParam<AdapterCase> {};

TEST_P(PeftGoldenTest, LogitsAndGreedyTokensMatchPeft) {
  auto model = LoadModel(GetParam().model);
  auto adapter = LoadAdapter(*model, GetParam().adapter);
  auto golden = LoadGolden("cases/" + GetParam().model + "/" + GetParam().adapter + ".safetensors");
  for (int p = 0; p < 3; ++p) {
    const std::string key = "p" + std::to_string(p) + ".";
    auto run =
        RunBatch(*model, {TestSequence{ToVector(golden[key + "input_ids"]), adapter.get()}}, 12);
    EXPECT_LE(MaxAbsDiff(run.prompt_logits[0], golden[key + "logits"]), kLogitTolerance) << key;
    EXPECT_LE(MaxAbsDiff(run.prompt_logits[0], golden[key + "merged_logits"]), kLogitTolerance)
        << key;
    EXPECT_LE(MaxAbsDiff(run.step_logits[0], golden[key + "gen_scores"]), kLogitTolerance) << key;
    EXPECT_EQ(run.tokens[0], ToVector(golden[key + "gen_tokens"])) << key;
  }
}

TEST_P(PeftGoldenTest, EveryLayerZeroModuleMatchesPeft) {
  auto model = LoadModel(GetParam().model);
  auto adapter = LoadAdapter(*model, GetParam().adapter);
  auto golden = LoadGolden("cases/layers/" + GetParam().adapter + ".safetensors");
  int checked = 0;
  for (int64_t p = 0; p < kNumProjections; ++p) {
    const std::string path = ModulePath(0, static_cast<Projection>(p));
    if (!golden.count(path + ".x")) continue;
    const torch::Tensor x = golden[path + ".x"];
    const std::vector<AdapterSegment> segments = {{adapter.get(), 1.0, 0, x.size(0)}};
    const torch::Tensor y =
        AdaptedLinear(x, model->linear(0, static_cast<Projection>(p)), p, segments);
    EXPECT_LE(MaxAbsDiff(y, golden[path + ".y"]), kModuleTolerance) << path;
    const torch::Tensor base =
        AdaptedLinear(x, model->linear(0, static_cast<Projection>(p)), p, {});
    EXPECT_LE(MaxAbsDiff(base, golden[path + ".y_base"]), kModuleTolerance) << path;
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

// --dtype=bfloat16 serves adapters through the same paths (factors and DoRA gains in bfloat16):
// prompt logits and the first decode step stay within bfloat16's error of PEFT's float32 logits
// (each adapter moves these logits by 48-110% of their norm, so ignoring it cannot pass): within
// 6%, where the cases give 0.8-4.5% (most 1-3%) on AVX2 and AVX-512 CPUs, whose kernels sum in
// different orders.
TEST_P(PeftGoldenTest, Bfloat16StaysCloseToPeft) {
  constexpr double kBFloat16Tolerance = 6e-2;
  auto model = LoadModel(GetParam().model, torch::kBFloat16);
  auto adapter = LoadAdapter(*model, GetParam().adapter);
  auto golden = LoadGolden("cases/" + GetParam().model + "/" + GetParam().adapter + ".safetensors");
  auto relative = [](const torch::Tensor& got, const torch::Tensor& want) {
    return (got.to(torch::kFloat32) - want).norm().item<double>() / want.norm().item<double>();
  };
  for (int p = 0; p < 3; ++p) {
    const std::string key = "p" + std::to_string(p) + ".";
    auto run =
        RunBatch(*model, {TestSequence{ToVector(golden[key + "input_ids"]), adapter.get()}}, 4);
    EXPECT_LE(relative(run.prompt_logits[0], golden[key + "logits"]), kBFloat16Tolerance) << key;
    EXPECT_LE(relative(run.step_logits[0][0], golden[key + "gen_scores"][0]), kBFloat16Tolerance)
        << key;
  }
}

INSTANTIATE_TEST_SUITE_P(Adapters, PeftGoldenTest,
                         ::testing::Values(AdapterCase{"llama-tiny", "lora-qv-r8"},
                                           AdapterCase{"llama-tiny", "lora-all-r4-rslora"},
                                           AdapterCase{"llama-tiny", "dora-qkvo-r8"},
                                           AdapterCase{"llama-tiny", "lora-pattern"},
                                           AdapterCase{"llama-tiny", "dora-mlp-r4"},
                                           AdapterCase{"qwen2-tiny", "qwen-lora-r8"},
                                           AdapterCase{"qwen2-tiny", "qwen-dora-r4"}),
                         [](const auto& info) {
                           std::string name = info.param.adapter;
                           for (char& c : name)
                             c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return name;
                         });

TEST(PatternTest, RankAndAlphaPatternsGivePeftScaling) {
  auto config = PeftAdapterConfig::FromJson(
      ReadFile(DataPath("adapters/lora-pattern/adapter_config.json")), "lora-pattern");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->RankFor("model.layers.0.self_attn.o_proj"), 2);
  EXPECT_DOUBLE_EQ(config->ScaleFor("model.layers.0.self_attn.o_proj"), 16.0);
  EXPECT_EQ(config->RankFor("model.layers.1.self_attn.q_proj"), 8);
  EXPECT_DOUBLE_EQ(config->ScaleFor("model.layers.1.self_attn.q_proj"), 1.0);
}

TEST(MixedBatchTest, PeftMixedAdapterBatchMatches) {
  auto model = LoadModel("llama-tiny");
  std::map<std::string, std::shared_ptr<const AdapterWeights>> adapters;
  for (const char* name : {"lora-qv-r8", "lora-all-r4-rslora", "lora-pattern"}) {
    adapters[name] = LoadAdapter(*model, name);
  }
  const std::vector<std::string> rows = {"lora-qv-r8", "__base__", "lora-all-r4-rslora",
                                         "lora-pattern", "lora-qv-r8"};
  auto golden = LoadGolden("cases/mixed_batch.safetensors");
  std::vector<TestSequence> batch;
  for (size_t i = 0; i < rows.size(); ++i) {
    const AdapterWeights* a = rows[i] == "__base__" ? nullptr : adapters[rows[i]].get();
    batch.push_back({ToVector(golden["input_ids"][i]), a});
  }
  auto run = RunBatch(*model, batch, 12);
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_LE(MaxAbsDiff(run.prompt_logits[i], golden["logits"][i]), kLogitTolerance) << i;
    EXPECT_LE(MaxAbsDiff(run.step_logits[i], golden["gen_scores"][i]), kLogitTolerance) << i;
    EXPECT_EQ(run.tokens[i], ToVector(golden["gen_tokens"][i])) << i;
  }
}

TEST(MixedBatchTest, BaseTwoLorasAndDoraTogetherEqualEachAlone) {
  auto model = LoadModel("llama-tiny");
  auto lora1 = LoadAdapter(*model, "lora-qv-r8");
  auto lora2 = LoadAdapter(*model, "lora-pattern");
  auto dora = LoadAdapter(*model, "dora-qkvo-r8");
  auto dora_mlp = LoadAdapter(*model, "dora-mlp-r4");
  auto prompts = LoadGolden("cases/llama-tiny/base.safetensors");
  std::vector<TestSequence> batch = {
      {ToVector(prompts["p0.input_ids"]), nullptr},
      {ToVector(prompts["p1.input_ids"]), dora.get()},
      {ToVector(prompts["p2.input_ids"]), lora1.get()},
      {ToVector(prompts["p1.input_ids"]), lora2.get()},
      {ToVector(prompts["p0.input_ids"]), dora_mlp.get(), 0.5},
      {ToVector(prompts["p2.input_ids"]), dora.get(), 1.7},
  };
  auto together = RunBatch(*model, batch, 12);
  for (size_t i = 0; i < batch.size(); ++i) {
    auto alone = RunBatch(*model, {batch[i]}, 12);
    EXPECT_LE(MaxAbsDiff(together.prompt_logits[i], alone.prompt_logits[0]), kLogitTolerance) << i;
    EXPECT_LE(MaxAbsDiff(together.step_logits[i], alone.step_logits[0]), kLogitTolerance) << i;
    EXPECT_EQ(together.tokens[i], alone.tokens[0]) << i;
  }
}

// The request scale multiplies s: for DoRA the gain must follow ||W + c·sBA||, checked against the
// dense formula.
TEST(AdapterScaleTest, DoraGainAtOtherScalesMatchesDenseNorm) {
  auto model = LoadModel("llama-tiny");
  auto dora = LoadAdapter(*model, "dora-qkvo-r8");
  const ModuleAdapter* m = dora->module(ModuleIndex(1, kVProj));
  ASSERT_NE(m, nullptr);
  const torch::Tensor w = model->linear(1, kVProj).weight.to(torch::kFloat64);
  for (double c : {0.0, 0.5, 1.0, 2.5}) {
    const torch::Tensor dense =
        w + c * m->scale * torch::matmul(m->b_t.t().to(torch::kFloat64), m->a.to(torch::kFloat64));
    const torch::Tensor expected = m->magnitude / dense.norm(2, {1});
    EXPECT_LE(MaxAbsDiff(m->GainAt(c), expected), 1e-6) << c;
  }
  // Scale 0 turns a LoRA into the base model.
  auto lora = LoadAdapter(*model, "lora-qv-r8");
  auto prompts = LoadGolden("cases/llama-tiny/base.safetensors");
  auto zero = RunBatch(*model, {{ToVector(prompts["p0.input_ids"]), lora.get(), 0.0}}, 1);
  EXPECT_LE(MaxAbsDiff(zero.prompt_logits[0], prompts["p0.logits"]), kLogitTolerance);
}

TEST(BaseUntouchedTest, ServingManyAdaptersNeverWritesOrCopiesBaseWeights) {
  auto model = LoadModel("llama-tiny");
  std::vector<const void*> pointers;
  std::vector<torch::Tensor> snapshot;
  for (const LayerWeights& layer : model->weights().layers) {
    for (const LinearWeights& p : layer.proj) {
      pointers.push_back(p.weight.data_ptr());
      snapshot.push_back(p.weight.clone());
    }
  }
  std::vector<std::shared_ptr<const AdapterWeights>> adapters;
  for (const char* name :
       {"lora-qv-r8", "lora-all-r4-rslora", "dora-qkvo-r8", "lora-pattern", "dora-mlp-r4"}) {
    adapters.push_back(LoadAdapter(*model, name));
  }
  auto prompts = LoadGolden("cases/llama-tiny/base.safetensors");
  std::vector<TestSequence> batch;
  for (size_t i = 0; i < adapters.size(); ++i) {
    batch.push_back(
        {ToVector(prompts["p" + std::to_string(i % 3) + ".input_ids"]), adapters[i].get()});
  }
  RunBatch(*model, batch, 4);
  size_t k = 0;
  for (const LayerWeights& layer : model->weights().layers) {
    for (const LinearWeights& p : layer.proj) {
      EXPECT_EQ(p.weight.data_ptr(), pointers[k]);
      EXPECT_TRUE(torch::equal(p.weight, snapshot[k]));
      ++k;
    }
  }
  // No adapter tensor shares storage with a base weight.
  for (const auto& adapter : adapters) {
    for (int64_t i = 0; i < adapter->num_modules(); ++i) {
      const ModuleAdapter* m = adapter->module(i);
      if (!m) continue;
      for (const void* ptr : pointers) {
        EXPECT_NE(m->a.data_ptr(), ptr);
        EXPECT_NE(m->b_t.data_ptr(), ptr);
      }
    }
  }
}

// Writes `tensors` as a safetensors file (float32).
void WriteTensors(const std::string& path, const std::map<std::string, torch::Tensor>& tensors) {
  std::vector<TensorView> views;
  std::vector<torch::Tensor> keep;
  for (const auto& [name, t] : tensors) {
    keep.push_back(t.contiguous().to(torch::kFloat32));
    TensorView v;
    v.name = name;
    v.dtype = DType::kF32;
    v.shape = keep.back().sizes().vec();
    v.data = static_cast<const uint8_t*>(keep.back().data_ptr());
    v.nbytes = keep.back().numel() * 4;
    views.push_back(v);
  }
  std::ofstream(path, std::ios::binary) << SerializeSafetensors(views);
}

// A temporary folder of this process alone (tests of other processes, ctest -j or other
// checkouts, write files of the same names), removed when it exits.
std::string ProcessTempDir() {
  static const std::string dir = loramux::testing::MakeTempDir();
  return dir;
}

// Writes a seed-format adapter (LoRA, or DoRA over input columns) on q/v of every layer of
// `model` into `dir` and returns its store entry.
StoredAdapter WriteRandomSeedAdapter(const LlamaModel& model, bool dora, const std::string& dir,
                                     int seed) {
  torch::manual_seed(seed);
  std::map<std::string, torch::Tensor> t;
  const double alpha = 1.5;
  for (int64_t l = 0; l < model.config().num_layers; ++l) {
    for (Projection p : {kQProj, kVProj}) {
      const torch::Tensor w = model.linear(l, p).weight;
      const std::string path = ModulePath(l, p);
      const torch::Tensor a = torch::randn({w.size(1), 4}) * 0.1,
                          b = torch::randn({4, w.size(0)}) * 0.1;
      t[path + ".A"] = a;
      t[path + ".B"] = b;
      if (dora) {
        const torch::Tensor merged = w + alpha * torch::matmul(a, b).t();
        t[path + ".m"] = merged.norm(2, {0}, true) * (1 + 0.2 * torch::randn({1, w.size(1)}));
      }
    }
  }
  StoredAdapter stored;
  stored.name = dora ? "seed-dora" : "seed-lora";
  stored.format = AdapterFormat::kSeed;
  stored.config_json = "{\"alpha\": 1.5}";
  stored.weights_path = dir + "/" + stored.name + std::to_string(seed) + ".safetensors";
  WriteTensors(stored.weights_path, t);
  return stored;
}

std::shared_ptr<const AdapterWeights> LoadStored(const StoredAdapter& stored,
                                                 const LlamaModel& model) {
  auto weights = AdapterWeights::Load(stored, model, AdapterLimits{});
  TORCH_CHECK(weights.ok(), std::string(weights.status().message()));
  return *weights;
}

std::shared_ptr<const AdapterWeights> RandomSeedAdapter(const LlamaModel& model, bool dora,
                                                        const std::string& dir, int seed) {
  return LoadStored(WriteRandomSeedAdapter(model, dora, dir, seed), model);
}

TEST(MixedBatchTest, SeedPeftLoraDoraAndBaseTogetherEqualEachAlone) {
  auto model = LoadModel("llama-tiny");
  const std::string dir = ProcessTempDir();
  auto seed_lora = RandomSeedAdapter(*model, false, dir, 1);
  auto seed_dora = RandomSeedAdapter(*model, true, dir, 2);
  auto peft_dora = LoadAdapter(*model, "dora-mlp-r4");
  auto prompts = LoadGolden("cases/llama-tiny/base.safetensors");
  std::vector<TestSequence> batch = {
      {ToVector(prompts["p0.input_ids"]), seed_dora.get()},
      {ToVector(prompts["p1.input_ids"]), nullptr},
      {ToVector(prompts["p2.input_ids"]), seed_lora.get()},
      {ToVector(prompts["p1.input_ids"]), peft_dora.get()},
      {ToVector(prompts["p2.input_ids"]), seed_dora.get(), 0.7},
  };
  auto together = RunBatch(*model, batch, 8);
  for (size_t i = 0; i < batch.size(); ++i) {
    auto alone = RunBatch(*model, {batch[i]}, 8);
    EXPECT_LE(MaxAbsDiff(together.prompt_logits[i], alone.prompt_logits[0]), kLogitTolerance) << i;
    EXPECT_LE(MaxAbsDiff(together.step_logits[i], alone.step_logits[0]), kLogitTolerance) << i;
    EXPECT_EQ(together.tokens[i], alone.tokens[0]) << i;
  }
  // And a seed adapter really changes the output.
  auto base = RunBatch(*model, {{ToVector(prompts["p0.input_ids"]), nullptr}}, 1);
  EXPECT_GT(MaxAbsDiff(together.prompt_logits[0], base.prompt_logits[0]), 1e-2);
}

// Bytes the process holds from the heap: malloc'd chunks plus mmap'd large blocks, which is where
// LibTorch's CPU allocator and small factor arenas get memory. Unlike RSS it does not move with
// transparent huge pages, mapped files or lazily faulted library pages, so it counts exactly what
// the code under test allocated (a fresh machine once grew RSS 18.8 MB against a 17.4 MB bound).
int64_t HeapBytesInUse() {
#if defined(__SANITIZE_ADDRESS__)
  // AddressSanitizer replaces malloc (glibc's mallinfo2 then reads zeros); its own allocator
  // counts every live allocation of the process, LibTorch's included.
  return static_cast<int64_t>(__sanitizer_get_current_allocated_bytes());
#else
  const struct mallinfo2 info = ::mallinfo2();
  return static_cast<int64_t>(info.uordblks + info.hblkhd);
#endif
}

// Loading many adapters grows the heap by about their own bytes, never by a base copy.
TEST(BaseUntouchedTest, MemoryGrowsByAdapterBytesNotBaseBytes) {
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.vocab_size = 2000;
  c.hidden_size = 512;
  c.intermediate_size = 1408;
  c.num_layers = 4;
  c.num_heads = 8;
  c.num_kv_heads = 8;
  c.head_dim = 64;
  c.max_position_embeddings = 64;
  auto model = LlamaModel::Random(c, torch::kCPU, torch::kFloat32, 3);
  const std::string dir = ProcessTempDir();
  std::vector<StoredAdapter> stored;  // written before measuring: only the loads are measured
  for (int i = 0; i < 12; ++i)
    stored.push_back(WriteRandomSeedAdapter(*model, i % 2 == 1, dir, 10 + i));
  LoadStored(stored[1], *model);  // one-time allocations (thread pools, BLAS buffers) happen here
  const int64_t before = HeapBytesInUse();
  std::vector<std::shared_ptr<const AdapterWeights>> adapters;
  int64_t adapter_bytes = 0;
  for (const StoredAdapter& s : stored) {
    adapters.push_back(LoadStored(s, *model));
    adapter_bytes += adapters.back()->bytes();
  }
  const int64_t growth = HeapBytesInUse() - before;
  EXPECT_GT(model->weight_bytes(), 10 * adapter_bytes);  // the test means something
  EXPECT_GT(growth, adapter_bytes / 2);  // and the measure sees the adapters' arenas
  EXPECT_LT(growth, adapter_bytes + model->weight_bytes() / 4)
      << "grew " << growth << " bytes for " << adapter_bytes << " adapter bytes; base is "
      << model->weight_bytes();
}

// The seed layers (A [in,r], B [r,out], alpha; DoRA over input columns) served through a model
// whose layer-0 q_proj is the seed's nn.Linear(48, 40).
class SeedLayerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    golden_ = LoadGolden("seed/seed_layers.safetensors");
    dir_ = loramux::testing::MakeTempDir();
    std::ofstream(dir_ + "/config.json") << R"({"architectures": ["LlamaForCausalLM"],
      "vocab_size": 16, "hidden_size": 48, "intermediate_size": 32, "num_hidden_layers": 1,
      "num_attention_heads": 5, "num_key_value_heads": 5, "head_dim": 8,
      "attention_bias": true, "max_position_embeddings": 32})";
    torch::manual_seed(3);
    std::map<std::string, torch::Tensor> w = {
        {"model.embed_tokens.weight", torch::randn({16, 48})},
        {"lm_head.weight", torch::randn({16, 48})},
        {"model.norm.weight", torch::ones({48})},
        {"model.layers.0.input_layernorm.weight", torch::ones({48})},
        {"model.layers.0.post_attention_layernorm.weight", torch::ones({48})},
        {"model.layers.0.self_attn.q_proj.weight", golden_["linear.weight"]},
        {"model.layers.0.self_attn.q_proj.bias", golden_["linear.bias"]},
        {"model.layers.0.self_attn.k_proj.weight", torch::randn({40, 48})},
        {"model.layers.0.self_attn.k_proj.bias", torch::randn({40})},
        {"model.layers.0.self_attn.v_proj.weight", torch::randn({40, 48})},
        {"model.layers.0.self_attn.v_proj.bias", torch::randn({40})},
        {"model.layers.0.self_attn.o_proj.weight", torch::randn({48, 40})},
        {"model.layers.0.self_attn.o_proj.bias", torch::randn({48})},
        {"model.layers.0.mlp.gate_proj.weight", torch::randn({32, 48})},
        {"model.layers.0.mlp.up_proj.weight", torch::randn({32, 48})},
        {"model.layers.0.mlp.down_proj.weight", torch::randn({48, 32})}};
    WriteTensors(dir_ + "/model.safetensors", w);
  }

  torch::Tensor Serve(bool dora) {
    auto model = LlamaModel::Load(dir_, torch::kCPU, torch::kFloat32);
    EXPECT_TRUE(model.ok()) << model.status();
    std::map<std::string, torch::Tensor> t = {{"model.layers.0.self_attn.q_proj.A", golden_["A"]},
                                              {"model.layers.0.self_attn.q_proj.B", golden_["B"]}};
    if (dora) t["model.layers.0.self_attn.q_proj.m"] = golden_["m"];
    StoredAdapter stored;
    stored.name = dora ? "seed-dora" : "seed-lora";
    stored.format = AdapterFormat::kSeed;
    stored.config_json = R"({"alpha": 2.0})";
    stored.weights_path = dir_ + "/" + stored.name + ".safetensors";
    WriteTensors(stored.weights_path, t);
    auto adapter = AdapterWeights::Load(stored, **model, AdapterLimits{});
    EXPECT_TRUE(adapter.ok()) << adapter.status();
    const torch::Tensor x = golden_["x"];
    return AdaptedLinear(x, (*model)->linear(0, kQProj), ModuleIndex(0, kQProj),
                         {{adapter->get(), 1.0, 0, x.size(0)}});
  }

  std::map<std::string, torch::Tensor> golden_;
  std::string dir_;
};

TEST_F(SeedLayerTest, SeedLoraMatchesSeedCode) {
  EXPECT_LE(MaxAbsDiff(Serve(false), golden_["out_lora"]), kModuleTolerance);
}

TEST_F(SeedLayerTest, SeedDoraMatchesSeedCode) {
  EXPECT_LE(MaxAbsDiff(Serve(true), golden_["out_dora"]), kModuleTolerance);
}

}  // namespace
}  // namespace loramux
