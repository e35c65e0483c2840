// Adapter formats and validation against the base: every bad adapter gets the right code and a
// message naming what is wrong; every PEFT config feature changes what is served as PEFT would.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include <gtest/gtest.h>
#include <unistd.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "adapters/adapter_config.h"
#include "adapters/adapter_limits.h"
#include "adapters/adapter_weights.h"
#include "adapters/factor_arena.h"
#include "formats/safetensors.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace loramux {
namespace {

namespace fs = std::filesystem;
using ::loramux::testing::DataPath;
using ::loramux::testing::LoadGolden;
using ::loramux::testing::MaxAbsDiff;
using ::loramux::testing::ReadFile;
using ::loramux::testing::RunBatch;
using ::loramux::testing::ToVector;

class AdapterValidationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = ::loramux::testing::LoadModel("llama-tiny");
    dir_ = ::testing::TempDir() + "/adapter_validation_" + std::to_string(::getpid());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Loads adapter `source` from tests/data with its config edited by `edit_config` and its
  // tensors by `edit_tensors` (which may rename, reshape, drop or corrupt them).
  absl::StatusOr<std::shared_ptr<const AdapterWeights>> LoadEdited(
      const std::string& source, std::function<void(nlohmann::json&)> edit_config,
      std::function<void(std::vector<TensorView>&, std::string& data)> edit_tensors = nullptr,
      AdapterLimits limits = {}) {
    nlohmann::json config =
        nlohmann::json::parse(ReadFile(DataPath("adapters/" + source + "/adapter_config.json")));
    if (edit_config) edit_config(config);
    std::string bytes = ReadFile(DataPath("adapters/" + source + "/adapter_model.safetensors"));
    auto file = SafetensorsFile::FromBytes(bytes, source).value();
    std::vector<TensorView> views = file->tensors();
    std::string data;  // scratch storage tests may point views into
    data.reserve(1 << 20);
    if (edit_tensors) edit_tensors(views, data);
    StoredAdapter stored;
    stored.name = source;
    stored.format = AdapterFormat::kPeft;
    stored.config_json = config.dump();
    stored.weights_path = dir_ + "/" + source + ".safetensors";
    std::ofstream(stored.weights_path, std::ios::binary) << SerializeSafetensors(views);
    return AdapterWeights::Load(stored, *model_, limits);
  }

  // Greedy logits of prompt 0 through `adapter` match the golden file of `golden_name`.
  void ExpectServesLike(const AdapterWeights& adapter, const std::string& golden_name) {
    auto golden = LoadGolden("cases/llama-tiny/" + golden_name + ".safetensors");
    const torch::Tensor ids = golden["p0.input_ids"];
    auto run = RunBatch(
        *model_,
        {{std::vector<int64_t>(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel()),
          &adapter}},
        1);
    EXPECT_LE(MaxAbsDiff(run.prompt_logits[0], golden["p0.logits"]), 1e-4);
  }

  static void ExpectError(const absl::Status& s, absl::StatusCode code, const std::string& needle) {
    EXPECT_EQ(s.code(), code) << s;
    EXPECT_NE(s.message().find(needle), absl::string_view::npos)
        << "missing \"" << needle << "\" in " << s;
  }

  std::unique_ptr<LlamaModel> model_;
  std::string dir_;
};

TEST_F(AdapterValidationTest, ShapeMismatchNamesTensorFoundAndExpected) {
  auto r = LoadEdited("lora-qv-r8", nullptr, [](std::vector<TensorView>& views, std::string&) {
    for (TensorView& v : views) {
      if (v.name == "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight")
        v.shape = {16, 32};
    }
  });
  ExpectError(r.status(), absl::StatusCode::kFailedPrecondition,
              "lora_A for model.layers.1.self_attn.q_proj has shape [16,32], base expects [8,64]");
}

TEST_F(AdapterValidationTest, NonFiniteWeightsAreInvalid) {
  auto r = LoadEdited("lora-qv-r8", nullptr, [](std::vector<TensorView>& views, std::string& data) {
    TensorView& v = views[0];
    data.assign(reinterpret_cast<const char*>(v.data), v.nbytes);
    const float nan = std::nanf("");
    std::memcpy(data.data() + 12, &nan, 4);
    v.data = reinterpret_cast<const uint8_t*>(data.data());
  });
  ExpectError(r.status(), absl::StatusCode::kInvalidArgument, "NaN or infinite");
}

