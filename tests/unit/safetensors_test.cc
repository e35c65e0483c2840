#include "formats/safetensors.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"
#include "tests/test_files.h"

namespace loramux {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

using ::loramux::testing::MakeTempDir;
using ::loramux::testing::ReadFile;
using ::loramux::testing::WriteFile;
const char kLlamaTiny[] = LORAMUX_TEST_DATA "/llama-tiny/model.safetensors";
const char kLabel[] = "bad.safetensors";

// Debian's Abseil string_view is not std::string_view, which gmock's string matchers need.
std::string Message(const absl::Status& status) { return std::string(status.message()); }

// 8-byte little-endian length prefix.
std::string LengthPrefix(uint64_t n) {
  std::string out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  return out;
}

// A file with a hand-written header (unpadded) followed by `data_size` zero bytes.
std::string RawFile(const std::string& header, size_t data_size = 0) {
  return LengthPrefix(header.size()) + header + std::string(data_size, '\0');
}

float FloatAt(const TensorView& t, size_t i) {
  float f;
  std::memcpy(&f, t.data + i * sizeof(float), sizeof f);
  return f;
}

// Views over caller-owned storage for serialising.
struct OwnedTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::string bytes;
  TensorView View() const {
    TensorView v;
    v.name = name;
    v.dtype = dtype;
    v.shape = shape;
    v.data = reinterpret_cast<const uint8_t*>(bytes.data());
    v.nbytes = bytes.size();
    return v;
  }
};

std::string Pattern(size_t n, uint8_t seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed + 7 * i);
  return s;
}

std::vector<OwnedTensor> SampleTensors() {
  return {
      {"layers.0.lora_A.weight", DType::kF32, {2, 3}, Pattern(24, 1)},
      {"layers.0.lora_B.weight", DType::kBF16, {3, 2}, Pattern(12, 2)},
      {"a_scalar", DType::kF64, {}, Pattern(8, 3)},
      {"empty", DType::kI64, {0, 5}, ""},
      {"ids", DType::kI32, {4}, Pattern(16, 4)},
      {"mask", DType::kBool, {3}, Pattern(3, 5)},
      {"half", DType::kF16, {1, 1, 2}, Pattern(4, 6)},
      {"small", DType::kI16, {2}, Pattern(4, 7)},
      {"bytes", DType::kU8, {5}, Pattern(5, 8)},
      {"signed", DType::kI8, {3}, Pattern(3, 9)},
  };
}

std::string SerializeOwned(const std::vector<OwnedTensor>& tensors,
                           const std::map<std::string, std::string>& metadata = {}) {
  std::vector<TensorView> views;
  for (const OwnedTensor& t : tensors) views.push_back(t.View());
  return SerializeSafetensors(views, metadata);
}

// Number of lines in /proc/self/maps naming `path`.
int MappingsOf(const std::string& path) {
  std::ifstream maps("/proc/self/maps");
  int count = 0;
  for (std::string line; std::getline(maps, line);) {
    if (line.size() >= path.size() &&
        line.compare(line.size() - path.size(), path.size(), path) == 0) {
      ++count;
    }
  }
  return count;
}

class TempDir {
 public:
  TempDir() { path_ = MakeTempDir(); }
  ~TempDir() {
    if (!path_.empty()) std::system(("rm -rf '" + path_ + "'").c_str());
  }
  std::string File(const std::string& name) const { return path_ + "/" + name; }
  bool ok() const { return !path_.empty(); }

 private:
  std::string path_;
};

// ---------------------------------------------------------------------------------------------
// DTypes

TEST(DTypeTest, NamesAndSizesRoundTrip) {
  const std::vector<std::pair<DType, size_t>> all = {
      {DType::kF64, 8}, {DType::kF32, 4}, {DType::kF16, 2}, {DType::kBF16, 2}, {DType::kI64, 8},
      {DType::kI32, 4}, {DType::kI16, 2}, {DType::kI8, 1},  {DType::kU8, 1},   {DType::kBool, 1}};
  for (const auto& [dtype, size] : all) {
    EXPECT_EQ(DTypeSize(dtype), size) << DTypeName(dtype);
    auto parsed = ParseDType(DTypeName(dtype));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, dtype);
  }
  EXPECT_EQ(DTypeName(DType::kBF16), "BF16");
  EXPECT_EQ(DTypeName(DType::kBool), "BOOL");
}

TEST(DTypeTest, UnknownNameIsInvalidArgument) {
  for (const char* name : {"F8_E4M3", "f32", "", "FLOAT", "U16"}) {
    auto parsed = ParseDType(name);
    ASSERT_FALSE(parsed.ok()) << name;
    EXPECT_THAT(parsed.status(), StatusIs(absl::StatusCode::kInvalidArgument));
    EXPECT_THAT(Message(parsed.status()), HasSubstr("unknown dtype"));
  }
}

TEST(TensorViewTest, Numel) {
  TensorView v;
  EXPECT_EQ(v.numel(), 1);  // a scalar
  v.shape = {320, 64};
  EXPECT_EQ(v.numel(), 20480);
  v.shape = {int64_t{1} << 40, int64_t{1} << 40, 0};
  EXPECT_EQ(v.numel(), 0);
}

// ---------------------------------------------------------------------------------------------
// The real checkpoint

