// A fixed set of worker threads that run queued tasks in FIFO order.
//
// Threads: Run() may be called from any thread, including from a task. The destructor runs every
// task queued before it (each may be finishing somebody's call), then joins the workers; a task
// must therefore not wait for anything that only the pool's owner would do after destruction
// began. Tasks must not throw.
#pragma once

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace loramux {

class ThreadPool {
 public:
  // Starts max(1, threads) workers; each calls `on_start` (when set) before its first task.
  explicit ThreadPool(int threads, std::function<void()> on_start = nullptr);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  void Run(std::function<void()> task);

 private:
  void WorkLoop(const std::function<void()>& on_start);

  absl::Mutex mu_;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> workers_;
};

}  // namespace loramux
