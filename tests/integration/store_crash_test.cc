// Kills two writer processes at random instants while they upload adapters, then checks that the
// store holds only complete, verified versions, that Open() cleaned every leftover, and that no
// acknowledged upload was lost.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "adapters/adapter_store.h"
#include "common/sha256.h"
#include "gtest/gtest.h"
#include "tests/test_files.h"

namespace loramux {
namespace {

namespace fs = std::filesystem;

using ::loramux::testing::MakeTempDir;
using ::loramux::testing::ReadFile;
constexpr int kRounds = 25;
// The kill windows are stretched by this factor in the ASan build (scripts/test_sanitized.sh),
// where a writer takes 120-160 ms to start and ack its first upload instead of a few ms, so that
// writers still finish uploads between kills.
#if defined(__SANITIZE_ADDRESS__)
constexpr int kSlowdown = 5;
#else
constexpr int kSlowdown = 1;
#endif
constexpr char kWriter[] = LORAMUX_BINARY_DIR "/tests/store_crash_writer";

using Acked = std::map<std::string, std::set<std::string>>;  // name -> versions

struct Writer {
  pid_t pid = -1;
  int stdout_fd = -1;
};

Writer StartWriter(const std::string& root) {
  int out[2];
  if (::pipe(out) != 0) {
    ADD_FAILURE() << "pipe failed";
    return {};
  }
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out[1], STDOUT_FILENO);
    ::close(out[0]);
    ::close(out[1]);
    ::execl(kWriter, kWriter, root.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(out[1]);
  return Writer{pid, out[0]};
}

// SIGKILLs the writer and returns its complete stdout lines.
std::vector<std::string> KillWriter(const Writer& writer) {
  ::kill(writer.pid, SIGKILL);
  int status = 0;
  ::waitpid(writer.pid, &status, 0);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << "the writer exited on its own (status " << status << "); is " << kWriter << " built?";
  std::string text;
  char buffer[4096];
  ssize_t n;
  while ((n = ::read(writer.stdout_fd, buffer, sizeof(buffer))) > 0) text.append(buffer, n);
  ::close(writer.stdout_fd);
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!in.eof()) lines.push_back(line);  // a line cut by the kill has no '\n'
  }
  return lines;
}

void ParseAcks(const std::vector<std::string>& lines, Acked* acked, int* count) {
  for (const std::string& line : lines) {
    std::istringstream in(line);
    std::string tag, name, version;
    in >> tag >> name >> version;
    ASSERT_EQ(tag, "ACK") << "a writer failed an upload: " << line;
    ASSERT_TRUE(IsSha256Hex(version)) << line;
    (*acked)[name].insert(version);
    ++*count;
  }
}

// A version directory must be exactly what the publish protocol writes, with matching digest.
void CheckVersionDir(AdapterStore& store, const std::string& name, const fs::path& dir) {
  const std::string version = dir.filename().string();
  SCOPED_TRACE(dir.string());
  ASSERT_TRUE(IsSha256Hex(version));
  std::set<std::string> files;
  for (const auto& entry : fs::directory_iterator(dir)) files.insert(entry.path().filename());
  EXPECT_EQ(files, (std::set<std::string>{"MANIFEST.json", "adapter_config.json",
                                          "adapter_model.safetensors"}));
  const std::string weights = ReadFile(dir / "adapter_model.safetensors");
  EXPECT_EQ(Sha256Hex(weights), version);
  const nlohmann::json manifest =
      nlohmann::json::parse(ReadFile(dir / "MANIFEST.json"), nullptr, false);
  ASSERT_TRUE(manifest.is_object());
  EXPECT_EQ(manifest.value("name", ""), name);
  EXPECT_EQ(manifest.value("sha256", ""), version);
  EXPECT_EQ(manifest.value("size_bytes", uint64_t{0}), weights.size());
  EXPECT_FALSE(ReadFile(dir / "adapter_config.json").empty());
  auto resolved = store.Resolve(name, version);
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_TRUE(store.Verify(*resolved).ok());
}

