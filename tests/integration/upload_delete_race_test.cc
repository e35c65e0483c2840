// Upload / Delete / Generate races on one name give only the documented outcomes (issue 12,
// finding 9; the semantics are in adapters/adapter_store.h):
//   - an Upload of a valid adapter succeeds whatever else happens to the name;
//   - Delete succeeds or finds the name absent (NOT_FOUND);
//   - Generate either serves a version that was uploaded or gets NOT_FOUND: never DATA_LOSS or
//     INTERNAL;
// and afterwards the store is consistent: the name is either absent or its CURRENT names a
// complete version, every version directory is complete, and no staged bytes are left behind.
//
// Runs the real loramux_server on loopback: two uploaders (two different adapters), one deleter
// and one generator hammer one name for a bounded time.
#include <atomic>
#include <filesystem>
#include <iostream>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/sha256.h"
#include "gtest/gtest.h"
#include "tests/integration/server_harness.h"

namespace loramux::testing {
namespace {

namespace fs = std::filesystem;

constexpr char kName[] = "contested";
constexpr auto kRaceTime = std::chrono::seconds(5);

// Outcomes by RPC and code, with one example message per pair.
class Outcomes {
 public:
  void Add(const std::string& rpc, const grpc::Status& status) {
    std::lock_guard<std::mutex> lock(mu_);
    auto& entry = counts_[{rpc, status.error_code()}];
    if (entry.first++ == 0) entry.second = status.error_message();
  }
  int Count(const std::string& rpc, grpc::StatusCode code) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = counts_.find({rpc, code});
    return it == counts_.end() ? 0 : it->second.first;
  }
  // Adds a failure for every outcome of `rpc` not in `allowed`.
  void ExpectOnly(const std::string& rpc, const std::set<grpc::StatusCode>& allowed) const {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [key, entry] : counts_) {
      if (key.first != rpc || allowed.count(key.second)) continue;
      ADD_FAILURE() << rpc << " ended " << entry.first << " times with code " << key.second
                    << ", e.g.: " << entry.second;
    }
  }

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, grpc::StatusCode>, std::pair<int, std::string>> counts_;
};

// Checks one version directory: all three files, the weights hashing to the directory's name.
void ExpectCompleteVersion(const fs::path& dir) {
  const std::string version = dir.filename().string();
  EXPECT_TRUE(fs::is_regular_file(dir / "MANIFEST.json")) << dir;
  EXPECT_TRUE(fs::is_regular_file(dir / "adapter_config.json")) << dir;
  const std::string weights = ReadFile((dir / "adapter_model.safetensors").string());
  EXPECT_EQ(Sha256Hex(weights), version) << dir << " holds incomplete or wrong weights";
}

TEST(UploadDeleteRaceTest, EveryOutcomeIsAllowedAndTheStoreStaysConsistent) {
  ServerProcess server({});
  ASSERT_TRUE(server.ok()) << server.Log();
  auto channel = Connect(server.address());
  auto adapters = v1::Adapters::NewStub(channel);
  auto inference = v1::Inference::NewStub(channel);
  const AdapterFiles files[2] = {ReadAdapter("lora-qv-r8"), ReadAdapter("lora-all-r4-rslora")};
  const std::set<std::string> versions = {Sha256Hex(files[0].weights), Sha256Hex(files[1].weights)};

  Outcomes outcomes;
  std::atomic<int> served_unknown_version{0};
  const auto end = Clock::now() + kRaceTime;
  std::vector<std::thread> threads;
  for (int u = 0; u < 2; ++u) {
    threads.emplace_back([&, u] {
      while (Clock::now() < end) {
        v1::AdapterInfo info;
        outcomes.Add("Upload", Upload(*adapters, kName, files[u], &info));
      }
    });
  }
  threads.emplace_back([&] {
    while (Clock::now() < end) outcomes.Add("Delete", DeleteAdapter(*adapters, kName));
  });
  threads.emplace_back([&] {
    while (Clock::now() < end) {
      GenerateOutcome out = Generate(*inference, MakeGenerate(kName, {1, 2, 3, 4}, 2));
      outcomes.Add("Generate", out.status);
      if (out.status.ok() && !versions.count(out.last.adapter_version())) ++served_unknown_version;
    }
  });
  for (std::thread& t : threads) t.join();
  if (outcomes.Count("Upload", grpc::StatusCode::UNAVAILABLE) > 0) {
    ADD_FAILURE() << "the server went away; its log:\n" << server.Log();
  }

  std::cout << "uploads OK " << outcomes.Count("Upload", grpc::StatusCode::OK) << "; deletes OK "
            << outcomes.Count("Delete", grpc::StatusCode::OK) << ", NOT_FOUND "
            << outcomes.Count("Delete", grpc::StatusCode::NOT_FOUND) << "; generates OK "
            << outcomes.Count("Generate", grpc::StatusCode::OK) << ", NOT_FOUND "
            << outcomes.Count("Generate", grpc::StatusCode::NOT_FOUND) << "\n";
  // The race really happened: each kind of call ran, and both outcomes of Delete occurred.
  EXPECT_GT(outcomes.Count("Upload", grpc::StatusCode::OK), 10);
  EXPECT_GT(outcomes.Count("Delete", grpc::StatusCode::OK), 3);
  EXPECT_GT(outcomes.Count("Generate", grpc::StatusCode::OK) +
                outcomes.Count("Generate", grpc::StatusCode::NOT_FOUND),
            3);
  outcomes.ExpectOnly("Upload", {grpc::StatusCode::OK});
  outcomes.ExpectOnly("Delete", {grpc::StatusCode::OK, grpc::StatusCode::NOT_FOUND});
  outcomes.ExpectOnly("Generate", {grpc::StatusCode::OK, grpc::StatusCode::NOT_FOUND});
  EXPECT_EQ(served_unknown_version.load(), 0);

  // The store as the race left it (every call has returned).
  const fs::path store = fs::path(server.dir()) / "store";
  const fs::path name_dir = store / "adapters" / kName;
  if (fs::exists(name_dir / "CURRENT")) {
    std::string current = ReadFile((name_dir / "CURRENT").string());
    while (!current.empty() && std::isspace(static_cast<unsigned char>(current.back()))) {
      current.pop_back();
    }
    EXPECT_TRUE(versions.count(current)) << "CURRENT holds \"" << current << "\"";
    EXPECT_TRUE(fs::is_directory(name_dir / "versions" / current))
        << "CURRENT names a missing version " << current;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(name_dir / "versions", ec)) {
      ExpectCompleteVersion(entry.path());
    }
  } else {
    EXPECT_FALSE(fs::exists(name_dir)) << "the name has no CURRENT but its directory remains";
  }
  int staged = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(store / "tmp", ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_regular_file() && it->path().extension() != ".lock") ++staged;
  }
  EXPECT_EQ(staged, 0) << "staged files left behind under " << store / "tmp";

  // The name works afterwards: upload, serve, delete, absent.
  v1::AdapterInfo info;
  ASSERT_TRUE(Upload(*adapters, kName, files[0], &info).ok());
  EXPECT_TRUE(Generate(*inference, MakeGenerate(kName, {1, 2, 3, 4}, 2)).status.ok());
  EXPECT_TRUE(DeleteAdapter(*adapters, kName).ok());
  EXPECT_EQ(Generate(*inference, MakeGenerate(kName, {1, 2, 3, 4}, 2)).status.error_code(),
            grpc::StatusCode::NOT_FOUND);
}

}  // namespace
}  // namespace loramux::testing