// Rewrites every tensor (or only lora_A and lora_B: `factors_only`) as `dtype`, rounding to
// nearest even as LibTorch does, into `data`.
std::function<void(std::vector<TensorView>&, std::string&)> StoreAs(DType dtype,
                                                                    torch::ScalarType torch_dtype,
                                                                    bool factors_only = false) {
  return [=](std::vector<TensorView>& views, std::string& data) {
    size_t offset = 0;
    for (TensorView& v : views) {
      if (factors_only && v.name.find("magnitude") != std::string::npos) continue;
      const torch::Tensor narrow =
          torch::from_blob(const_cast<uint8_t*>(v.data), {static_cast<int64_t>(v.nbytes / 4)})
              .to(torch_dtype);
      const size_t bytes = narrow.numel() * narrow.element_size();
      EXPECT_LE(offset + bytes, data.capacity());  // views point into data: no reallocation
      data.append(static_cast<const char*>(narrow.data_ptr()), bytes);
      v.data = reinterpret_cast<const uint8_t*>(data.data()) + offset;
      v.dtype = dtype;
      v.nbytes = bytes;
      offset += bytes;
    }
  };
}

TEST_F(AdapterValidationTest, SixteenBitFilesStaySixteenBitAndServeAsTheirWidening) {
  {  // Reused memory may hold anything: leave infinities behind in freed blocks and pooled arenas.
    std::vector<std::unique_ptr<FactorArena>> arenas;
    for (size_t floats = 256; floats <= (size_t{1} << 20); floats *= 2) {
      arenas.push_back(std::make_unique<FactorArena>(floats));
      std::fill_n(arenas.back()->data(), floats, std::numeric_limits<float>::infinity());
    }
  }
  const std::string prompt = "p0.";
  auto golden = LoadGolden("cases/llama-tiny/dora-qkvo-r8.safetensors");
  auto logits = [&](const AdapterWeights& adapter) {
    auto run = RunBatch(*model_, {{ToVector(golden[prompt + "input_ids"]), &adapter}}, 3);
    return torch::cat({run.prompt_logits[0], run.step_logits[0]});
  };
  for (auto [dtype, torch_dtype] :
       {std::pair{DType::kBF16, torch::kBFloat16}, std::pair{DType::kF16, torch::kFloat16}}) {
    auto kept = LoadEdited("dora-qkvo-r8", nullptr, StoreAs(dtype, torch_dtype));
    auto widened = LoadEdited("dora-qkvo-r8", nullptr, StoreAs(dtype, torch_dtype),
                              AdapterLimits{256, FactorPrecision::kFloat32});
    ASSERT_TRUE(kept.ok() && widened.ok()) << kept.status() << widened.status();
    const ModuleAdapter* m = (*kept)->module(ModuleIndex(0, kQProj));
    EXPECT_EQ(m->a.scalar_type(), torch_dtype);
    EXPECT_EQ(m->b_t.scalar_type(), torch_dtype);
    EXPECT_EQ(m->gain.scalar_type(), torch::kFloat32);
    EXPECT_EQ((*widened)->module(ModuleIndex(0, kQProj))->a.scalar_type(), torch::kFloat32);
    EXPECT_LT((*kept)->bytes(), (*widened)->bytes());
    // Bit for bit the same logits, prefill and decode, and PEFT's within 16-bit rounding.
    const torch::Tensor got = logits(**kept);
    EXPECT_TRUE(torch::equal(got, logits(**widened))) << c10::toString(torch_dtype);
    const torch::Tensor want = golden[prompt + "logits"];
    const torch::Tensor prefill = got.narrow(0, 0, want.size(0));
    EXPECT_LE((prefill - want).norm().item<double>() / want.norm().item<double>(), 2e-2);
  }
  // Narrowing float32 files is opt-in and rounds as the file would have been rounded.
  auto narrowed =
      LoadEdited("dora-qkvo-r8", nullptr, nullptr, AdapterLimits{256, FactorPrecision::kBFloat16});
  auto stored_bf16 = LoadEdited("dora-qkvo-r8", nullptr,
                                StoreAs(DType::kBF16, torch::kBFloat16, /*factors_only=*/true));
  ASSERT_TRUE(narrowed.ok() && stored_bf16.ok());
  EXPECT_EQ((*narrowed)->module(ModuleIndex(0, kQProj))->a.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(logits(**narrowed), logits(**stored_bf16)));
  // A float32 file stays float32 by default.
  auto plain = LoadEdited("dora-qkvo-r8", nullptr, nullptr);
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ((*plain)->module(ModuleIndex(0, kQProj))->a.scalar_type(), torch::kFloat32);
}

