// Uploads cannot exhaust the server (issue 12, finding 4): past --max_concurrent_uploads an Upload
// is refused with RESOURCE_EXHAUSTED, an upload that goes silent is ended after
// --upload_idle_timeout and its staged bytes are removed, and a stalled upload holds no file
// descriptor, so the server's descriptor count stays flat however many clients stall.
//
// Runs the real loramux_server on loopback. Every wait is bounded (RPC deadlines, polling loops
// with a cap); no assertion depends on how fast the machine is.
#include <dirent.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/integration/server_harness.h"

namespace loramux::testing {
namespace {

namespace fs = std::filesystem;

constexpr int kMaxUploads = 4;
constexpr int kIdleTimeoutS = 3;

// Open file descriptors of process `pid` (its /proc/PID/fd entries).
int CountFds(pid_t pid) {
  int count = 0;
  std::error_code ec;
  for (auto it = fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec);
       !ec && it != fs::directory_iterator(); it.increment(ec)) {
    ++count;
  }
  return count;
}

// Regular files under the store's staging area (tmp/), lock files aside: the bytes that
// uploads in progress, or leaked ones, keep on disk.
int CountStagedFiles(const std::string& store) {
  int count = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(store + "/tmp", ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_regular_file(ec) && it->path().extension() != ".lock") ++count;
  }
  return count;
}

// An Upload that sends its manifest and 1 KiB of weights, then nothing: neither more chunks nor a
// half-close. The stream stays open until the server ends it or the 30 s deadline passes.
class StalledUpload {
 public:
  StalledUpload(v1::Adapters::Stub& stub, const std::string& name, const AdapterFiles& files) {
    context_.set_deadline(In(30));
    writer_ = stub.Upload(&context_, &info_);
    v1::UploadRequest manifest;
    *manifest.mutable_manifest() = Manifest(name, files);
    v1::UploadRequest chunk;
    chunk.set_chunk(files.weights.substr(0, 1024));
    // A refused call may already be closed; Finish tells.
    if (writer_->Write(manifest)) writer_->Write(chunk);
  }
  // Waits for the server's answer (or the client deadline).
  grpc::Status Finish() { return writer_->Finish(); }

 private:
  grpc::ClientContext context_;
  v1::AdapterInfo info_;
  std::unique_ptr<grpc::ClientWriter<v1::UploadRequest>> writer_;
};

class UploadLimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<ServerProcess>(
        std::vector<std::string>{"--max_concurrent_uploads=" + std::to_string(kMaxUploads),
                                 "--upload_idle_timeout=" + std::to_string(kIdleTimeoutS) + "s"});
    ASSERT_TRUE(server_->ok()) << server_->Log();
    // Stalled uploads on one connection, honest calls on another.
    grpc::ChannelArguments own_connection;
    own_connection.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    stalled_channel_ =
        Connect(server_->address(), grpc::InsecureChannelCredentials(), own_connection);
    channel_ = Connect(server_->address(), grpc::InsecureChannelCredentials(), own_connection);
    stalled_stub_ = v1::Adapters::NewStub(stalled_channel_);
    stub_ = v1::Adapters::NewStub(channel_);
    inference_ = v1::Inference::NewStub(channel_);
    files_ = ReadAdapter("lora-qv-r8");
  }

  std::string Store() const { return server_->dir() + "/store"; }

  std::unique_ptr<ServerProcess> server_;
  std::shared_ptr<grpc::Channel> stalled_channel_, channel_;
  std::unique_ptr<v1::Adapters::Stub> stalled_stub_, stub_;
  std::unique_ptr<v1::Inference::Stub> inference_;
  AdapterFiles files_;
};

