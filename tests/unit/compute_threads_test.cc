#include "tensor/compute_threads.h"

#include <dirent.h>
#include <omp.h>

#include <atomic>
#include <chrono>
#include <thread>

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace loramux {
namespace {

// The threads this process holds now (/proc/self/task).
int ProcessThreads() {
  int count = 0;
  DIR* dir = opendir("/proc/self/task");
  if (!dir) return -1;
  while (const dirent* entry = readdir(dir)) count += entry->d_name[0] != '.';
  closedir(dir);
  return count;
}

// The most threads at::parallel_for ran a large range on (1 = the caller alone).
int ParallelWidth() {
  std::atomic<int> widest{1};
  at::parallel_for(0, 1 << 16, 1, [&](int64_t, int64_t) {
    const int now = omp_get_num_threads();
    if (now > widest) widest = now;
  });
  return widest;
}

// Polls (bounded) until the process holds `threads` threads; returns the last count seen.
int AwaitProcessThreads(int threads) {
  int now = ProcessThreads();
  for (int i = 0; i < 200 && now != threads; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    now = ProcessThreads();
  }
  return now;
}

TEST(ComputeThreadsTest, ReleaseThreadTeamEndsTheCallersWorkers) {
  at::set_num_threads(2);
  std::thread([] {
    const int before = ProcessThreads();
    EXPECT_EQ(ParallelWidth(), 2);
    EXPECT_EQ(ProcessThreads(), before + 1) << "the parallel op's team keeps a worker thread";
    ReleaseThreadTeam();
    EXPECT_EQ(AwaitProcessThreads(before), before);
    EXPECT_EQ(ParallelWidth(), 2) << "a later parallel op starts a new team";
    ReleaseThreadTeam();
  }).join();
}

TEST(ComputeThreadsTest, SerialThreadsStartNoTeam) {
  at::set_num_threads(2);
  std::thread([] {
    RunTensorOpsSerially();
    RunTensorOpsSerially();  // idempotent
    const int before = ProcessThreads();
    EXPECT_EQ(at::get_num_threads(), 1);
    EXPECT_EQ(ParallelWidth(), 1);
    const torch::Tensor x = torch::rand({512, 512});
    EXPECT_TRUE(torch::allclose(torch::mm(x, x).sum(), (x.sum(0) * x.sum(1)).sum(), 1e-3));
    EXPECT_EQ(ProcessThreads(), before);
  }).join();
  // Other threads keep the process's setting.
  std::thread([] { EXPECT_EQ(at::get_num_threads(), 2); }).join();
}

}  // namespace
}  // namespace loramux