TEST_F(AdapterValidationTest, FactorsBeyondFloat16RangeAreRefusedByAFloat16Server) {
  auto big = [](std::vector<TensorView>& views, std::string& data) {
    TensorView& v = views[0];
    data.assign(reinterpret_cast<const char*>(v.data), v.nbytes);
    const float value = 1e5f;  // finite in float32, beyond float16's 65504
    std::memcpy(data.data() + 12, &value, 4);
    v.data = reinterpret_cast<const uint8_t*>(data.data());
  };
  ASSERT_TRUE(LoadEdited("lora-qv-r8", nullptr, big).ok());  // float32 serves it
  model_ = ::loramux::testing::LoadModel("llama-tiny", torch::kFloat16);
  ExpectError(LoadEdited("lora-qv-r8", nullptr, big).status(),
              absl::StatusCode::kFailedPrecondition, "float16's range");
  EXPECT_TRUE(LoadEdited("lora-qv-r8", nullptr, nullptr).ok());
}

TEST_F(AdapterValidationTest, NonFiniteValuesAreFoundInEveryFactor) {
  // lora_B is transposed while copied and the DoRA magnitude is copied apart: both are checked.
  for (const auto& [source, suffix] : std::vector<std::pair<std::string, std::string>>{
           {"lora-qv-r8", "layers.1.self_attn.v_proj.lora_B.weight"},
           {"dora-qkvo-r8", "layers.0.self_attn.o_proj.lora_magnitude_vector"}}) {
    std::string name;
    auto r = LoadEdited(source, nullptr, [&](std::vector<TensorView>& views, std::string& data) {
      for (TensorView& v : views) {
        if (!absl::EndsWith(v.name, suffix)) continue;
        name = v.name;
        data.assign(reinterpret_cast<const char*>(v.data), v.nbytes);
        const float inf = std::numeric_limits<float>::infinity();
        std::memcpy(data.data() + data.size() - 4, &inf, 4);
        v.data = reinterpret_cast<const uint8_t*>(data.data());
      }
    });
    ASSERT_FALSE(name.empty()) << source << " has no tensor ending " << suffix;
    ExpectError(r.status(), absl::StatusCode::kInvalidArgument,
                "\"" + name + "\" holds NaN or infinite");
  }
}

TEST_F(AdapterValidationTest, IntegerFactorsAreInvalid) {
  auto r = LoadEdited("lora-qv-r8", nullptr, [](std::vector<TensorView>& views, std::string&) {
    views[0].dtype = DType::kI32;  // same bytes per element, so the file stays well-formed
  });
  ExpectError(r.status(), absl::StatusCode::kInvalidArgument, "expected a floating point type");
}

TEST_F(AdapterValidationTest, ModuleMissingFromBaseIsFailedPrecondition) {
  auto r = LoadEdited("lora-qv-r8", nullptr, [](std::vector<TensorView>& views, std::string&) {
    views[0].name = "base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight";
  });
  ExpectError(r.status(), absl::StatusCode::kFailedPrecondition, "model.layers.7.self_attn.q_proj");
}

TEST_F(AdapterValidationTest, RankAboveServerMaximumIsFailedPrecondition) {
  auto r = LoadEdited("lora-qv-r8", nullptr, nullptr, AdapterLimits{4});
  ExpectError(r.status(), absl::StatusCode::kFailedPrecondition, "exceeds the server's maximum 4");
}

TEST_F(AdapterValidationTest, UnsupportedPeftFeaturesAreRefusedByName) {
  ExpectError(
      LoadEdited("lora-qv-r8", [](auto& c) { c["modules_to_save"] = {"lm_head"}; }).status(),
      absl::StatusCode::kUnimplemented, "modules_to_save");
  ExpectError(LoadEdited("lora-qv-r8", [](auto& c) { c["peft_type"] = "IA3"; }).status(),
              absl::StatusCode::kUnimplemented, "IA3");
  ExpectError(LoadEdited("lora-qv-r8", [](auto& c) { c["lora_bias"] = true; }).status(),
              absl::StatusCode::kUnimplemented, "lora_bias");
  ExpectError(
      LoadEdited("lora-qv-r8", [](auto& c) { c["target_parameters"] = {"experts.gate_up"}; })
          .status(),
      absl::StatusCode::kUnimplemented, "target_parameters");
  ExpectError(LoadEdited("lora-qv-r8",
                         [](auto& c) {
                           c["trainable_token_indices"] = {1, 2};
                         })
                  .status(),
              absl::StatusCode::kUnimplemented, "trainable_token_indices");
  ExpectError(
      LoadEdited("lora-qv-r8", [](auto& c) { c["alora_invocation_tokens"] = {7}; }).status(),
      absl::StatusCode::kUnimplemented, "alora_invocation_tokens");
  ExpectError(LoadEdited("lora-qv-r8", [](auto& c) { c["bias"] = "lora_only"; }).status(),
              absl::StatusCode::kUnimplemented, "bias");
  ExpectError(LoadEdited("lora-qv-r8", nullptr,
                         [](std::vector<TensorView>& views, std::string&) {
                           views[0].name = "base_model.model.model.embed_tokens.lora_embedding_A";
                         })
                  .status(),
              absl::StatusCode::kUnimplemented, "embedding");
}

