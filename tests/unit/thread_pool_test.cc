#include "common/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"

namespace loramux {
namespace {

TEST(ThreadPoolTest, RunsEveryTaskOnItsWorkers) {
  std::atomic<int> ran{0};
  absl::Mutex mu;
  std::vector<std::thread::id> seen;
  {
    ThreadPool pool(3);
    for (int i = 0; i < 100; ++i) {
      pool.Run([&] {
        ++ran;
        absl::MutexLock lock(&mu);
        seen.push_back(std::this_thread::get_id());
      });
    }
  }  // the destructor runs what is queued, then joins
  EXPECT_EQ(ran.load(), 100);
  for (std::thread::id id : seen) EXPECT_NE(id, std::this_thread::get_id());
}

TEST(ThreadPoolTest, OneWorkerRunsTasksInOrder) {
  std::vector<int> order;
  {
    ThreadPool pool(1);
    absl::Notification started;
    absl::Notification release;
    pool.Run([&] {
      started.Notify();
      release.WaitForNotification();  // the rest queue up behind this one
    });
    started.WaitForNotification();
    for (int i = 0; i < 10; ++i) pool.Run([&order, i] { order.push_back(i); });
    release.Notify();
  }
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
}

TEST(ThreadPoolTest, TasksMayQueueMoreTasks) {
  std::atomic<int> ran{0};
  {
    ThreadPool pool(2);
    pool.Run([&] {
      ++ran;
      pool.Run([&] { ++ran; });
    });
  }
  EXPECT_EQ(ran.load(), 2);
}

TEST(ThreadPoolTest, ZeroThreadsStillRunsTasks) {
  std::atomic<int> ran{0};
  {
    ThreadPool pool(0);  // at least one worker
    pool.Run([&] { ++ran; });
  }
  EXPECT_EQ(ran.load(), 1);
}

TEST(ThreadPoolTest, EveryWorkerRunsOnStartBeforeItsTasks) {
  absl::Mutex mu;
  std::vector<std::thread::id> started;
  std::atomic<int> tasks_before_start{0};
  {
    ThreadPool pool(3, [&] {
      absl::MutexLock lock(&mu);
      started.push_back(std::this_thread::get_id());
    });
    for (int i = 0; i < 50; ++i) {
      pool.Run([&] {
        absl::MutexLock lock(&mu);
        if (std::find(started.begin(), started.end(), std::this_thread::get_id()) == started.end())
          ++tasks_before_start;
      });
    }
  }
  EXPECT_EQ(started.size(), 3u);
  EXPECT_EQ(tasks_before_start.load(), 0);
}

}  // namespace
}  // namespace loramux
