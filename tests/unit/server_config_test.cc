// Command-line flags: byte sizes, and ServerConfigFromFlags refusing bad values by flag name.
#include "server/server_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "tests/status_matchers.h"

ABSL_DECLARE_FLAG(std::string, listen);
ABSL_DECLARE_FLAG(std::string, http_listen);
ABSL_DECLARE_FLAG(std::string, dtype);
ABSL_DECLARE_FLAG(std::string, adapter_store);
ABSL_DECLARE_FLAG(std::string, admin_token_file);
ABSL_DECLARE_FLAG(int32_t, default_max_new_tokens);
ABSL_DECLARE_FLAG(int32_t, http_threads);
ABSL_DECLARE_FLAG(double, drain_timeout_s);

namespace loramux {
namespace {

using ::testing::HasSubstr;

TEST(ParseByteSizeTest, CountsAndUnits) {
  EXPECT_EQ(*ParseByteSize("1048576"), 1048576);
  EXPECT_EQ(*ParseByteSize("512MiB"), 512ll << 20);
  EXPECT_EQ(*ParseByteSize("512M"), 512ll << 20);
  EXPECT_EQ(*ParseByteSize("2GiB"), 2ll << 30);
  EXPECT_EQ(*ParseByteSize("1g"), 1ll << 30);
  EXPECT_EQ(*ParseByteSize("100MB"), 100000000);
  EXPECT_EQ(*ParseByteSize(" 64KiB "), 64 << 10);
  EXPECT_EQ(*ParseByteSize("1.5KiB"), 1536);
  for (const char* bad : {"", "MiB", "12 parsecs", "-5", "1e3", "99999999999T", "0x10"}) {
    EXPECT_THAT(ParseByteSize(bad),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("byte size")))
        << bad;
  }
}

class ServerConfigTest : public ::testing::Test {
 private:
  absl::FlagSaver saver_;  // every test leaves the flags as it found them
};

TEST_F(ServerConfigTest, DefaultsMakeAConfig) {
  absl::StatusOr<ServerConfig> config = ServerConfigFromFlags();
  ASSERT_THAT(config, IsOk());
  EXPECT_EQ(config->listen, "127.0.0.1:50051");
  EXPECT_TRUE(config->http_listen.empty());  // the HTTP front is off unless asked for
  EXPECT_EQ(config->engine.model_dir, DefaultModelDir());
  EXPECT_EQ(config->http_threads, 128);
}

TEST_F(ServerConfigTest, BadValuesAreRefusedNamingTheFlag) {
  absl::SetFlag(&FLAGS_listen, "nowhere");
  EXPECT_THAT(ServerConfigFromFlags(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--listen")));
  absl::SetFlag(&FLAGS_listen, "127.0.0.1:0");
  absl::SetFlag(&FLAGS_http_listen, "127.0.0.1:99999");
  EXPECT_THAT(ServerConfigFromFlags(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--http_listen")));
  absl::SetFlag(&FLAGS_http_listen, "127.0.0.1:0");
  absl::SetFlag(&FLAGS_dtype, "float8");
  EXPECT_THAT(ServerConfigFromFlags(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--dtype")));
  absl::SetFlag(&FLAGS_dtype, "bfloat16");
  absl::SetFlag(&FLAGS_adapter_store, "");
  EXPECT_THAT(ServerConfigFromFlags(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--adapter_store")));
  absl::SetFlag(&FLAGS_adapter_store, "/tmp/store");
  absl::SetFlag(&FLAGS_admin_token_file, "/nonexistent/token");
  EXPECT_THAT(ServerConfigFromFlags(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--admin_token_file")));
  absl::SetFlag(&FLAGS_admin_token_file, "");
  absl::SetFlag(&FLAGS_default_max_new_tokens, 5000);  // over --max_new_tokens_limit (4096)
  EXPECT_THAT(ServerConfigFromFlags(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--default_max_new_tokens")));
  absl::SetFlag(&FLAGS_default_max_new_tokens, 16);
  absl::SetFlag(&FLAGS_http_threads, 0);
  EXPECT_THAT(ServerConfigFromFlags(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--http_threads")));
  absl::SetFlag(&FLAGS_http_threads, 4);
  absl::SetFlag(&FLAGS_drain_timeout_s, -1);
  EXPECT_THAT(ServerConfigFromFlags(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--drain_timeout_s")));
  absl::SetFlag(&FLAGS_drain_timeout_s, 3);
  absl::StatusOr<ServerConfig> config = ServerConfigFromFlags();
  ASSERT_THAT(config, IsOk());
  EXPECT_EQ(config->engine.dtype, "bfloat16");
  EXPECT_EQ(config->http_listen, "127.0.0.1:0");
  EXPECT_EQ(config->http_threads, 4);
  absl::SetFlag(&FLAGS_dtype, "auto");  // resolved by the engine at start-up
  config = ServerConfigFromFlags();
  ASSERT_THAT(config, IsOk());
  EXPECT_EQ(config->engine.dtype, "auto");
}

}  // namespace
}  // namespace loramux