TEST_F(AdapterValidationTest, PickleCheckpointsAreRefusedByName) {
  for (const std::string magic :
       {std::string("PK\x03\x04rest", 8), std::string("\x80\x02}q\x00", 5)}) {
    StoredAdapter stored;
    stored.name = "bin";
    stored.config_json = ReadFile(DataPath("adapters/lora-qv-r8/adapter_config.json"));
    stored.weights_path = dir_ + "/adapter_model.bin";
    std::ofstream(stored.weights_path, std::ios::binary) << magic;
    ExpectError(AdapterWeights::Load(stored, *model_, AdapterLimits{}).status(),
                absl::StatusCode::kUnimplemented, "safe_serialization=True");
  }
}

TEST_F(AdapterValidationTest, IncompleteOrInconsistentWeightsAreInvalid) {
  ExpectError(
      LoadEdited("lora-qv-r8", nullptr,
                 [](std::vector<TensorView>& views, std::string&) { views.erase(views.begin()); })
          .status(),
      absl::StatusCode::kInvalidArgument, "lack");
  ExpectError(LoadEdited("dora-qkvo-r8", nullptr,
                         [](std::vector<TensorView>& views, std::string&) {
                           views.erase(std::remove_if(views.begin(), views.end(),
                                                      [](const TensorView& v) {
                                                        return v.name.find("magnitude") !=
                                                               std::string::npos;
                                                      }),
                                       views.end());
                         })
                  .status(),
              absl::StatusCode::kInvalidArgument, "lora_magnitude_vector");
  ExpectError(LoadEdited("lora-qv-r8", [](auto& c) { c["target_modules"] = {"q_proj"}; }).status(),
              absl::StatusCode::kInvalidArgument, "does not target");
}

TEST_F(AdapterValidationTest, MagnitudeWithWeightSuffixIsAccepted) {
  auto r = LoadEdited("dora-qkvo-r8", nullptr, [](std::vector<TensorView>& views, std::string&) {
    for (TensorView& v : views) {
      if (v.name.find("lora_magnitude_vector") != std::string::npos) v.name += ".weight";
    }
  });
  ASSERT_TRUE(r.ok()) << r.status();
  ExpectServesLike(**r, "dora-qkvo-r8");
}

TEST_F(AdapterValidationTest, TargetModulesAsRegexAndAllLinearMatchLists) {
  auto regex = LoadEdited("lora-qv-r8", [](auto& c) {
    c["target_modules"] = R"(model\.layers\.\d+\.self_attn\.(q|v)_proj)";
  });
  ASSERT_TRUE(regex.ok()) << regex.status();
  ExpectServesLike(**regex, "lora-qv-r8");
  auto all = LoadEdited("lora-all-r4-rslora", [](auto& c) { c["target_modules"] = "all-linear"; });
  ASSERT_TRUE(all.ok()) << all.status();
  ExpectServesLike(**all, "lora-all-r4-rslora");
  auto fan = LoadEdited("lora-qv-r8", [](auto& c) { c["fan_in_fan_out"] = true; });
  ASSERT_TRUE(fan.ok()) << fan.status();  // PEFT resets it for nn.Linear targets
  ExpectServesLike(**fan, "lora-qv-r8");
}

