#include "adapters/adapter_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/sha256.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"
#include "tests/test_files.h"

namespace loramux {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

using ::loramux::testing::MakeTempDir;
using ::loramux::testing::ReadFile;
using ::loramux::testing::WriteFile;
constexpr char kConfig[] = R"({"r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]})";

std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string out(n, '\0');
  for (char& c : out) c = static_cast<char>(rng());
  return out;
}

AdapterManifest ManifestFor(const std::string& name, const std::string& weights,
                            const std::string& config = kConfig) {
  AdapterManifest m;
  m.name = name;
  m.config_json = config;
  m.size_bytes = weights.size();
  m.sha256 = Sha256Hex(weights);
  return m;
}

// Every path under `root` with its kind, and for files their size and digest: two snapshots are
// equal only when nothing at all was added, removed or changed.
std::map<std::string, std::string> Snapshot(const std::string& root) {
  std::map<std::string, std::string> out;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    const std::string rel = fs::relative(entry.path(), root).string();
    if (entry.is_directory()) {
      out[rel] = "dir";
    } else {
      const std::string data = ReadFile(entry.path().string());
      out[rel] = "file " + std::to_string(data.size()) + " " + Sha256Hex(data);
    }
  }
  return out;
}

class AdapterStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = MakeTempDir();
    ASSERT_NE(root_, "");
    store_ = OpenStore();
  }
  void TearDown() override {
    store_.reset();
    fs::remove_all(root_);
  }

  std::unique_ptr<AdapterStore> OpenStore(AdapterStoreOptions options = {}) {
    auto store = AdapterStore::Open(root_, options);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? std::move(store).value() : nullptr;
  }

  StoredAdapter MustPut(const std::string& name, const std::string& weights,
                        const std::string& config = kConfig) {
    auto stored = store_->Put(ManifestFor(name, weights, config), weights);
    EXPECT_TRUE(stored.ok()) << stored.status();
    return stored.ok() ? *stored : StoredAdapter{};
  }

  bool TmpIsEmpty() const { return fs::is_empty(root_ + "/tmp"); }

  std::string root_;
  std::unique_ptr<AdapterStore> store_;
};

TEST_F(AdapterStoreTest, PutThenCurrent) {
  const std::string weights = RandomBytes(5000, 1);
  const StoredAdapter put = MustPut("sql", weights);
  EXPECT_EQ(put.name, "sql");
  EXPECT_EQ(put.version, Sha256Hex(weights));
  EXPECT_EQ(put.size_bytes, weights.size());
  EXPECT_EQ(put.config_json, kConfig);
  EXPECT_EQ(ReadFile(put.weights_path), weights);
  EXPECT_TRUE(fs::path(put.weights_path).is_absolute());

  auto current = store_->Current("sql");
  ASSERT_TRUE(current.ok()) << current.status();
  EXPECT_EQ(current->version, put.version);
  EXPECT_EQ(current->format, AdapterFormat::kPeft);
  EXPECT_EQ(current->config_json, kConfig);
  EXPECT_EQ(current->weights_path, put.weights_path);
  EXPECT_EQ(ReadFile(root_ + "/adapters/sql/CURRENT"), put.version + "\n");
  EXPECT_TRUE(fs::exists(root_ + "/adapters/sql/versions/" + put.version + "/MANIFEST.json"));
  EXPECT_TRUE(TmpIsEmpty());
  EXPECT_TRUE(store_->Verify(*current).ok());
}

TEST_F(AdapterStoreTest, SeedFormatAndUpperCaseDigestAreKept) {
  const std::string weights = RandomBytes(100, 2);
  AdapterManifest m = ManifestFor("seed-1", weights);
  m.format = AdapterFormat::kSeed;
  for (char& c : m.sha256) c = static_cast<char>(std::toupper(c));
  auto put = store_->Put(m, weights);
  ASSERT_TRUE(put.ok()) << put.status();
  EXPECT_EQ(put->version, Sha256Hex(weights));
  auto current = store_->Current("seed-1");
  ASSERT_TRUE(current.ok());
  EXPECT_EQ(current->format, AdapterFormat::kSeed);
  EXPECT_EQ(AdapterFormatName(current->format), "SEED");
}

