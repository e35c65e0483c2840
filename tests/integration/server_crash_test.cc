// Kills the real loramux_server with SIGKILL at random moments while clients upload adapters,
// restarting it on the same store each round, then checks through the Adapters API and the files
// on disk that every upload the server acknowledged survived intact, that every version on disk
// is complete (its weights hash to its name), that the staging area was emptied, and that an
// acknowledged adapter still serves.
//
// The rounds, the kill times and the names uploaded come from a fixed seed; what a kill
// interrupts still depends on timing, which is the point.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "common/sha256.h"
#include "gtest/gtest.h"
#include "loramux/v1/loramux.grpc.pb.h"
#include "tests/integration/server_harness.h"

namespace loramux::testing {
namespace {

namespace fs = std::filesystem;

constexpr int kRounds = 12;
constexpr int kClientThreads = 2;
constexpr int kNames = 6;  // "c0".."c5"
constexpr int kMinKillMs = 50, kMaxKillMs = 400;
constexpr uint32_t kSeed = 20240611;

// lora-qv-r8 with one float of a lora_B tensor changed per `serial`, so that each variant has its
// own digest while staying a valid, finite adapter close to the original.
class AdapterVariants {
 public:
  AdapterVariants() : files_(ReadAdapter("lora-qv-r8")) {
    const std::string& weights = files_.weights;
    if (weights.size() < 8) return;
    uint64_t header_len = 0;  // safetensors: u64 little-endian header length, then JSON
    for (int i = 0; i < 8; ++i) {
      header_len |= static_cast<uint64_t>(static_cast<unsigned char>(weights[i])) << (8 * i);
    }
    if (8 + header_len > weights.size()) return;
    const nlohmann::json header = nlohmann::json::parse(weights.substr(8, header_len), nullptr,
                                                        /*allow_exceptions=*/false);
    if (!header.is_object()) return;
    for (const auto& [name, entry] : header.items()) {
      if (name.find("lora_B") == std::string::npos || entry.value("dtype", "") != "F32") continue;
      const uint64_t begin = entry.at("data_offsets").at(0).get<uint64_t>();
      const uint64_t end = entry.at("data_offsets").at(1).get<uint64_t>();
      if (end - begin < sizeof(float) || 8 + header_len + end > weights.size()) continue;
      offset_ = static_cast<size_t>(8 + header_len + begin);
      tensor_ = name;
      break;
    }
  }

  bool ok() const { return offset_ != 0; }
  const std::string& tensor() const { return tensor_; }
  const std::string& config() const { return files_.config; }

  AdapterFiles Make(uint64_t serial) const {
    AdapterFiles out = files_;
    float value;
    std::memcpy(&value, out.weights.data() + offset_, sizeof(float));
    value += 1e-4f * static_cast<float>(serial);  // distinct for every serial we reach
    std::memcpy(out.weights.data() + offset_, &value, sizeof(float));
    return out;
  }

