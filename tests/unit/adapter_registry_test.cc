// The adapter registry against a fake base (adapters/base_modules.h): no model is loaded, only the
// module shapes an adapter must fit. Loads, residency, the device budget, pins, validation and
// deletes, through a real store on disk.
#include "adapters/adapter_registry.h"

#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/notification.h"
#include "adapters/adapter_weights.h"
#include "adapters/base_modules.h"
#include "common/sha256.h"
#include "tests/status_matchers.h"
#include "tests/test_util.h"

namespace loramux {
namespace {

using ::loramux::testing::DataPath;
using ::loramux::testing::ReadFile;
using ::testing::HasSubstr;

// A base with llama-tiny's module shapes (hidden `hidden`, intermediate 176, 2 layers, 4 heads of
// 16, 2 KV heads) and random weights.
class FakeBase final : public BaseModules {
 public:
  explicit FakeBase(int64_t hidden = 64) {
    const int64_t kv = 32, inter = 176;
    const int64_t shapes[kNumProjections][2] = {{hidden, hidden}, {kv, hidden},    {kv, hidden},
                                                {hidden, hidden}, {inter, hidden}, {inter, hidden},
                                                {hidden, inter}};
    torch::manual_seed(3);
    for (int64_t layer = 0; layer < 2; ++layer) {
      for (int64_t p = 0; p < kNumProjections; ++p) {
        paths_.push_back(ModulePath(layer, static_cast<Projection>(p)));
        index_[paths_.back()] = ModuleIndex(layer, static_cast<Projection>(p));
        weights_.push_back(torch::randn({shapes[p][0], shapes[p][1]}));
      }
    }
  }
  int64_t num_layers() const override { return 2; }
  const std::vector<std::string>& module_paths() const override { return paths_; }
  int64_t ModuleIndexOf(const std::string& path) const override {
    auto it = index_.find(path);
    return it == index_.end() ? -1 : it->second;
  }
  torch::Tensor module_weight(int64_t index) const override { return weights_[index]; }
  torch::Device device() const override { return torch::kCPU; }
  torch::ScalarType dtype() const override { return torch::kFloat32; }

