// Links every carried library the full build uses and runs a little of each
// (scripts/gpu/check_prefix.sh).
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <prometheus/registry.h>
#include <re2/re2.h>
#include <simdjson.h>
#include "absl/strings/str_cat.h"
#include "loramux/v1/loramux.grpc.pb.h"
TEST(Prefix, Works) {
  loramux::v1::GenerateRequest r;
  r.set_adapter("x");
  std::string bytes;
  ASSERT_TRUE(r.SerializeToString(&bytes));
  EXPECT_TRUE(RE2::FullMatch(absl::StrCat("a", 1), "a\\d"));
  auto channel = grpc::CreateChannel("127.0.0.1:1", grpc::InsecureChannelCredentials());
  EXPECT_NE(channel, nullptr);
  prometheus::Registry registry;
  simdjson::ondemand::parser parser;
  EXPECT_FALSE(bytes.empty());
}
