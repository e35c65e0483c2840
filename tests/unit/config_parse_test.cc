// Parsers of outside JSON (PEFT adapter_config.json, the seed config, a model's config.json):
// every malformed field is INVALID_ARGUMENT naming the field and the type it must have (never an
// escaped JSON exception), every rank a positive integer, every alpha finite, and the size and
// entry counts of an adapter config bounded so that parsing and matching it stays cheap.
#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "adapters/adapter_config.h"
#include "adapters/adapter_limits.h"
#include "formats/model_config.h"
#include "tests/status_matchers.h"

namespace loramux {
namespace {

// A parse through `parse`, with an escaped exception turned into INTERNAL as the server's
// boundary (CatchTorch) does: a test then fails with the status instead of aborting.
template <typename Parse>
absl::Status StatusOf(Parse parse) {
  try {
    return parse().status();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("exception escaped the parser: ", e.what()));
  }
}

absl::Status ParsePeft(const std::string& json) {
  return StatusOf([&] { return PeftAdapterConfig::FromJson(json, "adapter_config.json"); });
}
absl::Status ParseSeed(const std::string& json) {
  return StatusOf([&] { return SeedAdapterConfig::FromJson(json, "seed config"); });
}
absl::Status ParseModel(const std::string& json) {
  return StatusOf([&] { return ModelConfig::FromJson(json, "config.json"); });
}

// A valid PEFT config: `base_fields` and then `extra` (which must not repeat a base field).
std::string Peft(const std::string& extra, const std::string& base_fields =
                                               R"("peft_type": "LORA", "r": 8, "lora_alpha": 16)") {
  return absl::StrCat("{", base_fields, extra.empty() ? "" : ", ", extra, "}");
}
constexpr char kTargets[] = R"("target_modules": ["q_proj", "v_proj"])";

void ExpectInvalid(const absl::Status& s, const std::string& needle) {
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument)) << s;
  EXPECT_NE(s.message().find(needle), absl::string_view::npos)
      << "missing \"" << needle << "\" in " << s;
}