TEST(SafetensorsFileTest, ReadsLlamaTiny) {
  auto file = SafetensorsFile::Open(kLlamaTiny);
  ASSERT_TRUE(file.ok()) << file.status();
  const SafetensorsFile& f = **file;
  EXPECT_EQ(f.label(), kLlamaTiny);
  ASSERT_EQ(f.tensors().size(), 21u);
  EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));

  // File order is data-offset order, and this file is laid out contiguously.
  EXPECT_EQ(f.tensors().front().name, "lm_head.weight");
  EXPECT_EQ(f.tensors().back().name, "model.norm.weight");
  for (size_t i = 1; i < f.tensors().size(); ++i) {
    const TensorView& prev = f.tensors()[i - 1];
    EXPECT_EQ(f.tensors()[i].data, prev.data + prev.nbytes) << f.tensors()[i].name;
  }
  for (const TensorView& t : f.tensors()) {
    EXPECT_EQ(t.dtype, DType::kF32) << t.name;
    EXPECT_EQ(t.nbytes, static_cast<size_t>(t.numel()) * 4) << t.name;
    EXPECT_EQ(f.Find(t.name), &t);
  }

  const TensorView* embed = f.Find("model.embed_tokens.weight");
  ASSERT_NE(embed, nullptr);
  EXPECT_THAT(embed->shape, ElementsAre(320, 64));
  EXPECT_EQ(embed->nbytes, 81920u);
  EXPECT_FLOAT_EQ(FloatAt(*embed, 0), -0.1352466642856598f);
  EXPECT_FLOAT_EQ(FloatAt(*embed, 3), 0.12476849555969238f);

  const TensorView* down = f.Find("model.layers.1.mlp.down_proj.weight");
  ASSERT_NE(down, nullptr);
  EXPECT_THAT(down->shape, ElementsAre(64, 176));
  const TensorView* k = f.Find("model.layers.0.self_attn.k_proj.weight");
  ASSERT_NE(k, nullptr);
  EXPECT_THAT(k->shape, ElementsAre(32, 64));

  const TensorView* norm = f.Find("model.norm.weight");
  ASSERT_NE(norm, nullptr);
  EXPECT_THAT(norm->shape, ElementsAre(64));
  for (size_t i = 0; i < 64; ++i) EXPECT_EQ(FloatAt(*norm, i), 1.0f);

  EXPECT_EQ(f.Find("model.layers.2.mlp.up_proj.weight"), nullptr);
  EXPECT_EQ(f.Find(""), nullptr);
}

TEST(SafetensorsFileTest, OpenAndFromBytesAgree) {
  auto mapped = SafetensorsFile::Open(kLlamaTiny);
  ASSERT_TRUE(mapped.ok()) << mapped.status();
  auto owned = SafetensorsFile::FromBytes(ReadFile(kLlamaTiny), "upload");
  ASSERT_TRUE(owned.ok()) << owned.status();
  EXPECT_EQ((*owned)->label(), "upload");
  ASSERT_EQ((*mapped)->tensors().size(), (*owned)->tensors().size());
  for (size_t i = 0; i < (*mapped)->tensors().size(); ++i) {
    const TensorView& a = (*mapped)->tensors()[i];
    const TensorView& b = (*owned)->tensors()[i];
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.shape, b.shape);
    ASSERT_EQ(a.nbytes, b.nbytes);
    EXPECT_EQ(std::memcmp(a.data, b.data, a.nbytes), 0) << a.name;
  }
}

TEST(SafetensorsFileTest, DestructorUnmaps) {
  const std::string path = std::string(kLlamaTiny);
  const int before = MappingsOf(path);
  {
    auto file = SafetensorsFile::Open(path);
    ASSERT_TRUE(file.ok()) << file.status();
    EXPECT_EQ(MappingsOf(path), before + 1);
  }
  EXPECT_EQ(MappingsOf(path), before);
}

// ---------------------------------------------------------------------------------------------
// Writing

TEST(SerializeTest, RoundTripsEveryDTypeShapeAndMetadata) {
  const std::vector<OwnedTensor> tensors = SampleTensors();
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"rank", "8"}};
  auto file = SafetensorsFile::FromBytes(SerializeOwned(tensors, metadata), "roundtrip");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata(), metadata);
  ASSERT_EQ((*file)->tensors().size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    // Data is laid out in the given order, so file order is the given order.
    const TensorView& got = (*file)->tensors()[i];
    EXPECT_EQ(got.name, tensors[i].name);
    EXPECT_EQ(got.dtype, tensors[i].dtype) << got.name;
    EXPECT_EQ(got.shape, tensors[i].shape) << got.name;
    ASSERT_EQ(got.nbytes, tensors[i].bytes.size()) << got.name;
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(got.data), got.nbytes), tensors[i].bytes)
        << got.name;
  }
  const TensorView* scalar = (*file)->Find("a_scalar");
  ASSERT_NE(scalar, nullptr);
  EXPECT_TRUE(scalar->shape.empty());
  EXPECT_EQ(scalar->numel(), 1);
  EXPECT_EQ((*file)->Find("empty")->numel(), 0);
}

TEST(SerializeTest, HeaderIsCompactPaddedAndMetadataOnlyWhenPresent) {
  const std::string bytes = SerializeOwned(SampleTensors());
  ASSERT_GE(bytes.size(), 8u);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(bytes[i]);
  EXPECT_EQ(header_len % 8, 0u);
  const std::string header = bytes.substr(8, header_len);
  EXPECT_EQ(header.front(), '{');
  EXPECT_EQ(header.find('\n'), std::string::npos);
  EXPECT_EQ(header.find(": "), std::string::npos) << "not compact: " << header;
  EXPECT_EQ(header.find("__metadata__"), std::string::npos);
  const size_t close = header.rfind('}');
  EXPECT_EQ(header.find_first_not_of(' ', close + 1), std::string::npos) << "padding not spaces";
  EXPECT_THAT(header, HasSubstr(R"("layers.0.lora_A.weight":{"data_offsets":[0,24],)"
                                R"("dtype":"F32","shape":[2,3]})"));

  // Data follows immediately, in order.
  EXPECT_EQ(bytes.size(), 8 + header_len + 24 + 12 + 8 + 0 + 16 + 3 + 4 + 4 + 5 + 3);
  EXPECT_EQ(bytes.substr(8 + header_len, 24), Pattern(24, 1));

  EXPECT_THAT(SerializeOwned(SampleTensors(), {{"k", "v"}}),
              HasSubstr(R"("__metadata__":{"k":"v"})"));
}

TEST(SerializeTest, NoTensors) {
  const std::string bytes = SerializeSafetensors({});
  EXPECT_EQ(bytes.size(), 16u);  // "{}" padded to 8
  auto file = SafetensorsFile::FromBytes(bytes, "empty");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE((*file)->tensors().empty());
  EXPECT_TRUE((*file)->metadata().empty());
}

// ---------------------------------------------------------------------------------------------
// Accepted edge cases

TEST(SafetensorsFileTest, AcceptsEmptyTensorsAtSharedOffsets) {
  auto file =
      SafetensorsFile::FromBytes(RawFile(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},)"
                                         R"("b":{"dtype":"I8","shape":[4,0],"data_offsets":[0,0]},)"
                                         R"("c":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                         R"("d":{"dtype":"U8","shape":[0],"data_offsets":[4,4]}})",
                                         4),
                                 "ok");
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ((*file)->tensors().size(), 4u);
  EXPECT_EQ((*file)->tensors()[2].name, "c");
}