TEST_F(AdapterValidationTest, LayersToTransformAndExcludeModulesRestrictTargets) {
  auto drop_layer1 = [](std::vector<TensorView>& views, std::string&) {
    views.erase(std::remove_if(views.begin(), views.end(),
                               [](const TensorView& v) {
                                 return v.name.find("layers.1.") != std::string::npos;
                               }),
                views.end());
  };
  // Layer 1 factors present but layer 1 not targeted: refused.
  ExpectError(LoadEdited("lora-qv-r8", [](auto& c) { c["layers_to_transform"] = {0}; }).status(),
              absl::StatusCode::kInvalidArgument, "does not target");
  auto layer0 = LoadEdited(
      "lora-qv-r8", [](auto& c) { c["layers_to_transform"] = {0}; }, drop_layer1);
  ASSERT_TRUE(layer0.ok()) << layer0.status();
  EXPECT_NE((*layer0)->module(ModuleIndex(0, kQProj)), nullptr);
  EXPECT_EQ((*layer0)->module(ModuleIndex(1, kQProj)), nullptr);
  auto excluded = LoadEdited(
      "lora-qv-r8",
      [](auto& c) {
        c["exclude_modules"] = {"model.layers.1.self_attn.q_proj",
                                "model.layers.1.self_attn.v_proj"};
      },
      drop_layer1);
  ASSERT_TRUE(excluded.ok()) << excluded.status();
  EXPECT_EQ((*excluded)->module(ModuleIndex(1, kVProj)), nullptr);
}

TEST(PeftTargetsTest, LayerIndexFollowsPeftsDefaultPattern) {
  // PEFT reads the layer from ^.*\.[^.]*\.(\d+)\. : the last numeric component with a dot after it.
  auto config = PeftAdapterConfig::FromJson(
      R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "proj"],
          "layers_to_transform": [1, 12]})",
      "test");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->Targets("model.layers.1.self_attn.q_proj"));
  EXPECT_TRUE(config->Targets("model.layers.12.self_attn.q_proj"));
  EXPECT_FALSE(config->Targets("model.layers.0.self_attn.q_proj"));
  EXPECT_FALSE(config->Targets("model.layers.11.self_attn.q_proj"));
  EXPECT_FALSE(config->Targets("model.layers.121.self_attn.q_proj"));
  EXPECT_TRUE(config->Targets("model.layers.3.blocks.1.proj"));  // the last index counts
  EXPECT_FALSE(config->Targets("model.layers.1.blocks.3.proj"));
  EXPECT_FALSE(config->Targets("1.q_proj"));  // needs a dot two parts before
  EXPECT_FALSE(config->Targets("x.1.q_proj"));
  EXPECT_TRUE(config->Targets("x.y.1.q_proj"));
  EXPECT_FALSE(config->Targets("model.layers.1a.q_proj"));  // digits only
  EXPECT_FALSE(config->Targets("model.layers.q_proj"));     // no index: not targeted
}

TEST(PeftTargetsTest, ModuleNamedInFullIgnoresLayersToTransform) {
  // PEFT applies layers_to_transform to suffix matches only: a full path in target_modules is
  // targeted whatever its layer.
  auto config = PeftAdapterConfig::FromJson(
      R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "layers_to_transform": [1],
          "target_modules": ["model.layers.0.self_attn.q_proj", "v_proj"]})",
      "test");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->Targets("model.layers.0.self_attn.q_proj"));
  EXPECT_FALSE(config->Targets("model.layers.0.self_attn.v_proj"));
  EXPECT_TRUE(config->Targets("model.layers.1.self_attn.v_proj"));
  EXPECT_FALSE(config->Targets("model.layers.1.self_attn.q_proj"));
}

TEST(PeftTargetsTest, LayersPatternNamesTheLayerListAndEmptyMeansDefault) {
  for (const char* pattern : {R"("layers")", R"(["blocks", "layers"])", R"("")", "[]", "null"}) {
    auto config = PeftAdapterConfig::FromJson(
        absl::StrCat(R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"],
                        "layers_to_transform": 2, "layers_pattern": )",
                     pattern, "}"),
        "test");
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_TRUE(config->Targets("model.layers.2.self_attn.q_proj")) << pattern;
    EXPECT_FALSE(config->Targets("model.layers.3.self_attn.q_proj")) << pattern;
  }
  auto other = PeftAdapterConfig::FromJson(
      R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"],
          "layers_to_transform": 2, "layers_pattern": "h"})",
      "test");
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_FALSE(other->Targets("model.layers.2.self_attn.q_proj"));  // no "h.<n>." in the path
}

