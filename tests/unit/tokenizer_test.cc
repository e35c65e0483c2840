// Tokenizer (text/tokenizer.h) against golden data from HuggingFace tokenizers 0.22
// (scripts/golden/make_tokenizer_golden.mjs): every case of every family must encode to the
// same ids and decode to the same text, with and without skip_special_tokens; streaming decode
// must give valid UTF-8 pieces that concatenate to the full decode. Plus the error contract.
#include "text/tokenizer.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/status_matchers.h"
#include "tests/test_files.h"
#include "text/utf8.h"

namespace loramux::text {
namespace {

namespace fs = std::filesystem;

using ::loramux::testing::ReadFile;
struct GoldenCase {
  bool has_text = false;
  std::string text;
  bool add_special_tokens = false;
  std::vector<int32_t> ids;
  std::string decoded;
  std::string decoded_skip;
};

std::vector<GoldenCase> ReadCases(const fs::path& path) {
  std::vector<GoldenCase> cases;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const nlohmann::json j = nlohmann::json::parse(line);
    GoldenCase c;
    c.has_text = j.contains("text");
    if (c.has_text) {
      c.text = j["text"].get<std::string>();
      c.add_special_tokens = j["add_special_tokens"].get<bool>();
    }
    c.ids = j["ids"].get<std::vector<int32_t>>();
    c.decoded = j["decoded"].get<std::string>();
    c.decoded_skip = j["decoded_skip"].get<std::string>();
    cases.push_back(std::move(c));
  }
  return cases;
}

// Family directories: the committed ones, plus those under $LORAMUX_TOKENIZER_GOLDEN_EXTRA.
std::vector<fs::path> FamilyDirs() {
  std::vector<fs::path> dirs;
  std::vector<fs::path> roots = {fs::path(LORAMUX_TEST_DATA) / "tokenizers"};
  if (const char* extra = std::getenv("LORAMUX_TOKENIZER_GOLDEN_EXTRA")) roots.emplace_back(extra);
  for (const fs::path& root : roots) {
    if (!fs::is_directory(root)) continue;
    for (const auto& entry : fs::directory_iterator(root)) {
      if (fs::exists(entry.path() / "cases.jsonl")) dirs.push_back(entry.path());
    }
  }
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

// A variant family's tokenizer.json: its base family's file with overrides.json applied (see
// scripts/golden/make_tokenizer_golden.mjs).
std::string VariantJson(const fs::path& dir) {
  const nlohmann::json overrides = nlohmann::json::parse(ReadFile(dir / "overrides.json"));
  nlohmann::json json = nlohmann::json::parse(
      ReadFile(dir.parent_path() / overrides["base"].get<std::string>() / "tokenizer.json"));
  for (const auto& [key, value] : overrides["replace"].items()) json[key] = value;
  for (const auto& [key, value] : overrides["model_fields"].items()) json["model"][key] = value;
  for (const auto& token : overrides["append_added_tokens"]) json["added_tokens"].push_back(token);
  return json.dump();
}

const Tokenizer& LoadFamily(const fs::path& dir) {
  static auto* cache = new std::map<std::string, std::unique_ptr<Tokenizer>>();
  auto& slot = (*cache)[dir.string()];
  if (slot == nullptr) {
    auto tokenizer = fs::exists(dir / "overrides.json")
                         ? Tokenizer::FromJson(VariantJson(dir))
                         : Tokenizer::FromFile((dir / "tokenizer.json").string());
    if (!tokenizer.ok()) {
      ADD_FAILURE() << tokenizer.status();
      std::abort();
    }
    slot = *std::move(tokenizer);
  }
  return *slot;
}

std::string Show(const std::vector<int32_t>& ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + std::to_string(ids[i]);
  return s + "]";
}

// A JSON string literal, so whitespace and control characters are visible.
std::string Quote(const std::string& s) {
  return nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// Streams `ids` through a StreamDecoder; every piece must be valid UTF-8.
std::string StreamDecode(const Tokenizer& tokenizer, const std::vector<int32_t>& ids, bool skip,
                         bool* pieces_valid) {
  StreamDecoder stream(tokenizer, skip);
  std::string text;
  *pieces_valid = true;
  for (int32_t id : ids) {
    auto piece = stream.Step(id);
    if (!piece.ok()) return "<error: " + std::string(piece.status().message()) + ">";
    *pieces_valid &= IsValidUtf8(*piece);
    text += *piece;
  }
  std::string tail = *stream.Finish();
  *pieces_valid &= IsValidUtf8(tail);
  return text + tail;
}

class GoldenTest : public ::testing::TestWithParam<fs::path> {};

TEST_P(GoldenTest, EncodeDecodeAndStreamMatchHuggingFace) {
  const Tokenizer& tokenizer = LoadFamily(GetParam());
  const std::vector<GoldenCase> cases = ReadCases(GetParam() / "cases.jsonl");
  ASSERT_FALSE(cases.empty());
  int failures = 0;
  const auto report = [&](const GoldenCase& c, const std::string& what) {
    if (++failures <= 8) {
      ADD_FAILURE() << what << "\n  text: " << Quote(c.text) << "\n  golden ids: " << Show(c.ids);
    }
  };
  int encoded = 0;
  for (const GoldenCase& c : cases) {
    if (c.has_text) {
      ++encoded;
      auto ids = tokenizer.Encode(c.text, c.add_special_tokens);
      if (!ids.ok()) {
        report(c, "Encode failed: " + std::string(ids.status().message()));
      } else if (*ids != c.ids) {
        report(c,
               "Encode: got " + Show(*ids) + (c.add_special_tokens ? " (add_special_tokens)" : ""));
      }
    }
    for (bool skip : {false, true}) {
      const std::string& want = skip ? c.decoded_skip : c.decoded;
      auto text = tokenizer.Decode(c.ids, skip);
      if (!text.ok() || *text != want) {
        report(c, "Decode(skip=" + std::to_string(skip) + "): got " +
                      Quote(text.ok() ? *text : text.status().ToString()) + " want " + Quote(want));
      }
      bool pieces_valid = false;
      const std::string streamed = StreamDecode(tokenizer, c.ids, skip, &pieces_valid);
      if (streamed != want || !pieces_valid) {
        report(c, "StreamDecoder(skip=" + std::to_string(skip) + "): got " + Quote(streamed) +
                      (pieces_valid ? "" : " (a piece is not valid UTF-8)") + " want " +
                      Quote(want));
      }
    }
  }
  EXPECT_EQ(failures, 0) << "of " << cases.size() << " cases (" << encoded << " encoded)";
  std::cout << GetParam().filename().string() << ": " << cases.size() << " cases, " << encoded
            << " with text, " << failures << " failures\n";
}

INSTANTIATE_TEST_SUITE_P(Families, GoldenTest, ::testing::ValuesIn(FamilyDirs()),
                         [](const auto& info) { return info.param.filename().string(); });

TEST(TokenizerTest, AtLeastFourFamiliesAndTenThousandStrings) {
  size_t families = 0, strings = 0;
  for (const fs::path& dir : FamilyDirs()) {
    families += fs::exists(dir / "tokenizer.json");  // real files, not variants
    for (const GoldenCase& c : ReadCases(dir / "cases.jsonl")) strings += c.has_text;
  }
  EXPECT_GE(families, 4u);
  EXPECT_GE(strings, 10000u);
}

fs::path Family(const std::string& name) {
  return fs::path(LORAMUX_TEST_DATA) / "tokenizers" / name;
}

TEST(TokenizerTest, Accessors) {
  const Tokenizer& qwen = LoadFamily(Family("qwen3"));
  EXPECT_EQ(qwen.vocab_size(), 151669);
  EXPECT_EQ(qwen.TokenToId("<|im_start|>"), 151644);
  EXPECT_EQ(qwen.IdToToken(151645), "<|im_end|>");
  EXPECT_TRUE(qwen.IsSpecial(151644));
  EXPECT_FALSE(qwen.IsSpecial(9707));  // "Hello"
  EXPECT_EQ(qwen.IdToToken(9707), "Hello");
  EXPECT_EQ(qwen.IdToToken(-1), std::nullopt);
  EXPECT_EQ(qwen.IdToToken(10'000'000), std::nullopt);
  EXPECT_EQ(qwen.TokenToId("no such token, surely"), std::nullopt);

  const Tokenizer& llama2 = LoadFamily(Family("llama2"));
  EXPECT_EQ(llama2.vocab_size(), 32000);
  EXPECT_EQ(llama2.special_token_ids(), (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(*llama2.Encode("", true), std::vector<int32_t>{1});  // BOS only
  EXPECT_EQ(llama2.Encode("", false)->size(), 0u);

  const Tokenizer& llama3 = LoadFamily(Family("llama3"));
  EXPECT_EQ(llama3.vocab_size(), 128256);
  EXPECT_EQ(llama3.TokenToId("<|begin_of_text|>"), 128000);
}

TEST(TokenizerTest, ConcurrentEncodeIsConsistent) {
  const Tokenizer& tokenizer = LoadFamily(Family("llama3"));
  std::vector<GoldenCase> cases = ReadCases(Family("llama3") / "cases.jsonl");
  cases.resize(400);
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = t; i < cases.size() * 4; i += 3) {
        const GoldenCase& c = cases[i % cases.size()];
        if (!c.has_text) continue;
        auto ids = tokenizer.Encode(c.text, c.add_special_tokens);
        mismatches[t] += !ids.ok() || *ids != c.ids;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (int m : mismatches) EXPECT_EQ(m, 0);
}

// Random code points (all planes, controls, combining marks, private use) through byte-level
// tokenizers without a normalizer: decoding the ids must give the text back, byte for byte, and
// streaming must agree. No oracle needed; this covers inputs the golden strings do not.
TEST(TokenizerTest, RandomTextRoundTripsThroughByteLevel) {
  const Tokenizer& tokenizer = LoadFamily(Family("llama3"));
  std::mt19937 rng(7);
  const std::vector<std::pair<char32_t, char32_t>> ranges = {
      {0x00, 0x7F},        {0x80, 0x7FF},      {0x300, 0x36F}, {0x800, 0xD7FF}, {0xE000, 0xFFFD},
      {0x10000, 0x10FFFF}, {0x1F300, 0x1FAFF}, {0x20, 0x20},   {0x0A, 0x0D}};
  for (int i = 0; i < 300; ++i) {
    std::string text;
    const int length = std::uniform_int_distribution<int>(0, 40)(rng);
    for (int j = 0; j < length; ++j) {
      const auto& [lo, hi] =
          ranges[std::uniform_int_distribution<size_t>(0, ranges.size() - 1)(rng)];
      AppendUtf8(std::uniform_int_distribution<char32_t>(lo, hi)(rng), text);
    }
    auto ids = tokenizer.Encode(text, false);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*tokenizer.Decode(*ids, false), text) << Quote(text);
    bool pieces_valid = false;
    EXPECT_EQ(StreamDecode(tokenizer, *ids, false, &pieces_valid), text) << Quote(text);
    EXPECT_TRUE(pieces_valid);
  }
}

TEST(TokenizerTest, InvalidUtf8IsInvalidArgument) {
  const Tokenizer& tokenizer = LoadFamily(Family("qwen3"));
  for (std::string bad : {std::string("abc\xFF"), std::string("\xC3"), std::string("a\xED\xA0\x80"),
                          std::string("\xF0\x9F\x98")}) {
    auto ids = tokenizer.Encode(bad, false);
    EXPECT_THAT(ids.status(), StatusIs(absl::StatusCode::kInvalidArgument)) << bad;
    EXPECT_NE(ids.status().message().find("not valid UTF-8"), std::string::npos);
  }
}

TEST(TokenizerTest, UnknownIdInDecodeIsInvalidArgument) {
  const Tokenizer& tokenizer = LoadFamily(Family("llama2"));
  auto text = tokenizer.Decode({1, 32000}, false);
  EXPECT_THAT(text.status(), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_NE(text.status().message().find("token id 32000"), std::string::npos);
  EXPECT_THAT(tokenizer.Decode({-5}, true).status(), StatusIs(absl::StatusCode::kInvalidArgument));
  StreamDecoder stream(tokenizer, false);
  EXPECT_THAT(stream.Step(99999).status(), StatusIs(absl::StatusCode::kInvalidArgument));
  const int32_t hello = *tokenizer.TokenToId("Hello");
  EXPECT_EQ(*stream.Step(hello), "Hello");  // still usable after the error
}

// A minimal valid tokenizer.json with one field replaced.
std::string MinimalJson(const std::string& field = "", const std::string& value = "") {
  nlohmann::json j = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", nlohmann::json::array()},
      {"normalizer", nullptr},
      {"pre_tokenizer", nullptr},
      {"post_processor", nullptr},
      {"decoder", nullptr},
      {"model",
       {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 1}, {"ab", 2}}}, {"merges", {"a b"}}}}};
  if (!field.empty()) j[field] = nlohmann::json::parse(value);
  return j.dump();
}

TEST(TokenizerTest, MinimalBpeWorks) {
  auto tokenizer = Tokenizer::FromJson(MinimalJson());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ(*(*tokenizer)->Encode("abab", false), (std::vector<int32_t>{2, 2}));
  EXPECT_EQ(*(*tokenizer)->Encode("aba", false), (std::vector<int32_t>{2, 0}));
  EXPECT_EQ(*(*tokenizer)->Decode({2, 0}, false), "ab a");  // no decoder: joined with spaces
}

TEST(TokenizerTest, UnsupportedFeaturesAreNamed) {
  struct Case {
    std::string field, value, expected;
  };
  const std::vector<Case> cases = {
      {"pre_tokenizer", R"({"type": "Whitespace"})", "pre_tokenizer type \"Whitespace\""},
      {"normalizer", R"({"type": "BertNormalizer"})", "normalizer type \"BertNormalizer\""},
      {"normalizer", R"({"type": "Sequence", "normalizers": [{"type": "Precompiled"}]})",
       "normalizer type \"Precompiled\""},
      {"decoder", R"({"type": "WordPiece"})", "decoder type \"WordPiece\""},
      {"post_processor", R"({"type": "Weird"})", "post_processor type \"Weird\""},
      {"model", R"({"type": "Unigram", "vocab": []})", "model type \"Unigram\""},
      {"model", R"({"type": "BPE", "dropout": 0.1, "vocab": {}, "merges": []})", "dropout"},
      {"truncation", R"({"max_length": 10})", "\"truncation\" other than null"},
      {"extra_field", R"(1)", "top-level field \"extra_field\""},
  };
  for (const Case& c : cases) {
    auto tokenizer = Tokenizer::FromJson(MinimalJson(c.field, c.value));
    EXPECT_THAT(tokenizer.status(), StatusIs(absl::StatusCode::kUnimplemented)) << c.value;
    EXPECT_NE(tokenizer.status().message().find(c.expected), std::string::npos)
        << tokenizer.status();
    EXPECT_NE(tokenizer.status().message().find("is not supported"), std::string::npos);
  }
}

TEST(TokenizerTest, MalformedFilesAreInvalidArgument) {
  const std::vector<std::string> bad = {
      "{",
      "[]",
      MinimalJson("model", R"({"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]})"),
      MinimalJson("model", R"({"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]})"),
      MinimalJson("model", R"({"type": "BPE", "vocab": {"a": "zero"}, "merges": []})"),
      MinimalJson("model", R"({"type": "BPE", "vocab": {"a": 0}, "merges": ["a"]})"),
      MinimalJson("pre_tokenizer", R"({"type": "Split", "pattern": {"Regex": "(unclosed"},
                                       "behavior": "Isolated", "invert": false})"),
      MinimalJson("pre_tokenizer", R"({"type": "Split", "pattern": {"String": " "},
                                       "behavior": "Sideways", "invert": false})"),
      MinimalJson("post_processor", R"({"type": "TemplateProcessing", "single":
                                        [{"SpecialToken": {"id": "<s>", "type_id": 0}}]})"),
      MinimalJson("added_tokens", R"([{"id": "x", "content": "<s>"}])"),
  };
  for (const std::string& json : bad) {
    auto tokenizer = Tokenizer::FromJson(json);
    EXPECT_THAT(tokenizer.status(), StatusIs(absl::StatusCode::kInvalidArgument)) << json;
    EXPECT_NE(tokenizer.status().message().find("tokenizer.json"), std::string::npos)
        << tokenizer.status();
  }
  EXPECT_THAT(Tokenizer::FromFile("/nonexistent/tokenizer.json").status(),
              StatusIs(absl::StatusCode::kNotFound));
}

}  // namespace
}  // namespace loramux::text