TEST(SafetensorsFileTest, AcceptsGapsTrailingBytesAndUnknownEntryFields) {
  // Not what writers produce, but harmless: every tensor is still in bounds and disjoint.
  auto file = SafetensorsFile::FromBytes(
      RawFile(R"({"late":{"dtype":"U8","shape":[2],"data_offsets":[6,8],"extra":{"x":1}},)"
              R"("early":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}  )",
              16),
      "ok");
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ((*file)->tensors().size(), 2u);
  EXPECT_EQ((*file)->tensors()[0].name, "early");
  EXPECT_EQ((*file)->tensors()[1].name, "late");
  EXPECT_EQ((*file)->tensors()[1].data, (*file)->tensors()[0].data + 6);
}

// ---------------------------------------------------------------------------------------------
// Corruption: each case must give INVALID_ARGUMENT naming the file and saying what was wrong.

struct CorruptCase {
  std::string name;
  std::string bytes;
  std::vector<std::string> message_parts;
};

std::string OneTensor(const std::string& entry, size_t data_size) {
  return RawFile(R"({"t":)" + entry + "}", data_size);
}

std::vector<CorruptCase> CorruptCases() {
  const std::string valid = SerializeOwned(SampleTensors(), {{"format", "pt"}});
  std::vector<CorruptCase> cases = {
      {"EmptyFile", "", {"file is 0 bytes", "too short"}},
      {"ShorterThanLengthPrefix", std::string("\x10\0\0\0\0", 5), {"file is 5 bytes"}},
      {"HeaderLengthZero", LengthPrefix(0), {"header length 0 is too small"}},
      {"HeaderLengthOne", LengthPrefix(1) + "{", {"header length 1 is too small"}},
      {"HeaderLongerThanFile", LengthPrefix(100) + "{}", {"header length 100", "truncated"}},
      {"HeaderLengthAbsurd",
       LengthPrefix(uint64_t{1} << 62) + "{}",
       {"header length 4611686018427387904 exceeds the limit"}},
      {"HeaderLengthAllOnes", LengthPrefix(~uint64_t{0}) + "{}", {"exceeds the limit"}},
      {"TruncatedDataSection",
       valid.substr(0, valid.size() - 3),
       {"tensor \"signed\"", "exceed the data section", "truncated"}},
      {"TruncatedInsideHeader", valid.substr(0, 40), {"header length", "truncated"}},
      {"JsonNotWellFormed", RawFile(R"({"t":{"dtype":"F32",)"), {"not well-formed JSON"}},
      {"JsonTrailingGarbage", RawFile(R"({} x)"), {"not well-formed JSON"}},
      {"JsonNulPadding", RawFile(std::string("{}\0\0\0\0\0\0", 8)), {"not well-formed JSON"}},
      {"JsonInvalidUtf8", RawFile("{\"\xff\xfe\":{}}"), {"not well-formed JSON"}},
      {"JsonNotAnObject", RawFile("[1,2,3]"), {"must be a JSON object", "array"}},
      {"JsonString", RawFile(R"("hello")"), {"must be a JSON object", "string"}},
      {"JsonTooDeep", RawFile(std::string(64, '[') + std::string(64, ']')), {"nests deeper"}},
      {"EntryNotAnObject", RawFile(R"({"t":5})"), {"tensor \"t\"", "must be an object"}},
      {"MissingDType",
       OneTensor(R"({"shape":[1],"data_offsets":[0,4]})", 4),
       {"tensor \"t\"", "\"dtype\""}},
      {"DTypeNotString",
       OneTensor(R"({"dtype":4,"shape":[1],"data_offsets":[0,4]})", 4),
       {"tensor \"t\"", "non-string \"dtype\""}},
      {"UnknownDType",
       OneTensor(R"({"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]})", 1),
       {"tensor \"t\"", "unknown dtype \"F8_E4M3\""}},
      {"MissingShape",
       OneTensor(R"({"dtype":"F32","data_offsets":[0,4]})", 4),
       {"tensor \"t\"", "\"shape\""}},
      {"ShapeNotArray",
       OneTensor(R"({"dtype":"F32","shape":4,"data_offsets":[0,4]})", 4),
       {"tensor \"t\"", "non-array \"shape\""}},
      {"NegativeShape",
       OneTensor(R"({"dtype":"F32","shape":[2,-2],"data_offsets":[0,16]})", 16),
       {"tensor \"t\"", "shape entry -2 is not a non-negative integer", "[2,-2]"}},
      {"FractionalShape",
       OneTensor(R"({"dtype":"F32","shape":[1.5],"data_offsets":[0,4]})", 4),
       {"tensor \"t\"", "shape entry 1.5"}},
      {"FloatShape",
       OneTensor(R"({"dtype":"F32","shape":[1.0],"data_offsets":[0,4]})", 4),
       {"tensor \"t\"", "shape entry 1.0"}},
      {"StringShape",
       OneTensor(R"({"dtype":"F32","shape":["4"],"data_offsets":[0,16]})", 16),
       {"tensor \"t\"", "shape entry \"4\""}},
      {"ShapeBeyondInt64",
       OneTensor(R"({"dtype":"U8","shape":[9223372036854775808,0],"data_offsets":[0,0]})", 0),
       {"tensor \"t\"", "shape entry 9223372036854775808"}},
      {"ShapeProductOverflow",
       OneTensor(R"({"dtype":"F32","shape":[4294967296,4294967296,2],"data_offsets":[0,8]})", 8),
       {"tensor \"t\"", "shape [4294967296,4294967296,2] x F32 overflows"}},
      {"ShapeTimesDTypeOverflow",
       OneTensor(R"({"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8]})", 8),
       {"tensor \"t\"", "overflows"}},
      {"ShapeSizeMismatch",
       RawFile(R"({"lm_head.weight":{"dtype":"F32","shape":[320,64],"data_offsets":[0,100]}})",
               100),
       {"tensor \"lm_head.weight\": shape [320,64] x F32 needs 81920 bytes but data_offsets "
        "span 100"}},
      {"ScalarSizeMismatch",
       OneTensor(R"({"dtype":"F64","shape":[],"data_offsets":[0,4]})", 4),
       {"shape [] x F64 needs 8 bytes but data_offsets span 4"}},
      {"MissingOffsets",
       OneTensor(R"({"dtype":"F32","shape":[1]})", 4),
       {"tensor \"t\"", "\"data_offsets\" must be [begin,end]", "got nothing"}},
      {"OffsetsOneElement",
       OneTensor(R"({"dtype":"F32","shape":[1],"data_offsets":[4]})", 4),
       {"tensor \"t\"", "got [4]"}},
      {"OffsetsThreeElements",
       OneTensor(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4,8]})", 8),
       {"got [0,4,8]"}},
      {"OffsetsNegative",
       OneTensor(R"({"dtype":"F32","shape":[1],"data_offsets":[-4,0]})", 4),
       {"tensor \"t\"", "got [-4,0]"}},
      {"OffsetsNotIntegers",
       OneTensor(R"({"dtype":"F32","shape":[1],"data_offsets":["0","4"]})", 4),
       {"tensor \"t\"", "\"data_offsets\""}},
      {"OffsetsObject",
       OneTensor(R"({"dtype":"F32","shape":[1],"data_offsets":{"a":1}})", 4),
       {"tensor \"t\"", "\"data_offsets\""}},
      {"OffsetsOutOfBounds",
       OneTensor(R"({"dtype":"F32","shape":[2],"data_offsets":[4,12]})", 8),
       {"tensor \"t\"", "data_offsets [4,12] exceed the data section of 8 bytes"}},
      {"OffsetsHuge",
       OneTensor(R"({"dtype":"U8","shape":[1],"data_offsets":[9223372036854775806,)"
                 R"(9223372036854775807]})",
                 4),
       {"tensor \"t\"", "exceed the data section"}},
      {"EndBeforeBegin",
       OneTensor(R"({"dtype":"F32","shape":[0],"data_offsets":[8,4]})", 8),
       {"tensor \"t\"", "data_offsets [8,4] end before begin"}},
      {"OverlappingTensors",
       RawFile(R"({"first":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
               R"("second":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
               12),
       {"tensor \"second\"", "overlap tensor \"first\" [0,8]"}},
      {"SameOffsets",
       RawFile(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
               R"("b":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}})",
               4),
       {"overlap tensor \"a\""}},
      {"NestedInsideAnother",
       RawFile(R"({"outer":{"dtype":"U8","shape":[16],"data_offsets":[0,16]},)"
               R"("mid":{"dtype":"U8","shape":[2],"data_offsets":[4,6]},)"
               R"("inner":{"dtype":"U8","shape":[2],"data_offsets":[8,10]}})",
               16),
       {"overlap tensor \"outer\""}},
      {"EmptyTensorInsideAnother",
       RawFile(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},)"
               R"("b":{"dtype":"U8","shape":[0],"data_offsets":[4,4]}})",
               8),
       {"tensor \"b\"", "overlap tensor \"a\""}},
      {"MetadataNotObject",
       RawFile(R"({"__metadata__":["format","pt"]})"),
       {"\"__metadata__\" must be an object", "array"}},
      {"MetadataValueNumber",
       RawFile(R"({"__metadata__":{"format":"pt","rank":8}})"),
       {"\"__metadata__\" value for \"rank\" must be a string", "number"}},
      {"MetadataValueNull",
       RawFile(R"({"__metadata__":{"x":null}})"),
       {"value for \"x\" must be a string", "null"}},
      {"MetadataValueObject",
       RawFile(R"({"__metadata__":{"x":{"y":"z"}}})"),
       {"value for \"x\" must be a string", "object"}},
  };
  return cases;
}