TEST_F(AdapterStoreTest, CurrentOfUnknownNameIsNotFound) {
  EXPECT_THAT(store_->Current("nope").status(), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(std::string(store_->Current("nope").status().message()), HasSubstr("\"nope\""));
  EXPECT_THAT(store_->Current("../etc").status(), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(AdapterStoreTest, ResolveByFullDigestAndPrefix) {
  const StoredAdapter v1 = MustPut("chat", RandomBytes(300, 3));
  const StoredAdapter v2 = MustPut("chat", RandomBytes(300, 4));

  auto full = store_->Resolve("chat", v1.version);
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(full->version, v1.version);

  // Eight hex digits make a clash between two random digests vanishingly unlikely.
  std::string upper = v2.version.substr(0, 8);
  for (char& c : upper) c = static_cast<char>(std::toupper(c));
  auto by_prefix = store_->Resolve("chat", upper);
  ASSERT_TRUE(by_prefix.ok()) << by_prefix.status();
  EXPECT_EQ(by_prefix->version, v2.version);

  // A prefix that neither version has: flip the first digit away from both.
  std::string missing = "0";
  for (char c : std::string("0123456789abcdef")) {
    if (c != v1.version[0] && c != v2.version[0]) {
      missing[0] = c;
      break;
    }
  }
  EXPECT_THAT(store_->Resolve("chat", missing).status(), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(store_->Resolve("chat", std::string(64, 'f')).status(),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(store_->Resolve("other", v1.version.substr(0, 8)).status(),
              StatusIs(absl::StatusCode::kNotFound));
  for (const std::string& bad : std::vector<std::string>{"xyz", "", "../0", std::string(65, 'a')}) {
    EXPECT_THAT(store_->Resolve("chat", bad).status(), StatusIs(absl::StatusCode::kInvalidArgument))
        << bad;
  }
}

TEST_F(AdapterStoreTest, AmbiguousPrefixIsInvalidArgument) {
  // 17 digests over 16 possible first digits: at least two share one (pigeonhole).
  std::map<char, int> first_digit_count;
  for (int i = 0; i < 17; ++i) {
    ++first_digit_count[MustPut("many", RandomBytes(64, 100 + i)).version[0]];
  }
  for (const auto& [digit, count] : first_digit_count) {
    auto resolved = store_->Resolve("many", std::string(1, digit));
    if (count > 1) {
      EXPECT_THAT(resolved.status(), StatusIs(absl::StatusCode::kInvalidArgument));
      EXPECT_THAT(std::string(resolved.status().message()), HasSubstr("ambiguous"));
    } else {
      EXPECT_TRUE(resolved.ok()) << resolved.status();
    }
  }
}

TEST_F(AdapterStoreTest, TruncatedUploadIsInvalidArgumentAndChangesNothing) {
  MustPut("sql", RandomBytes(100, 5));
  const auto before = Snapshot(root_);
  const std::string weights = RandomBytes(4000, 6);
  auto upload = store_->BeginUpload(ManifestFor("sql", weights));
  ASSERT_TRUE(upload.ok()) << upload.status();
  ASSERT_TRUE((*upload)->Append(std::string_view(weights).substr(0, 1000)).ok());
  auto committed = (*upload)->Commit(nullptr);
  EXPECT_THAT(committed.status(), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(std::string(committed.status().message()),
              HasSubstr("truncated upload: got 1000 of 4000 bytes"));
  EXPECT_EQ(Snapshot(root_), before);
}

TEST_F(AdapterStoreTest, DigestMismatchIsDataLossAndChangesNothing) {
  const auto before = Snapshot(root_);
  const std::string weights = RandomBytes(4000, 7);
  AdapterManifest m = ManifestFor("sql", weights);
  std::string corrupted = weights;
  corrupted[17] ^= 1;
  auto committed = store_->Put(m, corrupted);
  EXPECT_THAT(committed.status(), StatusIs(absl::StatusCode::kDataLoss));
  const std::string message(committed.status().message());
  EXPECT_THAT(message, HasSubstr(m.sha256));
  EXPECT_THAT(message, HasSubstr(Sha256Hex(corrupted)));
  EXPECT_THAT(message, HasSubstr("\"sql\""));
  EXPECT_EQ(Snapshot(root_), before);
}

TEST_F(AdapterStoreTest, OverLimitIsResourceExhaustedAndChangesNothing) {
  AdapterStoreOptions options;
  options.max_adapter_bytes = 1024;
  store_ = OpenStore(options);
  const auto before = Snapshot(root_);
  const std::string weights = RandomBytes(2048, 8);
  auto upload = store_->BeginUpload(ManifestFor("big", weights));
  EXPECT_THAT(upload.status(), StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(Snapshot(root_), before);
}

TEST_F(AdapterStoreTest, InvalidManifestsAreInvalidArgumentAndChangeNothing) {
  const auto before = Snapshot(root_);
  const std::string weights = RandomBytes(64, 9);
  const std::vector<std::string> bad_names = {
      "", "../x", "a/b", ".hidden", ".", "..", "-rf", "a b", "a\nb", std::string(129, 'a')};
  for (const std::string& name : bad_names) {
    auto upload = store_->BeginUpload(ManifestFor(name, weights));
    EXPECT_THAT(upload.status(), StatusIs(absl::StatusCode::kInvalidArgument)) << name;
    EXPECT_THAT(store_->Current(name).status(), StatusIs(absl::StatusCode::kInvalidArgument))
        << name;
    EXPECT_THAT(store_->Delete(name), StatusIs(absl::StatusCode::kInvalidArgument)) << name;
  }
  EXPECT_TRUE(ValidateAdapterName(std::string(128, 'a')).ok());
  EXPECT_TRUE(ValidateAdapterName("Llama-3.1_sql.v2").ok());

  AdapterManifest bad_digest = ManifestFor("ok", weights);
  bad_digest.sha256 = std::string(64, 'g');
  AdapterManifest short_digest = ManifestFor("ok", weights);
  short_digest.sha256.pop_back();
  AdapterManifest empty_size = ManifestFor("ok", weights);
  empty_size.size_bytes = 0;
  AdapterManifest empty_config = ManifestFor("ok", weights, "");
  AdapterManifest huge_config = ManifestFor("ok", weights, std::string((1 << 20) + 1, ' '));
  for (const AdapterManifest& m :
       {bad_digest, short_digest, empty_size, empty_config, huge_config}) {
    EXPECT_THAT(store_->BeginUpload(m).status(), StatusIs(absl::StatusCode::kInvalidArgument));
  }
  EXPECT_EQ(Snapshot(root_), before);
}

TEST_F(AdapterStoreTest, ValidatorFailureIsReturnedUnchangedAndChangesNothing) {
  MustPut("sql", RandomBytes(100, 10));
  const auto before = Snapshot(root_);
  const std::string weights = RandomBytes(3000, 11);
  std::string seen_weights;
  AdapterValidator validator = [&](const AdapterManifest& m, const std::string& path) {
    EXPECT_EQ(m.name, "sql");
    seen_weights = ReadFile(path);
    return absl::FailedPreconditionError(
        "adapter \"sql\": lora_A has shape [8,96], base expects [8,64]");
  };
  auto committed = store_->Put(ManifestFor("sql", weights), weights, validator);
  EXPECT_EQ(committed.status(),
            absl::FailedPreconditionError(
                "adapter \"sql\": lora_A has shape [8,96], base expects [8,64]"));
  EXPECT_EQ(seen_weights, weights);
  EXPECT_EQ(Snapshot(root_), before);
}

TEST_F(AdapterStoreTest, BytesBeyondDeclaredSizeAreInvalidArgument) {
  const auto before = Snapshot(root_);
  const std::string weights = RandomBytes(1000, 12);
  auto upload = store_->BeginUpload(ManifestFor("sql", weights));
  ASSERT_TRUE(upload.ok());
  ASSERT_TRUE((*upload)->Append(weights).ok());
  absl::Status extra = (*upload)->Append("x");
  EXPECT_THAT(extra, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(std::string(extra.message()), HasSubstr("size_bytes=1000"));
  // The failed upload is over and already cleaned, before it is even destroyed.
  EXPECT_THAT((*upload)->Commit(nullptr).status(), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(Snapshot(root_), before);
}

TEST_F(AdapterStoreTest, AbandonedUploadLeavesNothing) {
  const auto before = Snapshot(root_);
  const std::string weights = RandomBytes(1000, 13);
  {
    auto upload = store_->BeginUpload(ManifestFor("sql", weights));
    ASSERT_TRUE(upload.ok());
    ASSERT_TRUE((*upload)->Append(weights.substr(0, 500)).ok());
    EXPECT_FALSE(TmpIsEmpty());
  }
  EXPECT_EQ(Snapshot(root_), before);
}

TEST_F(AdapterStoreTest, ChunkedUploadMatchesOneShot) {
  const std::string weights = RandomBytes(100000, 14);
  auto upload = store_->BeginUpload(ManifestFor("chunky", weights));
  ASSERT_TRUE(upload.ok());
  for (size_t off = 0; off < weights.size(); off += 7777) {
    ASSERT_TRUE((*upload)->Append(std::string_view(weights).substr(off, 7777)).ok());
  }
  auto committed = (*upload)->Commit(nullptr);
  ASSERT_TRUE(committed.ok()) << committed.status();
  EXPECT_EQ(ReadFile(committed->weights_path), weights);
  EXPECT_THAT((*upload)->Append("x"), StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_F(AdapterStoreTest, HotSwapKeepsOldVersionResolvable) {
  const StoredAdapter v1 = MustPut("sql", RandomBytes(500, 15));
  ASSERT_EQ(store_->Current("sql")->version, v1.version);
  const StoredAdapter v2 = MustPut("sql", RandomBytes(600, 16), R"({"r": 4})");
  auto current = store_->Current("sql");
  ASSERT_TRUE(current.ok());
  EXPECT_EQ(current->version, v2.version);
  EXPECT_EQ(current->config_json, R"({"r": 4})");
  auto old = store_->Resolve("sql", v1.version);
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_EQ(old->config_json, kConfig);
  EXPECT_TRUE(store_->Verify(*old).ok());
}

TEST_F(AdapterStoreTest, ReuploadOfSameVersionIsIdempotentButConfigConflictIsAlreadyExists) {
  const std::string w1 = RandomBytes(500, 17);
  const StoredAdapter v1 = MustPut("sql", w1);
  const StoredAdapter v2 = MustPut("sql", RandomBytes(500, 18));
  // Same weights and config again: fine, and it becomes current again.
  const StoredAdapter again = MustPut("sql", w1);
  EXPECT_EQ(again.version, v1.version);
  EXPECT_EQ(again.created, v1.created);
  EXPECT_EQ(store_->Current("sql")->version, v1.version);

  const auto before = Snapshot(root_);
  auto conflict = store_->Put(ManifestFor("sql", w1, R"({"r": 2})"), w1);
  EXPECT_THAT(conflict.status(), StatusIs(absl::StatusCode::kAlreadyExists));
  EXPECT_EQ(Snapshot(root_), before);
  EXPECT_EQ(store_->Current("sql")->version, v1.version);
  (void)v2;
}

TEST_F(AdapterStoreTest, ConcurrentUploadsOfOneNameBothSucceed) {
  constexpr int kRounds = 8;
  std::vector<std::string> versions[2];
  auto uploader = [&](int who) {
    for (int i = 0; i < kRounds; ++i) {
      const std::string weights = RandomBytes(20000 + i, 1000 * (who + 1) + i);
      auto stored = store_->Put(ManifestFor("shared", weights), weights);
      ASSERT_TRUE(stored.ok()) << stored.status();
      versions[who].push_back(stored->version);
    }
  };
  std::thread a(uploader, 0), b(uploader, 1);
  a.join();
  b.join();
  ASSERT_EQ(versions[0].size(), kRounds);
  ASSERT_EQ(versions[1].size(), kRounds);
  for (const auto& list : versions) {
    for (const std::string& v : list) {
      auto resolved = store_->Resolve("shared", v);
      ASSERT_TRUE(resolved.ok()) << resolved.status();
      EXPECT_TRUE(store_->Verify(*resolved).ok());
    }
  }
  auto current = store_->Current("shared");
  ASSERT_TRUE(current.ok());
  EXPECT_TRUE(current->version == versions[0].back() || current->version == versions[1].back());
  EXPECT_TRUE(TmpIsEmpty());
  // No CURRENT.tmp-* left behind by either writer.
  for (const auto& entry : fs::directory_iterator(root_ + "/adapters/shared")) {
    EXPECT_THAT(entry.path().filename().string(), ::testing::AnyOf("CURRENT", "versions"));
  }
}

// Deletes hammering a name never make an upload of it fail: the name's lock is not removed with
// the name, so an upload waiting behind a delete keeps its place instead of starting over.
TEST_F(AdapterStoreTest, UploadsRacingDeletesAllSucceed) {
  constexpr int kUploaders = 8, kDeleters = 2, kRounds = 50;
  std::atomic<int> uploaders_left{kUploaders};
  std::atomic<int> deleted{0};
  std::vector<std::thread> threads;
  for (int who = 0; who < kUploaders; ++who) {
    threads.emplace_back([&, who] {
      for (int i = 0; i < kRounds; ++i) {
        const std::string weights = RandomBytes(2000, 7000 * (who + 1) + i);
        auto stored = store_->Put(ManifestFor("contested", weights), weights);
        EXPECT_TRUE(stored.ok()) << stored.status();
      }
      --uploaders_left;
    });
  }
  for (int d = 0; d < kDeleters; ++d) {
    threads.emplace_back([&] {
      // For as long as the uploads go on (each uploader makes kRounds attempts; a deadline bounds
      // the loop should they hang). Each delete either removes an upload's name or finds it absent
      // and yields to the uploaders. (A count of attempts ran out before the first upload was
      // stored on a busy fresh machine: 0 deletes.)
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
      while (uploaders_left > 0 && std::chrono::steady_clock::now() < deadline) {
        absl::Status status = store_->Delete("contested");
        EXPECT_TRUE(status.ok() || absl::IsNotFound(status)) << status;
        if (status.ok()) {
          ++deleted;
        } else {
          std::this_thread::yield();
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_GT(deleted.load(), 0);
  EXPECT_TRUE(TmpIsEmpty());
  // Nothing but the name's lock is left in locks/, and reopening drops it once the name is gone.
  if (store_->Current("contested").ok()) ASSERT_TRUE(store_->Delete("contested").ok());
  store_ = OpenStore();
  EXPECT_TRUE(fs::is_empty(root_ + "/locks"));
  EXPECT_TRUE(fs::is_empty(root_ + "/adapters"));
}

TEST_F(AdapterStoreTest, SecondInstanceSeesChangesWithoutReopening) {
  std::unique_ptr<AdapterStore> other = OpenStore();  // as another server process would
  EXPECT_THAT(other->Current("sql").status(), StatusIs(absl::StatusCode::kNotFound));
  const StoredAdapter v1 = MustPut("sql", RandomBytes(500, 19));
  EXPECT_EQ(other->Current("sql")->version, v1.version);
  EXPECT_EQ(other->Current("sql")->version, v1.version);  // from its cache
  const StoredAdapter v2 = MustPut("sql", RandomBytes(500, 20));
  EXPECT_EQ(other->Current("sql")->version, v2.version);
  ASSERT_TRUE(store_->Delete("sql").ok());
  EXPECT_THAT(other->Current("sql").status(), StatusIs(absl::StatusCode::kNotFound));
  const StoredAdapter v3 = MustPut("sql", RandomBytes(500, 21));
  EXPECT_EQ(other->Current("sql")->version, v3.version);
}

TEST_F(AdapterStoreTest, DeleteRemovesTheName) {
  const StoredAdapter v1 = MustPut("sql", RandomBytes(500, 22));
  MustPut("keep", RandomBytes(500, 23));
  ASSERT_TRUE(store_->Current("sql").ok());
  ASSERT_TRUE(store_->Delete("sql").ok());
  EXPECT_THAT(store_->Current("sql").status(), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(store_->Resolve("sql", v1.version).status(), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(store_->Delete("sql"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_FALSE(fs::exists(root_ + "/adapters/sql"));
  auto page = store_->List("", 0);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->adapters.size(), 1u);
  EXPECT_EQ(page->adapters[0].name, "keep");
}

TEST_F(AdapterStoreTest, ListPagesInNameOrder) {
  std::vector<std::string> names;
  for (int i = 0; i < 250; ++i) names.push_back("adapter-" + std::to_string(i));
  for (int i = 0; i < 250; ++i) MustPut(names[i], RandomBytes(16, 5000 + i));
  std::sort(names.begin(), names.end());

  std::vector<std::string> listed;
  std::vector<size_t> page_sizes;
  std::string token;
  do {
    auto page = store_->List(token, 100);
    ASSERT_TRUE(page.ok()) << page.status();
    page_sizes.push_back(page->adapters.size());
    for (const StoredAdapter& a : page->adapters) listed.push_back(a.name);
    token = page->next_page_token;
  } while (!token.empty());
  EXPECT_EQ(page_sizes, (std::vector<size_t>{100, 100, 50}));
  EXPECT_EQ(listed, names);
  EXPECT_THAT(store_->List("../x", 10).status(), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(AdapterStoreTest, DanglingCurrentMeansAbsent) {
  MustPut("good", RandomBytes(50, 24));
  fs::create_directories(root_ + "/adapters/ghost");
  WriteFile(root_ + "/adapters/ghost/CURRENT", std::string(64, 'a') + "\n");
  EXPECT_THAT(store_->Current("ghost").status(), StatusIs(absl::StatusCode::kNotFound));
  auto page = store_->List("", 10);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->adapters.size(), 1u);
  EXPECT_EQ(page->adapters[0].name, "good");
}

TEST_F(AdapterStoreTest, OpenCleansLeftovers) {
  const StoredAdapter kept = MustPut("sql", RandomBytes(50, 25));
  const auto clean = Snapshot(root_);
  fs::create_directories(root_ + "/tmp/dead-upload");
  WriteFile(root_ + "/tmp/dead-upload/adapter_model.safetensors", "partial");
  fs::create_directories(root_ + "/tmp/dead-locked");
  WriteFile(root_ + "/tmp/dead-locked.lock", "");
  WriteFile(root_ + "/tmp/stray-file", "x");
  WriteFile(root_ + "/adapters/sql/CURRENT.tmp-123-4-deadbeef", std::string(64, 'b'));
  fs::create_directories(root_ + "/adapters/half/versions");  // died before publishing
  WriteFile(root_ + "/locks/gone.lock", "");                  // its name was deleted
  ASSERT_NE(Snapshot(root_), clean);

  store_ = OpenStore();
  EXPECT_EQ(Snapshot(root_), clean);
  EXPECT_EQ(store_->Current("sql")->version, kept.version);
}

TEST_F(AdapterStoreTest, OpenKeepsTheStagingOfALiveUpload) {
  const std::string weights = RandomBytes(3000, 26);
  auto upload = store_->BeginUpload(ManifestFor("sql", weights));
  ASSERT_TRUE(upload.ok());
  ASSERT_TRUE((*upload)->Append(weights.substr(0, 1000)).ok());
  std::unique_ptr<AdapterStore> other = OpenStore();  // another replica starting up
  ASSERT_TRUE((*upload)->Append(weights.substr(1000)).ok());
  auto committed = (*upload)->Commit(nullptr);
  ASSERT_TRUE(committed.ok()) << committed.status();
  EXPECT_EQ(other->Current("sql")->version, Sha256Hex(weights));
}

TEST_F(AdapterStoreTest, VerifyDetectsTamperedWeights) {
  const std::string weights = RandomBytes(5000, 27);
  const StoredAdapter stored = MustPut("sql", weights);
  ASSERT_TRUE(store_->Verify(stored).ok());
  std::string tampered = weights;
  tampered[100] ^= 0x40;
  ::chmod(stored.weights_path.c_str(), 0644);
  WriteFile(stored.weights_path, tampered);
  absl::Status verified = store_->Verify(stored);
  EXPECT_THAT(verified, StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(std::string(verified.message()), HasSubstr(Sha256Hex(tampered)));
}

}  // namespace
}  // namespace loramux
