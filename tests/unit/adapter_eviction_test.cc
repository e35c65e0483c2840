// The registry's device tier under a budget its in-use adapters already fill: a load that a
// request waited for must stay resident until that request takes it. Evicting it at once (it was
// the only evictable entry) sent the request back to load it again, over and over: the soak test
// saw 14,181 loads for ~3,600 requests and honest requests waiting 18 s.
#include <filesystem>
#include <memory>
#include <string>

#include <gtest/gtest.h>
#include <unistd.h>

#include "absl/synchronization/notification.h"
#include "adapters/adapter_registry.h"
#include "common/sha256.h"
#include "engine/engine.h"
#include "tests/test_util.h"

namespace loramux {
namespace {

using ::loramux::testing::DataPath;
using ::loramux::testing::ReadFile;

class AdapterEvictionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_dir_ = ::testing::TempDir() + "/eviction_store_" + std::to_string(::getpid());
    std::filesystem::remove_all(store_dir_);
  }
  void TearDown() override {
    engine_.reset();
    std::filesystem::remove_all(store_dir_);
  }

  void StartEngine(int64_t max_device_bytes) {
    engine_.reset();
    EngineOptions options;
    options.model_dir = DataPath("llama-tiny");
    options.adapter_store = store_dir_;
    options.registry.max_device_bytes = max_device_bytes;
    auto engine = Engine::Create(options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = *std::move(engine);
  }

  // Uploads lora-qv-r8 under `name`.
  StoredAdapter Upload(const std::string& name) {
    AdapterManifest manifest;
    manifest.name = name;
    manifest.config_json = ReadFile(DataPath("adapters/lora-qv-r8/adapter_config.json"));
    const std::string weights = ReadFile(DataPath("adapters/lora-qv-r8/adapter_model.safetensors"));
    manifest.size_bytes = weights.size();
    manifest.sha256 = Sha256Hex(weights);
    auto stored = engine_->store().Put(manifest, weights, engine_->registry().Validator());
    EXPECT_TRUE(stored.ok()) << stored.status();
    return *stored;
  }

  // Acquire as the scheduler does it: ask, wait for the loader's call, ask again.
  AdapterRegistry::Lease AcquireAfterLoad(const StoredAdapter& adapter) {
    auto ready = std::make_shared<absl::Notification>();
    AdapterRegistry::Lease lease =
        engine_->registry().Acquire(adapter, [ready] { ready->Notify(); });
    EXPECT_TRUE(lease.status.ok()) << lease.status;
    if (lease.weights) return lease;
    EXPECT_TRUE(ready->WaitForNotificationWithTimeout(absl::Seconds(30)));
    return engine_->registry().Acquire(adapter, nullptr);
  }

  std::string store_dir_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(AdapterEvictionTest, AFreshLoadStaysForTheRequestThatWaitedForIt) {
  // The device bytes of one adapter, measured with room to spare.
  StartEngine(int64_t{1} << 30);
  const StoredAdapter probe = Upload("a");
  ASSERT_NE(AcquireAfterLoad(probe).weights, nullptr);
  const int64_t one = engine_->registry().stats().device_bytes;
  ASSERT_GT(one, 0);

  // A budget of exactly one adapter: "a" in use fills it, then "b" is asked for.
  StartEngine(one);
  const StoredAdapter a = engine_->registry().Resolve("a").value();
  const StoredAdapter b = Upload("b");
  ASSERT_NE(AcquireAfterLoad(a).weights, nullptr);
  const RegistryStats before = engine_->registry().stats();
  const AdapterRegistry::Lease lease = AcquireAfterLoad(b);
  ASSERT_TRUE(lease.status.ok()) << lease.status;
  EXPECT_NE(lease.weights, nullptr) << "the load of \"b\" was evicted before its requester took it";
  const RegistryStats after = engine_->registry().stats();
  EXPECT_EQ(after.loads - before.loads, 1);
  EXPECT_EQ(after.device_count, 2);  // over budget while both are in use

  // Released, the tier goes back under its budget.
  engine_->registry().Release({a.name, a.version});
  if (lease.weights) engine_->registry().Release({b.name, b.version});
  EXPECT_EQ(engine_->registry().stats().device_count, 1);
  EXPECT_LE(engine_->registry().stats().device_bytes, one);
}

}  // namespace
}  // namespace loramux
