// Adapter planning without LibTorch: real PEFT adapter files (tests/data/adapters) and hand-made
// seed files planned onto a module table with llama-tiny's shapes — which modules, kinds, ranks
// and scales, and every refusal with its code.
#include "adapters/adapter_plan.h"

#include <array>
#include <memory>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/container/flat_hash_map.h"
#include "tests/status_matchers.h"
#include "tests/test_files.h"

namespace loramux {
namespace {

using ::loramux::testing::ReadFile;
using ::testing::HasSubstr;

// llama-tiny's modules: 2 layers, hidden 64, KV 32, intermediate 176.
class TinyTable final : public ModuleTable {
 public:
  TinyTable() {
    for (int64_t layer = 0; layer < 2; ++layer) {
      for (int64_t p = 0; p < kNumProjections; ++p) {
        paths_.push_back(ModulePath(layer, static_cast<Projection>(p)));
        index_[paths_.back()] = ModuleIndex(layer, static_cast<Projection>(p));
      }
    }
  }
  int64_t num_layers() const override { return 2; }
  const std::vector<std::string>& module_paths() const override { return paths_; }
  int64_t ModuleIndexOf(const std::string& path) const override {
    auto it = index_.find(path);
    return it == index_.end() ? -1 : it->second;
  }
  std::array<int64_t, 2> module_shape(int64_t index) const override {
    static constexpr std::array<int64_t, 2> kShapes[kNumProjections] = {
        {64, 64}, {32, 64}, {32, 64}, {64, 64}, {176, 64}, {176, 64}, {64, 176}};
    return kShapes[index % kNumProjections];
  }