// Checks the whole store; version directories listed in `checked` (those a previous round already
// checked, which nothing may change since) are skipped, and the ones checked now are added: each
// round hashes only the new versions, not every version again (quadratic: 319 s under ASan).
// With `checked` null, every version directory is checked.
void CheckStore(AdapterStore& store, const std::string& root, const Acked& acked,
                std::set<std::string>* checked) {
  EXPECT_TRUE(fs::is_empty(fs::path(root) / "tmp"));
  for (const auto& name_entry : fs::directory_iterator(fs::path(root) / "adapters")) {
    const std::string name = name_entry.path().filename();
    SCOPED_TRACE(name);
    for (const auto& entry : fs::directory_iterator(name_entry.path())) {
      const std::string file = entry.path().filename();
      EXPECT_TRUE(file == "CURRENT" || file == "versions") << "leftover " << entry.path();
    }
    const fs::path versions = name_entry.path() / "versions";
    ASSERT_TRUE(fs::is_directory(versions)) << "an empty name dir survived Open()";
    for (const auto& version_dir : fs::directory_iterator(versions)) {
      if (checked != nullptr && !checked->insert(version_dir.path().string()).second) continue;
      CheckVersionDir(store, name, version_dir.path());
    }
    const fs::path current = name_entry.path() / "CURRENT";
    if (fs::exists(current)) {
      const std::string pointer = ReadFile(current);
      ASSERT_EQ(pointer.size(), 65u);
      EXPECT_TRUE(fs::is_directory(versions / pointer.substr(0, 64)));
      auto served = store.Current(name);
      ASSERT_TRUE(served.ok()) << served.status();
      EXPECT_EQ(served->version, pointer.substr(0, 64));
    }
  }
  for (const auto& [name, versions] : acked) {
    EXPECT_TRUE(store.Current(name).ok()) << name << " was acknowledged but is not served";
    for (const std::string& version : versions) {
      EXPECT_TRUE(store.Resolve(name, version).ok())
          << "lost acknowledged " << name << " " << version;
    }
  }
}

int CountCurrentTmpFiles(const std::string& root) {
  int count = 0;
  if (!fs::exists(fs::path(root) / "adapters")) return 0;
  for (const auto& name_dir : fs::directory_iterator(fs::path(root) / "adapters")) {
    for (const auto& entry : fs::directory_iterator(name_dir.path())) {
      count += entry.path().filename().string().rfind("CURRENT.tmp-", 0) == 0;
    }
  }
  return count;
}

TEST(StoreCrashTest, KilledWriterLeavesOnlyCompleteVersions) {
  ASSERT_TRUE(fs::exists(kWriter)) << kWriter << " is missing; build target store_crash_writer";
  const std::string root = MakeTempDir();
  ASSERT_NE(root, "");

  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> stagger_ms(0, 40 * kSlowdown);
  std::uniform_int_distribution<int> run_ms(20 * kSlowdown, 200 * kSlowdown);
  Acked acked;
  std::set<std::string> checked;  // version directories checked by an earlier round
  int acks = 0, rounds_with_leftovers = 0, current_tmp_leftovers = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int round = 0; round < kRounds && !HasFatalFailure(); ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    // Two writers share the store, as replicas would; the second starts (and runs Open()'s
    // cleanup) while the first is mid-upload, which must not disturb it.
    Writer first = StartWriter(root);
    std::this_thread::sleep_for(std::chrono::milliseconds(stagger_ms(rng)));
    Writer second = StartWriter(root);
    std::this_thread::sleep_for(std::chrono::milliseconds(run_ms(rng)));
    ParseAcks(KillWriter(first), &acked, &acks);
    ParseAcks(KillWriter(second), &acked, &acks);
    if (fs::exists(fs::path(root) / "tmp") && !fs::is_empty(fs::path(root) / "tmp")) {
      ++rounds_with_leftovers;
    }
    current_tmp_leftovers += CountCurrentTmpFiles(root);
    auto store = AdapterStore::Open(root);
    ASSERT_TRUE(store.ok()) << store.status();
    // The last round checks every version again: none changed since it was published.
    CheckStore(**store, root, acked, round + 1 < kRounds ? &checked : nullptr);
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf(
      "%d rounds, %d acknowledged uploads, %d rounds left staging and %d CURRENT.tmp-* files "
      "to clean, %.1f s\n",
      kRounds, acks, rounds_with_leftovers, current_tmp_leftovers, seconds);
  EXPECT_GT(acks, 0) << "the writer never finished an upload; the test proved nothing";
  fs::remove_all(root);
}

}  // namespace
}  // namespace loramux