 private:
  std::vector<std::string> paths_;
  absl::flat_hash_map<std::string, int64_t> index_;
  std::vector<torch::Tensor> weights_;
};

class AdapterRegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/registry_test_" + std::to_string(::getpid());
    std::filesystem::remove_all(dir_);
    store_ = *AdapterStore::Open(dir_);
  }
  void TearDown() override {
    registry_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  void StartRegistry(int64_t max_device_bytes = 1 << 30) {
    AdapterRegistryOptions options;
    options.max_device_bytes = max_device_bytes;
    registry_ = std::make_unique<AdapterRegistry>(*store_, base_, options);
  }
  // Stores tests/data/adapters/<source> as `name`, validated against the fake base.
  absl::StatusOr<StoredAdapter> Put(const std::string& name, const std::string& source) {
    AdapterManifest manifest;
    manifest.name = name;
    manifest.config_json = ReadFile(DataPath("adapters/" + source + "/adapter_config.json"));
    const std::string weights =
        ReadFile(DataPath("adapters/" + source + "/adapter_model.safetensors"));
    manifest.size_bytes = weights.size();
    manifest.sha256 = Sha256Hex(weights);
    return store_->Put(manifest, weights, registry_->Validator());
  }
  // Acquire as the scheduler does: ask, wait for the loader, ask again.
  AdapterRegistry::Lease AcquireLoaded(const StoredAdapter& adapter) {
    absl::Notification ready;
    AdapterRegistry::Lease lease = registry_->Acquire(adapter, [&] { ready.Notify(); });
    if (lease.weights || !lease.status.ok()) return lease;
    EXPECT_TRUE(ready.WaitForNotificationWithTimeout(absl::Seconds(30)));
    return registry_->Acquire(adapter, nullptr);
  }

  FakeBase base_;
  std::string dir_;
  std::unique_ptr<AdapterStore> store_;
  std::unique_ptr<AdapterRegistry> registry_;
};

TEST_F(AdapterRegistryTest, AcquireLoadsOnceAndKeepsItResident) {
  StartRegistry();
  const StoredAdapter sql = *Put("sql", "lora-qv-r8");
  EXPECT_EQ(registry_->Describe("sql")->residency, Residency::kStored);
  AdapterRegistry::Lease lease = AcquireLoaded(sql);
  ASSERT_THAT(lease.status, IsOk());
  ASSERT_NE(lease.weights, nullptr);
  const absl::StatusOr<AdapterStatus> status = registry_->Describe("sql");
  EXPECT_EQ(status->residency, Residency::kDevice);
  EXPECT_EQ(status->rank, 8);
  AdapterRegistry::Lease again = registry_->Acquire(sql, nullptr);
  EXPECT_EQ(again.weights, lease.weights);  // the same resident copy
  EXPECT_EQ(registry_->stats().loads, 1);
  registry_->Release({"sql", sql.version});
  registry_->Release({"sql", sql.version});
}

TEST_F(AdapterRegistryTest, TheDeviceBudgetEvictsAdaptersNobodyUses) {
  StartRegistry();
  const StoredAdapter a = *Put("a", "lora-qv-r8");
  const StoredAdapter b = *Put("b", "lora-qv-r8");  // as big as a: the budget holds one
  AcquireLoaded(a);
  registry_->Release({"a", a.version});
  const int64_t one = registry_->stats().device_bytes;
  ASSERT_GT(one, 0);
  registry_.reset();
  StartRegistry(/*max_device_bytes=*/one + 1);  // room for one of them
  AcquireLoaded(a);
  registry_->Release({"a", a.version});
  ASSERT_NE(AcquireLoaded(b).weights, nullptr);
  EXPECT_EQ(registry_->Describe("a")->residency, Residency::kHost);  // evicted from the device
  EXPECT_EQ(registry_->Describe("b")->residency, Residency::kDevice);
  EXPECT_GE(registry_->stats().evictions, 1);
  registry_->Release({"b", b.version});
}

TEST_F(AdapterRegistryTest, PinsLoadsAndUnloads) {
  StartRegistry();
  ASSERT_THAT(Put("sql", "lora-pattern"), IsOk());
  const absl::StatusOr<AdapterStatus> loaded = registry_->Load("sql", /*pin=*/true);
  ASSERT_THAT(loaded, IsOk());
  EXPECT_TRUE(loaded->pinned);
  EXPECT_EQ(loaded->residency, Residency::kDevice);
  const absl::StatusOr<AdapterStatus> unloaded = registry_->Unload("sql");
  ASSERT_THAT(unloaded, IsOk());
  EXPECT_FALSE(unloaded->pinned);
  EXPECT_NE(unloaded->residency, Residency::kDevice);
}

TEST_F(AdapterRegistryTest, AnAdapterThatDoesNotFitTheBaseIsRefusedAtUpload) {
  FakeBase narrow(/*hidden=*/48);
  AdapterRegistryOptions options;
  registry_ = std::make_unique<AdapterRegistry>(*store_, narrow, options);
  EXPECT_THAT(Put("sql", "lora-qv-r8"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("q_proj")));
  EXPECT_THAT(registry_->Resolve("sql"),
              StatusIs(absl::StatusCode::kNotFound));  // nothing published
}

TEST_F(AdapterRegistryTest, ReferencesResolveAndDeletesForget) {
  StartRegistry();
  const StoredAdapter v = *Put("sql", "lora-qv-r8");
  EXPECT_EQ(registry_->Resolve("sql")->version, v.version);
  EXPECT_EQ(registry_->Resolve("sql@" + v.version.substr(0, 8))->version, v.version);
  EXPECT_THAT(registry_->Resolve("nope"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(registry_->Resolve("../x"), StatusIs(absl::StatusCode::kInvalidArgument));
  ASSERT_THAT(registry_->Load("sql", true), IsOk());
  ASSERT_THAT(registry_->Delete("sql"), IsOk());
  EXPECT_THAT(registry_->Resolve("sql"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(registry_->Delete("sql"), StatusIs(absl::StatusCode::kNotFound));
}

}  // namespace
}  // namespace loramux