TEST_F(UploadLimitsTest, StalledUploadsAreBoundedTimedOutAndLeaveNothingBehind) {
  v1::AdapterInfo info;
  // Warm up both connections so the baseline counts their sockets.
  ASSERT_TRUE(Upload(*stub_, "warm", files_, &info).ok());
  ASSERT_TRUE(DeleteAdapter(*stalled_stub_, "warm").ok());
  const int baseline_fds = CountFds(server_->pid());
  ASSERT_GT(baseline_fds, 0);

  // Below the limit: stalled uploads do not stop an honest one (which takes the last slot).
  std::vector<std::unique_ptr<StalledUpload>> stalled;
  for (int i = 0; i < kMaxUploads - 1; ++i) {
    stalled.push_back(
        std::make_unique<StalledUpload>(*stalled_stub_, "stall" + std::to_string(i), files_));
  }
  // Each has staged its 1 KiB (bounded wait for the server to get there).
  for (int i = 0; i < 100 && CountStagedFiles(Store()) < kMaxUploads - 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(CountStagedFiles(Store()), kMaxUploads - 1);
  grpc::Status honest = Upload(*stub_, "honest", files_, &info);
  EXPECT_TRUE(honest.ok()) << honest.error_code() << " " << honest.error_message();

  // Past the limit: with kMaxUploads - 1 stalled and one more taking the free slot, the rest are
  // refused at once with a message naming the flag.
  constexpr int kExtra = 40;
  std::vector<std::unique_ptr<StalledUpload>> extra;
  for (int i = 0; i < kExtra; ++i) {
    extra.push_back(
        std::make_unique<StalledUpload>(*stalled_stub_, "extra" + std::to_string(i), files_));
  }
  // The server holds no descriptor per stalled upload (the old code held two each). Counted once
  // the admitted ones have staged their bytes, and a moment later for the rest to arrive.
  for (int i = 0; i < 100 && CountStagedFiles(Store()) < kMaxUploads; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const int stalled_fds = CountFds(server_->pid());
  EXPECT_LE(stalled_fds, baseline_fds + 8)
      << "baseline " << baseline_fds << " fds, with " << (kMaxUploads + kExtra)
      << " stalled uploads " << stalled_fds;
  // Other calls are served meanwhile.
  GenerateOutcome generated = Generate(*inference_, MakeGenerate("", {1, 2, 3}, 2));
  EXPECT_TRUE(generated.status.ok()) << generated.status.error_message();
  std::vector<v1::AdapterInfo> listed;
  EXPECT_TRUE(ListAdapters(*stub_, &listed).ok());

  int refused = 0, timed_out = 0;
  for (auto& upload : extra) {
    const grpc::Status status = upload->Finish();
    if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      ++refused;
      EXPECT_NE(status.error_message().find("--max_concurrent_uploads"), std::string::npos)
          << status.error_message();
    } else {
      ++timed_out;
    }
  }
  // One of the extras may take the honest upload's slot (if that call was fully gone by then).
  EXPECT_GE(refused, kExtra - 1);
  EXPECT_LE(timed_out, 1);

  // The stalled ones that were admitted end by the server's idle timeout, well before their own
  // 30 s deadline, with a message naming the flag.
  for (auto& upload : stalled) {
    const grpc::Status status = upload->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << status.error_message();
    EXPECT_NE(status.error_message().find("--upload_idle_timeout"), std::string::npos)
        << status.error_message();
  }
  // Their staged bytes are gone (bounded wait: removal follows the call's end).
  for (int i = 0; i < 100 && CountStagedFiles(Store()) > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(CountStagedFiles(Store()), 0);

  // The slots are free again once the ended calls are gone (the server lets a call go just after
  // its client has the status, so allow a bounded wait): an honest upload succeeds, and
  // descriptors are back near baseline.
  honest = Upload(*stub_, "honest2", files_, &info);
  for (int i = 0; i < 50 && honest.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    honest = Upload(*stub_, "honest2", files_, &info);
  }
  EXPECT_TRUE(honest.ok()) << honest.error_code() << " " << honest.error_message();
  EXPECT_LE(CountFds(server_->pid()), baseline_fds + 8);
}

TEST_F(UploadLimitsTest, AnUploadSilentBeforeItsManifestTimesOutToo) {
  grpc::ClientContext context;
  context.set_deadline(In(30));
  v1::AdapterInfo info;
  auto writer = stalled_stub_->Upload(&context, &info);  // opens the call, sends nothing
  const grpc::Status status = writer->Finish();
  // Ended by the server (its message names the flag), not by the client's own deadline.
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << status.error_message();
  EXPECT_NE(status.error_message().find("--upload_idle_timeout"), std::string::npos)
      << status.error_message();
}

}  // namespace
}  // namespace loramux::testing
