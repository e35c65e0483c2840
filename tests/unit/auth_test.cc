// Bearer tokens: the header check shared by gRPC and HTTP, and the token file rules.
#include "server/auth.h"

#include <cstdio>
#include <filesystem>
#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/status_matchers.h"

namespace loramux {
namespace {

using ::testing::HasSubstr;

TEST(TokenAuthTest, WithoutATokenEveryCallPasses) {
  const TokenAuth open("", "--inference_token_file");
  EXPECT_FALSE(open.enabled());
  EXPECT_THAT(open.CheckHeader(nullptr), IsOk());
  const std::string anything = "Bearer whatever";
  EXPECT_THAT(open.CheckHeader(&anything), IsOk());
}

TEST(TokenAuthTest, OnlyTheExactBearerTokenPasses) {
  const TokenAuth auth("s3cret", "--admin_token_file");
  const std::string right = "Bearer s3cret";
  EXPECT_THAT(auth.CheckHeader(&right), IsOk());
  EXPECT_THAT(auth.CheckHeader(nullptr),
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("--admin_token_file")));
  for (const std::string wrong : {"Bearer s3cre", "Bearer s3cret ", "Bearer S3CRET",
                                  "bearer s3cret", "s3cret", "Basic czNjcmV0", "Bearer ", ""}) {
    EXPECT_THAT(auth.CheckHeader(&wrong), StatusIs(absl::StatusCode::kUnauthenticated)) << wrong;
  }
}

class TokenFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("auth_test_" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& content) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << content;
    return path;
  }
  std::filesystem::path dir_;
};

TEST_F(TokenFileTest, TheTokenIsTheTrimmedContent) {
  EXPECT_EQ(*ReadTokenFile(Write("t", "  abc123\n"), "--f"), "abc123");
}

TEST_F(TokenFileTest, MissingEmptyOrSeveralLinesAreRefusedNamingTheFlag) {
  EXPECT_THAT(ReadTokenFile((dir_ / "absent").string(), "--admin_token_file"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--admin_token_file")));
  EXPECT_THAT(ReadTokenFile(Write("empty", " \n\t"), "--f"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty")));
  EXPECT_THAT(ReadTokenFile(Write("two", "a\nb\n"), "--f"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("several lines")));
  EXPECT_THAT(ReadTokenFile(Write("huge", std::string(100 << 10, 'x')), "--f"),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace loramux