class CorruptTest : public ::testing::TestWithParam<CorruptCase> {};

TEST_P(CorruptTest, IsInvalidArgumentWithHelpfulMessage) {
  const CorruptCase& c = GetParam();
  auto file = SafetensorsFile::FromBytes(c.bytes, kLabel);
  ASSERT_FALSE(file.ok()) << "accepted corrupt input " << c.name;
  EXPECT_THAT(file.status(), StatusIs(absl::StatusCode::kInvalidArgument)) << file.status();
  const std::string message = Message(file.status());
  EXPECT_THAT(message, ::testing::StartsWith(std::string(kLabel) + ": "));
  for (const std::string& part : c.message_parts) EXPECT_THAT(message, HasSubstr(part));
}

INSTANTIATE_TEST_SUITE_P(Corruptions, CorruptTest, ::testing::ValuesIn(CorruptCases()),
                         [](const ::testing::TestParamInfo<CorruptCase>& info) {
                           return info.param.name;
                         });

TEST(SafetensorsFileTest, ErrorMessagesStaySmallForHugeHeaders) {
  std::string shape = "[";
  for (int i = 0; i < 20000; ++i) shape += "1,";
  shape += "-1]";
  const std::string name(100000, 'n');
  auto file = SafetensorsFile::FromBytes(RawFile(R"({")" + name + R"(":{"dtype":"F32","shape":)" +
                                                     shape + R"(,"data_offsets":[0,4]}})",
                                                 4),
                                         kLabel);
  ASSERT_FALSE(file.ok());
  EXPECT_THAT(file.status(), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Message(file.status()), HasSubstr("is not a non-negative integer"));
  EXPECT_LT(file.status().message().size(), 1000u);
}

// ---------------------------------------------------------------------------------------------
// The header's JSON: strict RFC 8259, checked by simdjson.

// A file whose header is `{<name_json>:<entry_json>}` (a one-byte U8 tensor by default).
std::string NamedTensorFile(
    const std::string& name_json,
    const std::string& entry_json = R"({"dtype":"U8","shape":[1],"data_offsets":[0,1]})") {
  return RawFile("{" + name_json + ":" + entry_json + "}", 1);
}

void ExpectRejected(const std::string& bytes, const std::vector<std::string>& message_parts,
                    const std::string& what) {
  auto file = SafetensorsFile::FromBytes(bytes, kLabel);
  ASSERT_FALSE(file.ok()) << "accepted " << what;
  EXPECT_THAT(file.status(), StatusIs(absl::StatusCode::kInvalidArgument)) << what;
  const std::string message = Message(file.status());
  EXPECT_THAT(message, ::testing::StartsWith(std::string(kLabel) + ": ")) << what;
  for (const std::string& part : message_parts) EXPECT_THAT(message, HasSubstr(part)) << what;
}