 private:
  std::vector<std::string> paths_;
  absl::flat_hash_map<std::string, int64_t> index_;
};

struct Files {
  std::string config;
  std::unique_ptr<SafetensorsFile> weights;
};

Files Peft(const std::string& name) {
  const std::string dir = std::string(LORAMUX_TEST_DATA) + "/adapters/" + name;
  return {ReadFile(dir + "/adapter_config.json"),
          *SafetensorsFile::FromBytes(ReadFile(dir + "/adapter_model.safetensors"), name)};
}

// A seed file with float32 zeros of the given shapes.
std::unique_ptr<SafetensorsFile> SeedFile(
    const std::vector<std::pair<std::string, std::vector<int64_t>>>& tensors) {
  std::vector<std::vector<float>> data;
  std::vector<TensorView> views;
  data.reserve(tensors.size());
  for (const auto& [name, shape] : tensors) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    data.emplace_back(static_cast<size_t>(n), 0.0f);
    TensorView v;
    v.name = name;
    v.shape = shape;
    v.data = reinterpret_cast<const uint8_t*>(data.back().data());
    v.nbytes = static_cast<size_t>(n) * 4;
    views.push_back(v);
  }
  return *SafetensorsFile::FromBytes(SerializeSafetensors(views), "seed");
}

class AdapterPlanTest : public ::testing::Test {
 protected:
  absl::StatusOr<AdapterPlan> Plan(const std::string& config, const SafetensorsFile& file,
                                   AdapterFormat format = AdapterFormat::kPeft) {
    return PlanAdapter("t", format, config, file, table_, limits_);
  }
  TinyTable table_;
  AdapterLimits limits_;
};

TEST_F(AdapterPlanTest, PeftLoraTargetsItsModulesInTheBasesOrder) {
  const Files f = Peft("lora-qv-r8");
  const absl::StatusOr<AdapterPlan> plan = Plan(f.config, *f.weights);
  ASSERT_THAT(plan, IsOk());
  ASSERT_EQ(plan->size(), 4u);  // q and v of 2 layers
  const int64_t expected[] = {ModuleIndex(0, kQProj), ModuleIndex(0, kVProj),
                              ModuleIndex(1, kQProj), ModuleIndex(1, kVProj)};
  for (size_t i = 0; i < plan->size(); ++i) {
    const PlannedModule& m = (*plan)[i];
    EXPECT_EQ(m.index, expected[i]);
    EXPECT_EQ(m.kind, FactorKind::kLora);
    EXPECT_EQ(m.rank, 8);
    EXPECT_DOUBLE_EQ(m.scale, 16.0 / 8);  // lora_alpha / r
    EXPECT_EQ(m.in, 64);
    EXPECT_FALSE(m.seed_layout);
    EXPECT_EQ(m.a->shape, (std::vector<int64_t>{8, 64}));
  }
  EXPECT_EQ((*plan)[1].out, 32);  // v_proj
}

TEST_F(AdapterPlanTest, PeftDoraAndRsloraAndPatterns) {
  const Files dora = Peft("dora-qkvo-r8");
  const absl::StatusOr<AdapterPlan> plan = Plan(dora.config, *dora.weights);
  ASSERT_THAT(plan, IsOk());
  for (const PlannedModule& m : *plan) {
    EXPECT_EQ(m.kind, FactorKind::kDoraRow);
    EXPECT_NE(m.m, nullptr);
    EXPECT_EQ(m.gain_size(), m.out);
  }
  const Files rslora = Peft("lora-all-r4-rslora");
  ASSERT_THAT(Plan(rslora.config, *rslora.weights), IsOk());
  EXPECT_EQ(Plan(rslora.config, *rslora.weights)->size(), 14u);  // all-linear: 7 x 2 layers
  const Files pattern = Peft("lora-pattern");
  ASSERT_THAT(Plan(pattern.config, *pattern.weights), IsOk());
}

TEST_F(AdapterPlanTest, RefusalsNameTheProblem) {
  const Files f = Peft("lora-qv-r8");
  limits_.max_rank = 4;
  EXPECT_THAT(Plan(f.config, *f.weights),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("rank 8")));
  limits_.max_rank = 256;
  // The config targets k_proj too, but the weights lack it.
  std::string more = f.config;
  more.replace(more.find("\"q_proj\""), 8, "\"q_proj\", \"k_proj\"");
  EXPECT_THAT(Plan(more, *f.weights),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("k_proj")));
  // The weights hold v_proj, which the config no longer targets.
  std::string fewer = f.config;
  fewer.replace(fewer.find("\"v_proj\""), 8, "\"o_proj\"");
  EXPECT_THAT(Plan(fewer, *f.weights), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Plan("{\"peft_type\": \"LORA\"", *f.weights),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // A module the base does not have (layer 9 of a 2-layer base).
  EXPECT_THAT(Plan(R"({"alpha": 1.0})",
                   *SeedFile({{"model.layers.9.self_attn.q_proj.A", {64, 4}},
                              {"model.layers.9.self_attn.q_proj.B", {4, 64}}}),
                   AdapterFormat::kSeed),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("does not exist")));
}

TEST_F(AdapterPlanTest, SeedLayoutAndItsDora) {
  const std::string q = "model.layers.0.self_attn.q_proj";
  const auto file = SeedFile({{q + ".A", {64, 4}}, {q + ".B", {4, 64}}, {q + ".m", {1, 64}}});
  const absl::StatusOr<AdapterPlan> plan = Plan(R"({"alpha": 2.0})", *file, AdapterFormat::kSeed);
  ASSERT_THAT(plan, IsOk());
  ASSERT_EQ(plan->size(), 1u);
  EXPECT_EQ((*plan)[0].kind, FactorKind::kDoraCol);
  EXPECT_TRUE((*plan)[0].seed_layout);
  EXPECT_DOUBLE_EQ((*plan)[0].scale, 2.0);
  EXPECT_EQ((*plan)[0].gain_size(), 64);
  EXPECT_THAT(Plan(R"({"alpha": 2.0})", *SeedFile({{q + ".A", {64, 4}}, {q + ".B", {4, 32}}}),
                   AdapterFormat::kSeed),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("shape")));
  EXPECT_THAT(Plan(R"({"alpha": 2.0})", *SeedFile({{q + ".A", {64, 4}}}), AdapterFormat::kSeed),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(".B")));
  EXPECT_THAT(Plan(R"({"alpha": 2.0})", *SeedFile({{q + ".lora", {64, 4}}}), AdapterFormat::kSeed),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("named")));
}

}  // namespace
}  // namespace loramux