TEST(ConfigParseTest, ValidPeftConfigParses) {
  EXPECT_TRUE(ParsePeft(Peft(kTargets)).ok()) << ParsePeft(Peft(kTargets));
  // PEFT writes null for unset optional fields: null reads as absent.
  EXPECT_TRUE(ParsePeft(Peft(absl::StrCat(kTargets, R"(, "use_dora": null, "bias": null,
      "rank_pattern": null, "layers_to_transform": null, "use_rslora": null)")))
                  .ok());
}

TEST(ConfigParseTest, MistypedPeftFieldsNameTheFieldAndTheType) {
  struct Case {
    std::string fields;  // replaces or adds to a valid config
    std::string needle;
  };
  const std::string base = R"("r": 8, "lora_alpha": 16)";
  const std::vector<Case> cases = {
      {R"("use_dora": "yes", )" + base + ", " + kTargets,
       R"(adapter_config.json: "use_dora" must be a boolean (true or false), got string "yes")"},
      {R"("use_rslora": 1, )" + base + ", " + kTargets, R"("use_rslora" must be a boolean)"},
      {R"("fan_in_fan_out": "false", )" + base + ", " + kTargets,
       R"("fan_in_fan_out" must be a boolean)"},
      {R"("peft_type": 5, )" + base + ", " + kTargets,
       R"("peft_type" must be a string, got number 5)"},
      {R"("bias": 5, )" + base + ", " + kTargets, R"("bias" must be a string, got number 5)"},
      {R"("r": "8", "lora_alpha": 16, )" + std::string(kTargets),
       R"("r" must be a positive integer (a LoRA rank), got string "8")"},
      {R"("r": 8, "lora_alpha": "16", )" + std::string(kTargets),
       R"("lora_alpha" must be a positive number (a LoRA alpha), got string "16")"},
      {base + R"(, "target_modules": 7)",
       R"("target_modules" must be a list of module names or a regex string, got number 7)"},
      {base + R"(, "target_modules": ["q_proj", 3])",
       R"("target_modules"[1] must be a string, got number 3)"},
      {base + R"(, "target_modules": {"q_proj": 1})", R"("target_modules" must be a list)"},
      {base + ", " + kTargets + R"(, "exclude_modules": 1.5)", R"("exclude_modules" must be)"},
      {base + ", " + kTargets + R"(, "rank_pattern": "q_proj")",
       R"("rank_pattern" must be an object, got string "q_proj")"},
      {base + ", " + kTargets + R"(, "rank_pattern": {"q_proj": "4"})",
       R"("rank_pattern"["q_proj"] must be a positive integer (a LoRA rank), got string "4")"},
      {base + ", " + kTargets + R"(, "alpha_pattern": {"q_proj": true})",
       R"("alpha_pattern"["q_proj"] must be a positive number (a LoRA alpha), got boolean true)"},
      {base + ", " + kTargets + R"(, "alpha_pattern": [16])",
       R"("alpha_pattern" must be an object)"},
      {base + ", " + kTargets + R"(, "layers_to_transform": "1")",
       R"("layers_to_transform" must be an integer or a list of integers, got string "1")"},
      {base + ", " + kTargets + R"(, "layers_to_transform": [0, 1.5])",
       R"("layers_to_transform"[1] must be an integer, got number 1.5)"},
      {base + ", " + kTargets + R"(, "layers_pattern": 3)",
       R"("layers_pattern" must be a string or a list of strings, got number 3)"},
      {base + ", " + kTargets + R"(, "layers_pattern": ["layers", null])",
       R"("layers_pattern"[1] is missing; it must be a string)"},
  };
  for (const Case& c : cases) {
    ExpectInvalid(ParsePeft("{" + c.fields + "}"), c.needle);
  }
}

TEST(ConfigParseTest, RanksArePositiveIntegersAndAlphasPositiveFiniteNumbers) {
  // Each as written, and as the message shows it.
  for (const auto& [rank, shown] : std::vector<std::pair<std::string, std::string>>{
           {"0.5", "0.5"},
           {"0", "0"},
           {"-2", "-2"},
           {"8.0", "8.0"},
           {"1e3", "1000.0"},
           {"18446744073709551615", "18446744073709551615"}}) {
    ExpectInvalid(
        ParsePeft(Peft(absl::StrCat(kTargets, R"(, "rank_pattern": {"q_proj": )", rank, "}"))),
        R"("rank_pattern"["q_proj"] must be a positive integer (a LoRA rank), got number )" +
            shown);
    ExpectInvalid(ParsePeft(absl::StrCat(R"({"lora_alpha": 16, "r": )", rank, ", ", kTargets, "}")),
                  R"("r" must be a positive integer)");
  }
  for (const std::string alpha : {"0", "-16"}) {
    ExpectInvalid(ParsePeft(absl::StrCat(R"({"r": 8, "lora_alpha": )", alpha, ", ", kTargets, "}")),
                  R"("lora_alpha" must be a positive number)");
    ExpectInvalid(
        ParsePeft(Peft(absl::StrCat(kTargets, R"(, "alpha_pattern": {"v_proj": )", alpha, "}"))),
        R"("alpha_pattern"["v_proj"] must be a positive number)");
  }
  // JSON has no infinity: a literal beyond double's range is not valid JSON.
  ExpectInvalid(ParsePeft(absl::StrCat(R"({"r": 8, "lora_alpha": 1e400, )", kTargets, "}")),
                "not valid JSON");
  ExpectInvalid(ParsePeft(R"({"r": 8, "target_modules": ["q_proj"]})"),
                R"("lora_alpha" is missing)");
}

TEST(ConfigParseTest, ScaleBeyondTheBoundNamesTheModuleAndTheFields) {
  auto config = PeftAdapterConfig::FromJson(
      Peft(absl::StrCat(kTargets,
                        R"(, "rank_pattern": {"v_proj": 2}, "alpha_pattern": {"v_proj": 1e38})")),
      "adapter_config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->ScaleOf("model.layers.0.self_attn.q_proj").ok());  // 16 / 8
  ExpectInvalid(
      config->ScaleOf("model.layers.0.self_attn.v_proj").status(),
      R"("alpha_pattern"["v_proj"] = 1e+38 with "rank_pattern"["v_proj"] = 2 scales module )"
      "model.layers.0.self_attn.v_proj by s = 5e+37");
  // rsLoRA divides by sqrt(r): 1e5 / sqrt(16) = 25000 is beyond; 1e4 / sqrt(1) is at the bound.
  auto rslora = PeftAdapterConfig::FromJson(
      Peft(kTargets, R"("r": 16, "lora_alpha": 1e5, "use_rslora": true)"), "adapter_config.json");
  ASSERT_TRUE(rslora.ok()) << rslora.status();
  ExpectInvalid(
      rslora->ScaleOf("model.layers.3.self_attn.q_proj").status(),
      R"("lora_alpha" = 100000 with "r" = 16 scales module model.layers.3.self_attn.q_proj by s = 25000 (alpha / sqrt(r), rsLoRA))");
  auto at_bound =
      PeftAdapterConfig::FromJson(Peft(kTargets, R"("r": 1, "lora_alpha": 10000)"), "c");
  ASSERT_TRUE(at_bound.ok());
  EXPECT_TRUE(at_bound->ScaleOf("model.layers.0.self_attn.q_proj").status().ok());
}

TEST(ConfigParseTest, SeedAlphaIsAFiniteNumberWithinTheScaleBound) {
  auto seed = SeedAdapterConfig::FromJson(R"({"alpha": 16})", "seed config");
  ASSERT_TRUE(seed.ok()) << seed.status();
  EXPECT_EQ(seed->alpha, 16);
  EXPECT_TRUE(ParseSeed(R"({"alpha": -2.5})").ok());  // the seed code allows any finite multiplier
  ExpectInvalid(ParseSeed(R"({"alpha": 1e300})"),
                R"(seed config: "alpha" is 1e+300, beyond 10000)");
  ExpectInvalid(ParseSeed(R"({"alpha": -1e38})"), R"("alpha" is -1e+38, beyond 10000)");
  ExpectInvalid(ParseSeed(R"({"alpha": "1"})"),
                R"(seed config: "alpha" must be a number, got string "1")");
  ExpectInvalid(ParseSeed(R"({"alpha": null})"), R"("alpha" is missing; it must be a number)");
  ExpectInvalid(ParseSeed(R"([1])"), "must be a JSON object, got an array of 1 item");
}

TEST(ConfigParseTest, MistypedModelConfigFieldsNameTheFieldAndTheType) {
  const std::string base = R"("architectures": ["LlamaForCausalLM"], "vocab_size": 8,
      "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2)";
  ASSERT_TRUE(ParseModel("{" + base + "}").ok()) << ParseModel("{" + base + "}");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"("hidden_act": 5)", R"(config.json: "hidden_act" must be a string, got number 5)"},
      {R"("rope_scaling": {"rope_type": 3, "factor": 2})",
       R"("rope_scaling.rope_type" must be a string)"},
      {R"("rope_scaling": {"type": ["linear"]})", R"("rope_scaling.type" must be a string)"},
      {R"("rope_scaling": {"rope_type": "linear", "factor": "2"})",
       R"("rope_scaling.factor" must be a number)"},
      {R"("rope_scaling": "linear")", R"("rope_scaling" must be an object or null)"},
      {R"("tie_word_embeddings": "yes")", R"("tie_word_embeddings" must be a boolean)"},
      {R"("attention_bias": 1)", R"("attention_bias" must be a boolean)"},
      {R"("bos_token_id": "1")", R"("bos_token_id" must be an integer, got string "1")"},
      {R"("eos_token_id": [2, "3"])", R"("eos_token_id"[1] must be an integer)"},
      {R"("rms_norm_eps": "1e-6")", R"("rms_norm_eps" must be a number)"},
      {R"("max_position_embeddings": 2048.5)", R"("max_position_embeddings" must be an integer)"},
      {R"("num_key_value_heads": 18446744073709551615)",
       R"("num_key_value_heads" must be an integer below 2^63)"},
  };
  for (const auto& [field, needle] : cases)
    ExpectInvalid(ParseModel("{" + base + ", " + field + "}"), needle);
  ExpectInvalid(ParseModel(R"({"architectures": "LlamaForCausalLM"})"),
                R"("architectures" must be an array)");
  ExpectInvalid(ParseModel(R"({"architectures": [7]})"), R"("architectures"[0] must be a string)");
  ExpectInvalid(ParseModel(R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 8})"),
                R"("hidden_size" is missing)");
}