TEST(HeaderJsonTest, EscapesAndSurrogatePairsInNamesAreDecoded) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"("a\"b")", "a\"b"},
      {R"("back\\slash")", "back\\slash"},
      {R"("sl\/ash")", "sl/ash"},
      {R"("\b\f\n\r\t")", "\b\f\n\r\t"},
      {R"("\u0041\u00e9\u20AC\u007f")", "A\xC3\xA9\xE2\x82\xAC\x7F"},
      {R"("\ud83d\ude00")", "\xF0\x9F\x98\x80"},  // U+1F600
      {R"("\uD800\uDC00\uDBFF\uDFFF")", "\xF0\x90\x80\x80\xF4\x8F\xBF\xBF"},
      {R"("nul\u0000byte")", std::string("nul\0byte", 8)},
      {"\"raw \xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 \xEF\xBF\xBF\"",
       "raw \xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 \xEF\xBF\xBF"},
      {R"("")", ""},
      {R"("layers.0.\u006cora_A.weight")", "layers.0.lora_A.weight"},
  };
  for (const auto& [json_name, name] : cases) {
    auto file = SafetensorsFile::FromBytes(NamedTensorFile(json_name), "escapes");
    ASSERT_TRUE(file.ok()) << json_name << ": " << file.status();
    ASSERT_EQ((*file)->tensors().size(), 1u);
    EXPECT_EQ((*file)->tensors()[0].name, name) << json_name;
    EXPECT_EQ((*file)->Find(name), &(*file)->tensors()[0]) << json_name;
  }
  // "__metadata__" is recognised however it is spelled.
  auto file =
      SafetensorsFile::FromBytes(RawFile(R"({"__meta\u0064ata__":{"k\u00e9":"v\n"}})"), "escapes");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE((*file)->tensors().empty());
  EXPECT_EQ((*file)->metadata(), (std::map<std::string, std::string>{{"k\xC3\xA9", "v\n"}}));
}

TEST(HeaderJsonTest, AwkwardNamesAndMetadataRoundTripThroughSerialize) {
  std::vector<OwnedTensor> tensors = SampleTensors();
  const std::vector<std::string> names = {"quote\"d",
                                          "back\\slash",
                                          "ctrl\x01\x1f\x7f",
                                          "tab\tnew\nline",
                                          "\xC3\xA9\xE2\x82\xAC",
                                          "emoji \xF0\x9F\x98\x80",
                                          std::string("nul\0in", 6),
                                          "",
                                          "__metadata",
                                          "/slash/"};
  for (size_t i = 0; i < names.size(); ++i) {
    tensors.push_back({names[i], DType::kU8, {2}, Pattern(2, static_cast<uint8_t>(i))});
  }
  const std::map<std::string, std::string> metadata = {
      {"format", "pt"}, {"q\"uote", "line\nbreak \xF0\x9F\x98\x80"}, {"", ""}};
  auto file = SafetensorsFile::FromBytes(SerializeOwned(tensors, metadata), "roundtrip");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata(), metadata);
  ASSERT_EQ((*file)->tensors().size(), tensors.size());
  for (const OwnedTensor& t : tensors) {
    const TensorView* got = (*file)->Find(t.name);
    ASSERT_NE(got, nullptr) << t.name;
    EXPECT_EQ(got->name, t.name);
    EXPECT_EQ(got->shape, t.shape) << t.name;
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(got->data), got->nbytes), t.bytes);
  }
}

TEST(HeaderJsonTest, InvalidUtf8AndBadEscapesAreRejected) {
  const std::vector<std::string> bad_strings = {
      "\xff",
      "\xfe",
      "\x80",
      "\xbf",  // not a lead byte
      "\xc0\x80",
      "\xc1\xbf",  // overlong 2-byte
      "\xe0\x80\x80",
      "\xe0\x9f\xbf",  // overlong 3-byte
      "\xf0\x80\x80\x80",
      "\xf0\x8f\xbf\xbf",  // overlong 4-byte
      "\xed\xa0\x80",
      "\xed\xbf\xbf",  // UTF-16 surrogates encoded in UTF-8
      "\xf4\x90\x80\x80",
      "\xf5\x80\x80\x80",  // beyond U+10FFFF
      "\xc3",
      "\xe2\x82",
      "\xf0\x9f\x98",  // truncated
      "\xc3\x28",
      "\xe2\x28\xa1",
      "\xf0\x9f\x28\x80",      // bad continuation
      "\xf8\x88\x80\x80\x80",  // 5-byte form
      "\\ud800",
      "\\udc00",
      "\\ud800x",
      "\\ud800\\u0041",
      "\\udbff\\ue000",
      "\\ud83d\\n",
      "\\x41",
      "\\a",
      "\\'",
      "\\u12",
      "\\u12G4",
      "\\U0041",
      "\\",
      "raw\ncontrol",
      "raw\ttab",
      std::string("raw\x1f", 4),
      std::string("raw\x01", 4),
  };
  for (const std::string& bad : bad_strings) {
    const std::string quoted = "\"" + bad + "\"";
    SCOPED_TRACE(::testing::PrintToString(bad));
    ExpectRejected(NamedTensorFile(quoted), {"header is not well-formed JSON"}, "name");
    ExpectRejected(
        NamedTensorFile(R"("t")",
                        R"({"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":)" + quoted + "}"),
        {"not well-formed JSON"}, "ignored value");
    ExpectRejected(RawFile(R"({"__metadata__":{"k":)" + quoted + "}}"), {"not well-formed JSON"},
                   "metadata value");
  }
  ExpectRejected(NamedTensorFile("\"\xff\""), {"not valid UTF-8"}, "named");
}