 private:
  AdapterFiles files_;
  size_t offset_ = 0;
  std::string tensor_;
};

struct Acknowledged {
  std::string name;
  std::string version;
};

class ServerCrashTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir();
    ASSERT_FALSE(dir_.empty());
    store_ = dir_ + "/store";
  }
  void TearDown() override {
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  std::unique_ptr<ServerProcess> StartServer() {
    return std::make_unique<ServerProcess>(std::vector<std::string>{"--adapter_store=" + store_});
  }

  std::string dir_;
  std::string store_;
};

TEST_F(ServerCrashTest, AcknowledgedUploadsSurviveSigkill) {
  const AdapterVariants variants;
  ASSERT_TRUE(variants.ok()) << "no F32 lora_B tensor found in lora-qv-r8";

  std::mutex mu;
  std::vector<Acknowledged> acknowledged;  // guarded by mu
  std::atomic<uint64_t> next_serial{1};
  std::atomic<int> failed_uploads{0};
  std::mt19937 rng(kSeed);
  const auto started = Clock::now();

  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    std::unique_ptr<ServerProcess> server = StartServer();
    ASSERT_TRUE(server->ok()) << "the server did not restart on the store; its log:\n"
                              << server->Log();
    const std::shared_ptr<grpc::Channel> channel = Connect(server->address());
    const std::unique_ptr<v1::Adapters::Stub> stub = v1::Adapters::NewStub(channel);

    std::atomic<bool> killed{false}, stop{false};
    std::vector<std::thread> clients;
    for (int t = 0; t < kClientThreads; ++t) {
      const uint32_t client_seed = rng();
      clients.emplace_back([&, client_seed] {
        std::mt19937 client_rng(client_seed);
        std::uniform_int_distribution<int> pick(0, kNames - 1);
        while (!stop.load()) {
          const std::string name = "c" + std::to_string(pick(client_rng));
          const AdapterFiles files = variants.Make(next_serial.fetch_add(1));
          const std::string version = Sha256Hex(files.weights);
          v1::AdapterInfo info;
          const grpc::Status status = Upload(*stub, name, files, &info);
          if (!status.ok()) {
            // Expected once the kill is under way; before it, a valid upload must succeed.
            EXPECT_TRUE(killed.load()) << name << ": " << status.error_message();
            ++failed_uploads;
            std::this_thread::sleep_for(std::chrono::milliseconds(5));  // no busy loop
            continue;
          }
          EXPECT_EQ(info.version(), version) << name;
          std::lock_guard<std::mutex> lock(mu);
          acknowledged.push_back({name, version});
        }
      });
    }
    const int kill_after_ms = std::uniform_int_distribution<int>(kMinKillMs, kMaxKillMs)(rng);
    std::this_thread::sleep_for(std::chrono::milliseconds(kill_after_ms));
    killed = true;
    server->Signal(SIGKILL);
    const std::optional<int> code = server->WaitExit(10);
    stop = true;
    for (std::thread& client : clients) client.join();  // each RPC has a 30 s deadline
    ASSERT_TRUE(code.has_value()) << "the server outlived SIGKILL";
    EXPECT_EQ(*code, 128 + SIGKILL);
  }
  const double crash_s = std::chrono::duration<double>(Clock::now() - started).count();
  std::error_code ec;
  int staged_before_restart = 0;
  for (auto it = fs::directory_iterator(store_ + "/tmp", ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    ++staged_before_restart;
  }

  // One last start on the store the crashes left behind.
  std::unique_ptr<ServerProcess> server = StartServer();
  ASSERT_TRUE(server->ok()) << "the server did not start on the crashed store; its log:\n"
                            << server->Log();
  const std::shared_ptr<grpc::Channel> channel = Connect(server->address());
  const std::unique_ptr<v1::Adapters::Stub> adapters = v1::Adapters::NewStub(channel);
  const std::unique_ptr<v1::Inference::Stub> inference = v1::Inference::NewStub(channel);

  ASSERT_FALSE(acknowledged.empty()) << "no upload completed in " << kRounds << " rounds";
  std::printf(
      "%d rounds in %.1f s: %zu uploads acknowledged, %d failed after a kill, %d entries "
      "left in tmp/ by the last kill\n",
      kRounds, crash_s, acknowledged.size(), failed_uploads.load(), staged_before_restart);

  // Every acknowledged version is retrievable, and its files are the bytes uploaded.
  std::set<std::string> acknowledged_names;
  for (const Acknowledged& ack : acknowledged) {
    acknowledged_names.insert(ack.name);
    v1::AdapterInfo info;
    const grpc::Status status = GetAdapter(*adapters, ack.name + "@" + ack.version, &info);
    ASSERT_TRUE(status.ok()) << ack.name << "@" << ack.version << ": " << status.error_message();
    EXPECT_EQ(info.name(), ack.name);
    EXPECT_EQ(info.version(), ack.version);
    const std::string version_dir = store_ + "/adapters/" + ack.name + "/versions/" + ack.version;
    EXPECT_EQ(Sha256Hex(ReadFile(version_dir + "/adapter_model.safetensors")), ack.version)
        << version_dir;
    EXPECT_EQ(ReadFile(version_dir + "/adapter_config.json"), variants.config()) << version_dir;
  }

  // Every name with an acknowledged upload has a current version that resolves.
  std::vector<v1::AdapterInfo> listed;
  ASSERT_TRUE(ListAdapters(*adapters, &listed).ok());
  std::set<std::string> listed_names;
  for (const v1::AdapterInfo& info : listed) listed_names.insert(info.name());
  for (const std::string& name : acknowledged_names) {
    EXPECT_EQ(listed_names.count(name), 1u) << name;
    v1::AdapterInfo info;
    EXPECT_TRUE(GetAdapter(*adapters, name, &info).ok()) << name;
  }

  // Every version directory on disk is complete: its weights hash to its name, its manifest
  // says so, and each CURRENT points at one of them.
  int version_dirs = 0;
  for (const fs::directory_entry& name_dir : fs::directory_iterator(store_ + "/adapters", ec)) {
    const std::string name = name_dir.path().filename().string();
    for (const fs::directory_entry& version_dir :
         fs::directory_iterator(name_dir.path() / "versions", ec)) {
      ++version_dirs;
      const std::string version = version_dir.path().filename().string();
      const std::string path = version_dir.path().string();
      EXPECT_EQ(Sha256Hex(ReadFile(path + "/adapter_model.safetensors")), version) << path;
      const nlohmann::json manifest =
          nlohmann::json::parse(ReadFile(path + "/MANIFEST.json"), nullptr, false);
      ASSERT_TRUE(manifest.is_object()) << path << "/MANIFEST.json";
      EXPECT_EQ(manifest.value("sha256", ""), version) << path;
      EXPECT_EQ(manifest.value("name", ""), name) << path;
    }
    const std::string current_path = name_dir.path().string() + "/CURRENT";
    if (fs::exists(current_path)) {
      std::string current = ReadFile(current_path);
      current.erase(std::remove_if(current.begin(), current.end(), ::isspace), current.end());
      EXPECT_TRUE(fs::is_directory(name_dir.path() / "versions" / current))
          << current_path << " names " << current;
    }
    for (const fs::directory_entry& entry : fs::directory_iterator(name_dir.path(), ec)) {
      EXPECT_EQ(entry.path().filename().string().rfind("CURRENT.tmp", 0), std::string::npos)
          << "a leftover pointer temp file: " << entry.path();
    }
  }
  EXPECT_GE(version_dirs, static_cast<int>(acknowledged.size()));
  std::printf("%d version dirs on disk (%d published but not acknowledged before a kill)\n",
              version_dirs, version_dirs - static_cast<int>(acknowledged.size()));

  // The restart emptied the staging area.
  for (const fs::directory_entry& entry : fs::directory_iterator(store_ + "/tmp", ec)) {
    ADD_FAILURE() << "a leftover in the staging area after the restart: " << entry.path();
  }

  // An acknowledged adapter still serves.
  const Acknowledged& some = acknowledged[acknowledged.size() / 2];
  const GoldenCase golden = Golden("llama-tiny/lora-qv-r8")[0];
  const GenerateOutcome out = Generate(
      *inference, MakeGenerate(some.name + "@" + some.version, golden.prompt, kGoldenSteps));
  ASSERT_TRUE(out.status.ok()) << out.status.error_message();
  EXPECT_EQ(static_cast<int>(out.tokens.size()), kGoldenSteps);
  EXPECT_EQ(out.last.adapter_version(), some.version);
}

}  // namespace
}  // namespace loramux::testing