// --- bounded cost (issue 12, finding 10) ------------------------------------------------------

std::string Keys(const std::string& prefix, size_t count, const std::string& value) {
  std::vector<std::string> keys;
  for (size_t i = 0; i < count; ++i) keys.push_back(absl::StrCat("\"", prefix, i, "\": ", value));
  return absl::StrCat("{", absl::StrJoin(keys, ", "), "}");
}
std::string Names(const std::string& prefix, size_t count) {
  std::vector<std::string> names;
  for (size_t i = 0; i < count; ++i) names.push_back(absl::StrCat("\"", prefix, i, "\""));
  return absl::StrCat("[", absl::StrJoin(names, ", "), "]");
}
std::string Numbers(size_t count) {
  std::vector<std::string> numbers;
  for (size_t i = 0; i < count; ++i) numbers.push_back(absl::StrCat(i));
  return absl::StrCat("[", absl::StrJoin(numbers, ", "), "]");
}

TEST(ConfigParseTest, ConfigJustUnderEveryLimitIsAcceptedAndMatchesInFileOrder) {
  const size_t n = kMaxAdapterConfigEntries;
  const std::string json = Peft(
      absl::StrCat(R"("target_modules": )", Names("t", n - 1).insert(1, R"("q_proj", )"),
                   R"(, "exclude_modules": )", Names("x", n), R"(, "rank_pattern": )",
                   Keys("r", n - 1, "4").insert(1, R"("layers\\.7\\.self_attn\\.q_proj": 2, )"),
                   R"(, "alpha_pattern": )", Keys("a", n - 1, "32").insert(1, R"("q_proj": 64, )"),
                   R"(, "layers_to_transform": )", Numbers(n), R"(, "layers_pattern": )",
                   Names("l", n - 1).insert(1, R"("layers", )")));
  ASSERT_LE(json.size(), kMaxAdapterConfigBytes);
  auto config = PeftAdapterConfig::FromJson(json, "adapter_config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  // Every module of an 80-layer model, matched against every pattern.
  int64_t targeted = 0;
  for (int layer = 0; layer < 80; ++layer) {
    for (const char* proj : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                             "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}) {
      const std::string path = absl::StrCat("model.layers.", layer, ".", proj);
      if (!config->Targets(path)) continue;
      ++targeted;
      EXPECT_TRUE(config->ScaleOf(path).ok()) << path;
      EXPECT_EQ(config->RankFor(path), layer == 7 ? 2 : 8) << path;
      EXPECT_DOUBLE_EQ(config->ScaleFor(path), 64.0 / (layer == 7 ? 2 : 8)) << path;
    }
  }
  EXPECT_EQ(targeted, 80);  // q_proj of layers 0..79 (layers_to_transform lists 0..255)
}

TEST(ConfigParseTest, ConfigBeyondEachLimitIsRefusedNamingTheLimit) {
  const size_t n = kMaxAdapterConfigEntries + 1;
  const std::string over = absl::StrCat("at most ", kMaxAdapterConfigEntries, " are accepted");
  ExpectInvalid(ParsePeft(Peft(absl::StrCat(R"("target_modules": )", Names("t", n)))),
                absl::StrCat(R"("target_modules" has 257 items; )", over));
  ExpectInvalid(ParsePeft(Peft(absl::StrCat(kTargets, R"(, "exclude_modules": )", Names("x", n)))),
                absl::StrCat(R"("exclude_modules" has 257 items; )", over));
  ExpectInvalid(ParsePeft(Peft(absl::StrCat(kTargets, R"(, "rank_pattern": )", Keys("r", n, "4")))),
                absl::StrCat(R"("rank_pattern" has 257 entries; )", over));
  ExpectInvalid(
      ParsePeft(Peft(absl::StrCat(kTargets, R"(, "alpha_pattern": )", Keys("a", n, "4")))),
      absl::StrCat(R"("alpha_pattern" has 257 entries; )", over));
  ExpectInvalid(ParsePeft(Peft(absl::StrCat(kTargets, R"(, "layers_to_transform": )", Numbers(n)))),
                absl::StrCat(R"("layers_to_transform" has 257 items; )", over));
  ExpectInvalid(ParsePeft(Peft(absl::StrCat(kTargets, R"(, "layers_pattern": )", Names("l", n)))),
                absl::StrCat(R"("layers_pattern" has 257 items; )", over));
  // The issue's config: 81,492 rank_pattern keys in about 1 MiB.
  const std::string huge =
      Peft(absl::StrCat(kTargets, R"(, "rank_pattern": )", Keys("k", 81492, "4")));
  ExpectInvalid(ParsePeft(huge),
                absl::StrCat(huge.size(), " bytes exceed the limit of 65536 bytes"));
  // Size alone: a config padded past the limit with a field loramux ignores.
  std::string padded = Peft(
      absl::StrCat(kTargets, R"(, "notes": ")", std::string(kMaxAdapterConfigBytes, 'x'), "\""));
  ExpectInvalid(ParsePeft(padded), "exceed the limit of 65536 bytes");
  const std::string seed =
      absl::StrCat(R"({"alpha": 1, "notes": ")", std::string(kMaxAdapterConfigBytes, 'x'), "\"}");
  ExpectInvalid(ParseSeed(seed), absl::StrCat("seed config: ", seed.size(),
                                              " bytes exceed the limit of 65536 bytes"));
}