TEST(HeaderJsonTest, DuplicateNamesAndKeysAreRejected) {
  const std::string a = R"({"dtype":"U8","shape":[1],"data_offsets":[0,1]})";
  const std::string b = R"({"dtype":"U8","shape":[1],"data_offsets":[1,2]})";
  ExpectRejected(RawFile(R"({"t":)" + a + R"(,"t":)" + b + "}", 2),
                 {"tensor \"t\"", "duplicate tensor name"}, "plain duplicate");
  ExpectRejected(RawFile(R"({"t":)" + a + R"(,"\u0074":)" + b + "}", 2),
                 {"tensor \"t\"", "duplicate tensor name"}, "escaped duplicate");
  ExpectRejected(RawFile(R"({"e":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},)"
                         R"("e":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}})"),
                 {"tensor \"e\"", "duplicate tensor name"}, "identical empty tensors");
  ExpectRejected(NamedTensorFile(R"("t")", R"({"dtype":"U8","dtype":"U8","shape":[1],)"
                                           R"("data_offsets":[0,1]})"),
                 {"tensor \"t\"", "\"dtype\" more than once"}, "dtype twice");
  ExpectRejected(NamedTensorFile(R"("t")", R"({"dtype":"U8","shape":[1],"data_offsets":[0,1],)"
                                           R"("shape":[1]})"),
                 {"tensor \"t\"", "\"shape\" more than once"}, "shape twice");
  ExpectRejected(RawFile(R"({"__metadata__":{},"__metadata__":{}})"),
                 {"more than one \"__metadata__\""}, "metadata twice");
  ExpectRejected(RawFile(R"({"__metadata__":{"k":"v","k":"w"}})"),
                 {"\"__metadata__\" has the key \"k\" more than once"}, "metadata key twice");
}

TEST(HeaderJsonTest, UnknownEntryKeysWithAnyValueAreIgnored) {
  auto file = SafetensorsFile::FromBytes(
      NamedTensorFile(R"("t")", R"({"extra":{"a":[1,{"b":null,"c":[true,false,-0.5e+3]}],)"
                                R"("s":"x\u0041\"","dtype":"F64","shape":"no"},)"
                                R"("dtype":"U8","n":-1.5E-3,"z":null,"e":[],"o":{},"b":true,)"
                                R"("shape":[1],"str":"[{","data_offsets":[0,1],"last":[[[]]]})"),
      "unknown");
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ((*file)->tensors().size(), 1u);
  EXPECT_EQ((*file)->tensors()[0].dtype, DType::kU8);
  EXPECT_THAT((*file)->tensors()[0].shape, ElementsAre(1));
}

TEST(HeaderJsonTest, NestingIsCappedAtEightLevels) {
  // Top-level object, entry object, then six arrays: eight levels.
  const std::string entry_start = R"({"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":)";
  auto file = SafetensorsFile::FromBytes(NamedTensorFile(R"("t")", entry_start + "[[[[[[1]]]]]]}"),
                                         "depth");
  EXPECT_TRUE(file.ok()) << file.status();
  ExpectRejected(NamedTensorFile(R"("t")", entry_start + "[[[[[[[1]]]]]]]}"),
                 {"nests deeper than 8 levels"}, "nine levels");
  ExpectRejected(NamedTensorFile(R"("t")", entry_start + R"([[[[[{"a":{"b":1}}]]]]]})"),
                 {"nests deeper than 8 levels"}, "nine levels, objects");
}

TEST(HeaderJsonTest, NumbersThatAreNotPlainNonNegativeIntegersAreRejected) {
  // Well-formed JSON numbers, but not what a shape or an offset may be; messages quote them as
  // simdjson writes them.
  for (const auto& [number, shown] : std::vector<std::pair<std::string, std::string>>{
           {"1.0", "1.0"},
           {"1e3", "1000.0"},
           {"1E3", "1000.0"},
           {"1e+0", "1.0"},
           {"10e-1", "1.0"},
           {"-1", "-1"},
           {"0.0", "0.0"},
           {"-0.0", "-0.0"},
           {"1.5", "1.5"},
           {"9223372036854775808", "9223372036854775808"},
           {"18446744073709551615", "18446744073709551615"}}) {
    SCOPED_TRACE(number);
    ExpectRejected(NamedTensorFile(R"("t")", R"({"dtype":"U8","shape":[)" + number +
                                                 R"(],"data_offsets":[0,1]})"),
                   {"tensor \"t\"", "shape entry " + shown + " is not a non-negative integer"},
                   "shape");
    ExpectRejected(
        NamedTensorFile(R"("t")",
                        R"({"dtype":"U8","shape":[1],"data_offsets":[0,)" + number + "]}"),
        {"tensor \"t\"", "\"data_offsets\" must be [begin,end]", "got [0," + shown + "]"},
        "offset");
  }
  // Integers beyond 64 bits: RFC 8259 lets a parser refuse them, and simdjson does.
  for (const std::string number :
       {"18446744073709551616", "123456789012345678901234567890", "-9223372036854775809"}) {
    SCOPED_TRACE(number);
    ExpectRejected(NamedTensorFile(R"("t")", R"({"dtype":"U8","shape":[)" + number +
                                                 R"(],"data_offsets":[0,1]})"),
                   {"header is not well-formed JSON", "integer outside [-2^63, 2^64)"}, "shape");
  }
  // "-0" is the integer 0 as simdjson (and nlohmann) read it.
  auto zero = SafetensorsFile::FromBytes(
      NamedTensorFile(R"("t")", R"({"dtype":"U8","shape":[-0],"data_offsets":[-0,0]})"), "zero");
  ASSERT_TRUE(zero.ok()) << zero.status();
  EXPECT_THAT((*zero)->tensors()[0].shape, ElementsAre(0));
  // Not JSON numbers at all.
  for (const std::string number : {"01", "00", "-01", "+1", ".5", "1.", "1.e3", "1e", "1e+", "-",
                                   "0x10", "NaN", "Infinity", "-Infinity", "1_000", "- 1"}) {
    SCOPED_TRACE(number);
    ExpectRejected(NamedTensorFile(R"("t")", R"({"dtype":"U8","shape":[)" + number +
                                                 R"(],"data_offsets":[0,1]})"),
                   {"header is not well-formed JSON"}, "shape");
  }
  // The largest accepted values.
  auto file = SafetensorsFile::FromBytes(
      NamedTensorFile(R"("t")",
                      R"({"dtype":"U8","shape":[9223372036854775807,0],"data_offsets":[0,0]})"),
      "max");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_THAT((*file)->tensors()[0].shape, ElementsAre(int64_t{9223372036854775807}, 0));
}