TEST_F(AdapterValidationTest, PatternKeysMatchAsDottedSuffixRegex) {
  // A regex key in rank/alpha patterns, as PEFT allows: layer 1's o_proj only.
  auto r = LoadEdited("lora-pattern", [](auto& c) {
    c["rank_pattern"] = {{"o_proj", 2}};
    c["alpha_pattern"] = {{"layers\\.1\\.self_attn\\.o_proj", 64}, {"o_proj", 32}};
  });
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_DOUBLE_EQ((*r)->module(ModuleIndex(1, kOProj))->scale, 32.0);
  EXPECT_DOUBLE_EQ((*r)->module(ModuleIndex(0, kOProj))->scale, 16.0);
  EXPECT_DOUBLE_EQ((*r)->module(ModuleIndex(0, kQProj))->scale, 1.0);
}

// Issue 12, finding 3: a rank below 1 or a scale s beyond kMaxAdapterScale is refused at load (and
// so at upload, which validates by loading), naming the field and the module, not served as NaN.
TEST_F(AdapterValidationTest, FractionalRankIsRefusedNotTruncatedToZero) {
  // rank_pattern 0.5 used to truncate to rank 0: with zero-size factors, s = alpha / 0 = inf.
  auto rank_zero = [](std::vector<TensorView>& views, std::string&) {
    for (TensorView& v : views) {
      if (v.name.find("o_proj.lora_A") != std::string::npos) v.shape = {0, v.shape[1]};
      if (v.name.find("o_proj.lora_B") != std::string::npos) v.shape = {v.shape[0], 0};
      if (v.name.find("o_proj") != std::string::npos) v.nbytes = 0;
    }
  };
  for (const double rank : {0.5, 0.0, -1.0}) {
    auto r = LoadEdited(
        "lora-pattern",
        [&](auto& c) {
          c["rank_pattern"] = {{"o_proj", rank}};
        },
        rank_zero);
    ExpectError(r.status(), absl::StatusCode::kInvalidArgument,
                "\"rank_pattern\"[\"o_proj\"] must be a positive integer");
  }
}

TEST_F(AdapterValidationTest, ScaleBeyondTheBoundIsRefusedNamingFieldAndModule) {
  for (const double alpha : {1e38, 1e300}) {
    ExpectError(LoadEdited("lora-qv-r8", [&](auto& c) { c["lora_alpha"] = alpha; }).status(),
                absl::StatusCode::kInvalidArgument,
                absl::StrCat("\"lora_alpha\" = ", alpha,
                             " with \"r\" = 8 scales module "
                             "model.layers.0.self_attn.q_proj by s = ",
                             alpha / 8));
  }
  ExpectError(LoadEdited("lora-qv-r8",
                         [](auto& c) {
                           c["alpha_pattern"] = {{"v_proj", 1e38}};
                         })
                  .status(),
              absl::StatusCode::kInvalidArgument,
              "\"alpha_pattern\"[\"v_proj\"] = 1e+38 with \"r\" = 8 scales module "
              "model.layers.0.self_attn.v_proj");
  ExpectError(LoadEdited("lora-all-r4-rslora", [](auto& c) { c["lora_alpha"] = 1e5; }).status(),
              absl::StatusCode::kInvalidArgument, "by s = 50000 (alpha / sqrt(r), rsLoRA)");
  // Float16 serving takes every accepted scale: kMaxAdapterScale is below its largest value.
  model_ = ::loramux::testing::LoadModel("llama-tiny", torch::kFloat16);
  auto at_bound = LoadEdited("lora-qv-r8", [](auto& c) { c["lora_alpha"] = 8 * kMaxAdapterScale; });
  ASSERT_TRUE(at_bound.ok()) << at_bound.status();
  EXPECT_DOUBLE_EQ((*at_bound)->max_abs_scale(), kMaxAdapterScale);
}

TEST_F(AdapterValidationTest, MistypedConfigFieldIsInvalidArgumentNotInternal) {
  ExpectError(LoadEdited("lora-qv-r8", [](auto& c) { c["use_dora"] = "yes"; }).status(),
              absl::StatusCode::kInvalidArgument,
              "adapter \"lora-qv-r8\": adapter_config.json: \"use_dora\" must be a boolean");
  ExpectError(LoadEdited("lora-qv-r8", [](auto& c) { c["peft_type"] = 5; }).status(),
              absl::StatusCode::kInvalidArgument, "\"peft_type\" must be a string, got number 5");
}

TEST_F(AdapterValidationTest, MaxAbsScaleIsTheLargestModuleScale) {
  auto r = LoadEdited("lora-pattern", nullptr);  // o_proj 32 / 2 = 16, the others 8 / 8
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_DOUBLE_EQ((*r)->max_abs_scale(), 16.0);
}

}  // namespace
}  // namespace loramux