TEST(ConfigParseTest, RegexesBeyondTheCompileBudgetAreRefused) {
  // Each key alone is a valid regex; together they pass kMaxAdapterConfigRegexSize.
  ExpectInvalid(ParsePeft(Peft(absl::StrCat(kTargets, R"(, "rank_pattern": )",
                                            Keys(".{300}", kMaxAdapterConfigEntries, "4")))),
                absl::StrCat("past ", kMaxAdapterConfigRegexSize, " RE2 instructions in all"));
  ExpectInvalid(ParsePeft(Peft(R"x("target_modules": "((((.{1000}){1000}){1000}){1000})")x")),
                R"("target_modules" holds an invalid or too complex regular expression)");
}

TEST(ConfigParseTest, PlainPatternKeysMatchAsTheirRegexDoes) {
  // Keys of word characters, '-' and '.' are matched without RE2; '.' stays a wildcard and the
  // part before the key must end with a dot, as in (.*\.)?(KEY). The same key in a group forces
  // RE2: both must agree on every path.
  const std::vector<std::string> keys = {"q_proj",
                                         "self_attn.q_proj",
                                         "layers.1.self_attn.q_proj",
                                         "model.layers.1.self_attn.q_proj",
                                         "1.self_attn.q_proj",
                                         "proj",
                                         "a-b"};
  const std::vector<std::string> paths = {"model.layers.1.self_attn.q_proj",
                                          "model.layers.11.self_attn.q_proj",
                                          "model.layersX1.self_attn.q_proj",
                                          "model.xlayers.1.self_attn.q_proj",
                                          "q_proj",
                                          "self_attn.q_proj",
                                          "model.layers.1.self_attn.qq_proj",
                                          "x.a-b",
                                          "xa-b",
                                          "model.layers.1.mlp.proj"};
  for (const std::string& key : keys) {
    auto plain = PeftAdapterConfig::FromJson(
        Peft(absl::StrCat(kTargets, R"(, "rank_pattern": {")", key, R"(": 2})")), "c");
    auto regex = PeftAdapterConfig::FromJson(
        Peft(absl::StrCat(kTargets, R"x(, "rank_pattern": {"()x", key, R"x()": 2})x")), "c");
    ASSERT_TRUE(plain.ok() && regex.ok()) << plain.status() << regex.status();
    ASSERT_EQ(plain->rank_pattern[0].regex, nullptr) << key;
    ASSERT_NE(regex->rank_pattern[0].regex, nullptr) << key;
    for (const std::string& path : paths) {
      EXPECT_EQ(plain->RankFor(path), regex->RankFor(path)) << key << " on " << path;
    }
  }
  auto config = PeftAdapterConfig::FromJson(
      Peft(absl::StrCat(kTargets, R"(, "rank_pattern": {"layers.1.self_attn.q_proj": 2})")), "c");
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(config->RankFor("model.layers.1.self_attn.q_proj"), 2);
  EXPECT_EQ(config->RankFor("model.layersX1.self_attn.q_proj"), 2);  // '.' is a wildcard
  EXPECT_EQ(config->RankFor("model.layers.11.self_attn.q_proj"), 8);
  EXPECT_EQ(config->RankFor("model.xlayers.1.self_attn.q_proj"), 8);  // no dot before the key
}

TEST(ConfigParseTest, DeeplyNestedJsonIsRefusedWithoutCrashing) {
  // Within the size limit, nested as deep as it allows: the parser keeps its stack on the heap.
  const size_t depth = kMaxAdapterConfigBytes / 2 - 64;
  const std::string nested = std::string(depth, '[') + std::string(depth, ']');
  ExpectInvalid(
      ParsePeft(absl::StrCat(R"({"r": 8, "lora_alpha": 16, "target_modules": )", nested, "}")),
      R"("target_modules"[0] must be a string, got an array of 1 item)");
  ExpectInvalid(ParsePeft(nested), "must be a JSON object");
}

}  // namespace
}  // namespace loramux