TEST(HeaderJsonTest, TrailingGarbageIsRejected) {
  for (const std::string header :
       {"{} x", "{}}", "{},", "{}{}", "{}\"\"", "{} 0", "{}\n]", "{} null", "{}\x80", "{}/**/",
        "[] []", "\"s\" x", "1 2", "{} \f"}) {
    SCOPED_TRACE(::testing::PrintToString(header));
    ExpectRejected(RawFile(header), {"header is not well-formed JSON"}, "trailing");
  }
}

TEST(HeaderJsonTest, OtherSyntaxErrorsAreRejected) {
  for (const std::string header : {"  ",
                                   "{ ",
                                   " }",
                                   "{\"t\"}",
                                   "{\"t\":}",
                                   "{\"t\" 1}",
                                   "{\"t\":1,}",
                                   "{,}",
                                   "{'t':1}",
                                   "{t:1}",
                                   "{\"t\":[1,]}",
                                   "{\"t\":[,1]}",
                                   "{\"t\":[1 2]}",
                                   "{\"t\":tru}",
                                   "{\"t\":nul}",
                                   "{\"t\":True}",
                                   "{\"t\":\"unterminated}",
                                   "{\"t\":1 /* c */}",
                                   "// c\n{}",
                                   "\xEF\xBB\xBF{}",
                                   "{\"a\":1\"b\":2}",
                                   "{1:2}",
                                   "{\"t\":[}",
                                   "{\"t\":{]}"}) {
    SCOPED_TRACE(::testing::PrintToString(header));
    ExpectRejected(RawFile(header), {"header is not well-formed JSON"}, "syntax");
  }
}

TEST(HeaderJsonTest, WhitespaceIsAcceptedEverywhereJsonAllowsIt) {
  const std::string header =
      " \t\n\r{ \"t\" \t:\n{ \"dtype\"\r: \"F32\" , \"shape\" :[ 1 ,\t2 ] ,\n\"data_offsets\"\n:"
      "\n[\n0\n,\n8\n]\n,\"x\" : [ ] , \"y\" : { } } ,\r\n \"__metadata__\" : { \"k\" : \"v\" }"
      " } \r\n\t ";
  auto file = SafetensorsFile::FromBytes(RawFile(header, 8), "whitespace");
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ((*file)->tensors().size(), 1u);
  EXPECT_THAT((*file)->tensors()[0].shape, ElementsAre(1, 2));
  EXPECT_EQ((*file)->tensors()[0].nbytes, 8u);
  EXPECT_EQ((*file)->metadata(), (std::map<std::string, std::string>{{"k", "v"}}));

  // Only space, tab, LF and CR are JSON whitespace.
  for (const std::string space : {"\f", "\v", "\xC2\xA0", "\x1c"}) {
    SCOPED_TRACE(::testing::PrintToString(space));
    ExpectRejected(RawFile("{" + space + "}"), {"header is not well-formed JSON"}, "odd space");
  }
}

TEST(HeaderJsonTest, ErrorsQuoteValuesCompactly) {
  ExpectRejected(NamedTensorFile(R"("t")", R"({"dtype":"U8","shape":[ 2 , "x y" ],)"
                                           R"("data_offsets":[0,1]})"),
                 {"shape entry \"x y\" is not a non-negative integer (in shape [2,\"x y\"])"},
                 "compact");
  ExpectRejected(NamedTensorFile(R"("t")", R"({"dtype":"U8","shape":[1],"data_offsets":[ 0 ]})"),
                 {"got [0]"}, "compact offsets");
}

// simdjson's reading of the header and nlohmann's must agree on every valid header.
void ExpectSameAsNlohmann(const std::string& bytes, const std::string& what) {
  SCOPED_TRACE(what);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(bytes[i]);
  const nlohmann::json reference = nlohmann::json::parse(bytes.substr(8, header_len));
  auto file = SafetensorsFile::FromBytes(bytes, what);
  ASSERT_TRUE(file.ok()) << file.status();
  std::map<std::string, std::string> metadata;
  size_t tensors = 0;
  const uint8_t* data_section = nullptr;
  for (const auto& [name, entry] : reference.items()) {
    if (name == "__metadata__") {
      metadata = entry.get<std::map<std::string, std::string>>();
      continue;
    }
    ++tensors;
    const TensorView* t = (*file)->Find(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(t->name, name);
    EXPECT_EQ(DTypeName(t->dtype), entry.at("dtype").get<std::string>()) << name;
    EXPECT_EQ(t->shape, entry.at("shape").get<std::vector<int64_t>>()) << name;
    const auto offsets = entry.at("data_offsets").get<std::vector<uint64_t>>();
    ASSERT_EQ(offsets.size(), 2u);
    EXPECT_EQ(t->nbytes, offsets[1] - offsets[0]) << name;
    if (data_section == nullptr) data_section = t->data - offsets[0];
    EXPECT_EQ(t->data, data_section + offsets[0]) << name;
  }
  EXPECT_EQ((*file)->tensors().size(), tensors);
  EXPECT_EQ((*file)->metadata(), metadata);
}

TEST(HeaderJsonTest, AgreesWithNlohmannOnValidHeaders) {
  std::vector<OwnedTensor> awkward = SampleTensors();
  awkward.push_back({"\xC3\xA9t\xC3\xA9 \"q\" \\ \x01", DType::kBF16, {1, 2}, Pattern(4, 1)});
  awkward.push_back({"Z.upper.before.metadata", DType::kF32, {1}, Pattern(4, 2)});
  ExpectSameAsNlohmann(SerializeOwned(SampleTensors()), "serialized");
  ExpectSameAsNlohmann(SerializeOwned(SampleTensors(), {{"format", "pt"}, {"rank", "8"}}),
                       "serialized with metadata");
  ExpectSameAsNlohmann(SerializeOwned(awkward, {{"q\"", "\xF0\x9F\x98\x80\n"}}), "awkward");
  ExpectSameAsNlohmann(SerializeSafetensors({}), "empty");
  ExpectSameAsNlohmann(ReadFile(kLlamaTiny), "llama-tiny");

  // A LoRA-adapter-sized header, as in production.
  std::vector<OwnedTensor> lora;
  for (int layer = 0; layer < 24; ++layer) {
    for (const char* proj : {"q_proj", "v_proj"}) {
      const std::string base =
          "base_model.model.model.layers." + std::to_string(layer) + ".self_attn." + proj;
      lora.push_back({base + ".lora_A.weight", DType::kF16, {8, 16}, Pattern(256, 1)});
      lora.push_back({base + ".lora_B.weight", DType::kF16, {16, 8}, Pattern(256, 2)});
    }
  }
  ExpectSameAsNlohmann(SerializeOwned(lora, {{"format", "pt"}}), "lora");

  ExpectSameAsNlohmann(
      RawFile(" {\"b\" : {\"data_offsets\":[ 4 , 8 ],\"shape\":[ 4 ],\"dtype\":\"U8\",\"k\":[{}]},"
              "\n\"a\":{\"shape\":[2,2],\"dtype\":\"I8\",\"data_offsets\":[0,4]},"
              "\"\\u00e9\\ud83d\\ude00\":{\"dtype\":\"BOOL\",\"shape\":[0],\"data_offsets\":[8,8]},"
              "\"__metadata__\":{\"x\":\"\\u0041\\\\\"}} ",
              16),
      "hand-written");
}

// ---------------------------------------------------------------------------------------------
// Files on disk

TEST(SafetensorsOpenTest, MissingFileIsNotFound) {
  const std::string path = ::testing::TempDir() + "no_such_dir/adapter.safetensors";
  auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_THAT(file.status(), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(Message(file.status()), HasSubstr(path));
}

TEST(SafetensorsOpenTest, DirectoryIsInvalidArgument) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  auto file = SafetensorsFile::Open(dir.File(""));
  ASSERT_FALSE(file.ok());
  EXPECT_THAT(file.status(), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Message(file.status()), HasSubstr("not a regular file"));
}

TEST(SafetensorsOpenTest, ReadsWrittenFile) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  const std::string path = dir.File("adapter.safetensors");
  const std::vector<OwnedTensor> tensors = SampleTensors();
  ASSERT_TRUE(WriteFile(path, SerializeOwned(tensors, {{"format", "pt"}})));
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ((*file)->tensors().size(), tensors.size());
  const TensorView* a = (*file)->Find("layers.0.lora_A.weight");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(a->data), a->nbytes), tensors[0].bytes);
}

