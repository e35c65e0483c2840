// Two loramux_server processes sharing one --adapter_store directory, as replicas behind a load
// balancer do: what one publishes, the other serves on the next request (no restart, no
// notification), a new version under the same name replaces the old one on both, and a delete on
// one is a NOT_FOUND on the other.
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "common/sha256.h"
#include "gtest/gtest.h"
#include "loramux/v1/loramux.grpc.pb.h"
#include "tests/integration/server_harness.h"

namespace loramux::testing {
namespace {

namespace fs = std::filesystem;

// One server on the shared store, with its stubs.
struct Replica {
  explicit Replica(const std::string& store)
      : process(std::vector<std::string>{"--adapter_store=" + store}) {
    if (!process.ok()) return;
    channel = Connect(process.address());
    inference = v1::Inference::NewStub(channel);
    adapters = v1::Adapters::NewStub(channel);
  }

  ServerProcess process;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Inference::Stub> inference;
  std::unique_ptr<v1::Adapters::Stub> adapters;
};

// "name@version" for each adapter, in listing order.
std::vector<std::string> Listing(v1::Adapters::Stub& stub) {
  std::vector<v1::AdapterInfo> adapters;
  const grpc::Status status = ListAdapters(stub, &adapters);
  EXPECT_TRUE(status.ok()) << status.error_message();
  std::vector<std::string> out;
  for (const v1::AdapterInfo& info : adapters) out.push_back(info.name() + "@" + info.version());
  return out;
}

class SharedStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir();
    ASSERT_FALSE(dir_.empty());
    store_ = dir_ + "/store";
  }
  void TearDown() override {
    a_.reset();  // kills the servers before their store goes
    b_.reset();
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  std::string dir_;
  std::string store_;
  std::unique_ptr<Replica> a_;
  std::unique_ptr<Replica> b_;
};

TEST_F(SharedStoreTest, ReplicasSeeEachOthersUploadsAndDeletes) {
  a_ = std::make_unique<Replica>(store_);
  b_ = std::make_unique<Replica>(store_);
  ASSERT_TRUE(a_->process.ok()) << "server A did not start; its log:\n" << a_->process.Log();
  ASSERT_TRUE(b_->process.ok()) << "server B did not start; its log:\n" << b_->process.Log();
  ASSERT_NE(a_->process.address(), b_->process.address());

  const AdapterFiles qv = ReadAdapter("lora-qv-r8");
  const AdapterFiles pattern = ReadAdapter("lora-pattern");
  const std::string qv_version = Sha256Hex(qv.weights);
  const std::string pattern_version = Sha256Hex(pattern.weights);
  ASSERT_NE(qv_version, pattern_version);
  const GoldenCase qv_golden = Golden("llama-tiny/lora-qv-r8")[0];
  const GoldenCase pattern_golden = Golden("llama-tiny/lora-pattern")[0];
  ASSERT_EQ(qv_golden.prompt, pattern_golden.prompt);
  ASSERT_NE(qv_golden.tokens, pattern_golden.tokens) << "the test could not tell them apart";

  // Uploaded through A, served by B.
  v1::AdapterInfo info;
  grpc::Status status = Upload(*a_->adapters, "task", qv, &info);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(info.version(), qv_version);
  const v1::GenerateRequest request = MakeGenerate("task", qv_golden.prompt, kGoldenSteps);
  GenerateOutcome out = Generate(*b_->inference, request);
  ASSERT_TRUE(out.status.ok()) << out.status.error_message();
  EXPECT_EQ(out.tokens, qv_golden.tokens);
  EXPECT_EQ(out.last.adapter_version(), qv_version);
  // A serves it too, so the old version is resident in A's cache before it changes.
  out = Generate(*a_->inference, request);
  ASSERT_TRUE(out.status.ok()) << out.status.error_message();
  EXPECT_EQ(out.tokens, qv_golden.tokens);

  // A new version under the same name, through B: A's next request runs it.
  status = Upload(*b_->adapters, "task", pattern, &info);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(info.version(), pattern_version);
  out = Generate(*a_->inference, request);
  ASSERT_TRUE(out.status.ok()) << out.status.error_message();
  EXPECT_EQ(out.tokens, pattern_golden.tokens);
  EXPECT_EQ(out.last.adapter_version(), pattern_version);
  ASSERT_TRUE(GetAdapter(*a_->adapters, "task", &info).ok());
  EXPECT_EQ(info.version(), pattern_version);
  // The old version stays addressable by digest on both.
  for (Replica* replica : {a_.get(), b_.get()}) {
    out = Generate(*replica->inference,
                   MakeGenerate("task@" + qv_version, qv_golden.prompt, kGoldenSteps));
    ASSERT_TRUE(out.status.ok()) << out.status.error_message();
    EXPECT_EQ(out.tokens, qv_golden.tokens);
    EXPECT_EQ(out.last.adapter_version(), qv_version);
  }

  // A second name, so the listings have something left after the delete.
  status = Upload(*b_->adapters, "other", ReadAdapter("dora-qkvo-r8"), &info);
  ASSERT_TRUE(status.ok()) << status.error_message();
  const std::string other = "other@" + info.version();
  EXPECT_EQ(Listing(*a_->adapters), Listing(*b_->adapters));
  EXPECT_EQ(Listing(*a_->adapters), (std::vector<std::string>{other, "task@" + pattern_version}));

  // Deleted through A: B answers NOT_FOUND for inference and admin alike.
  status = DeleteAdapter(*a_->adapters, "task");
  ASSERT_TRUE(status.ok()) << status.error_message();
  out = Generate(*b_->inference, request);
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::NOT_FOUND) << out.status.error_message();
  EXPECT_EQ(GetAdapter(*b_->adapters, "task", &info).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(DeleteAdapter(*b_->adapters, "task").error_code(), grpc::StatusCode::NOT_FOUND);
  out = Generate(*a_->inference, request);
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::NOT_FOUND) << out.status.error_message();
  EXPECT_EQ(Listing(*a_->adapters), Listing(*b_->adapters));
  EXPECT_EQ(Listing(*b_->adapters), std::vector<std::string>{other});

  // Neither restarted along the way.
  EXPECT_FALSE(a_->process.WaitExit(0).has_value()) << a_->process.Log();
  EXPECT_FALSE(b_->process.WaitExit(0).has_value()) << b_->process.Log();
}

}  // namespace
}  // namespace loramux::testing