TEST(SafetensorsOpenTest, CorruptFilesOnDiskAreInvalidArgumentAndUnmapped) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  const std::string valid = SerializeOwned(SampleTensors());
  const std::vector<std::pair<std::string, std::string>> files = {
      {"empty.safetensors", ""},
      {"short.safetensors", "abc"},
      {"truncated.safetensors", valid.substr(0, valid.size() - 1)},
      {"absurd.safetensors", LengthPrefix(uint64_t{1} << 62) + "{}"},
      {"garbage.safetensors", LengthPrefix(6) + "{\"a\":}"},
  };
  for (const auto& [name, bytes] : files) {
    const std::string path = dir.File(name);
    ASSERT_TRUE(WriteFile(path, bytes));
    auto file = SafetensorsFile::Open(path);
    ASSERT_FALSE(file.ok()) << name;
    EXPECT_THAT(file.status(), StatusIs(absl::StatusCode::kInvalidArgument)) << file.status();
    EXPECT_THAT(Message(file.status()), ::testing::StartsWith(path + ": "));
    EXPECT_EQ(MappingsOf(path), 0) << "failed Open leaked its mapping of " << name;
  }
}

// ---------------------------------------------------------------------------------------------
// Robustness: random damage to a valid file's header must never crash or read out of bounds.

TEST(SafetensorsRobustnessTest, RandomHeaderDamageNeverCrashes) {
  const std::string valid = SerializeOwned(SampleTensors(), {{"format", "pt"}, {"note", "x"}});
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(valid[i]);
  const size_t header_end = 8 + header_len;
  // Bytes that keep damage JSON-shaped often enough to reach the deeper checks.
  const std::string interesting = std::string("0123456789-.[]{}\",: eE\\\xff") + '\0';

  std::mt19937_64 rng(20240601);
  auto pick = [&rng](size_t n) { return static_cast<size_t>(rng() % n); };
  int accepted = 0;
  for (int iter = 0; iter < 2000; ++iter) {
    std::string bytes = valid;
    const int edits = 1 + static_cast<int>(pick(4));
    for (int e = 0; e < edits; ++e) {
      // Earlier truncations may have cut into the header.
      const size_t end = std::min(header_end, bytes.size());
      if (end <= 8) break;
      switch (pick(5)) {
        case 0:  // flip a bit anywhere in the prefix or header
          bytes[pick(end)] ^= static_cast<char>(1u << pick(8));
          break;
        case 1:  // JSON-ish byte in the header
          bytes[8 + pick(end - 8)] = interesting[pick(interesting.size())];
          break;
        case 2:  // a digit for a digit: shapes and offsets change but stay numbers
          for (size_t tries = 0; tries < 64; ++tries) {
            size_t at = 8 + pick(end - 8);
            if (std::isdigit(static_cast<unsigned char>(bytes[at]))) {
              bytes[at] = static_cast<char>('0' + pick(10));
              break;
            }
          }
          break;
        case 3:  // truncate anywhere
          bytes.resize(pick(bytes.size() + 1));
          break;
        default:  // damage one byte of the length prefix
          bytes[pick(8)] = static_cast<char>(rng());
          break;
      }
    }
    auto file = SafetensorsFile::FromBytes(bytes, "fuzz");
    if (!file.ok()) {
      ASSERT_THAT(file.status(), StatusIs(absl::StatusCode::kInvalidArgument))
          << "iteration " << iter << ": " << file.status();
      continue;
    }
    ++accepted;
    // Whatever was accepted must be self-consistent and readable end to end.
    const auto& tensors = (*file)->tensors();
    for (size_t i = 0; i < tensors.size(); ++i) {
      const TensorView& t = tensors[i];
      ASSERT_EQ(t.nbytes, static_cast<size_t>(t.numel()) * DTypeSize(t.dtype)) << t.name;
      if (i > 0 && t.nbytes > 0) {
        ASSERT_GE(t.data, tensors[i - 1].data) << t.name;
      }
      volatile uint8_t sink = 0;
      for (size_t b = 0; b < t.nbytes; ++b) sink = sink ^ t.data[b];
      (void)sink;
    }
  }
  // The valid base plus harmless edits (e.g. in padding or metadata) should sometimes survive.
  EXPECT_GT(accepted, 0);
}

}  // namespace
}  // namespace loramux
