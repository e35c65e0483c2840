#include "common/thread_pool.h"

#include <algorithm>
#include <utility>

namespace loramux {

ThreadPool::ThreadPool(int threads, std::function<void()> on_start) {
  for (int i = 0; i < std::max(1, threads); ++i) {
    workers_.emplace_back([this, on_start] { WorkLoop(on_start); });
  }
}

ThreadPool::~ThreadPool() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& worker : workers_) worker.join();
}

void ThreadPool::Run(std::function<void()> task) {
  absl::MutexLock lock(&mu_);
  tasks_.push_back(std::move(task));
}

void ThreadPool::WorkLoop(const std::function<void()>& on_start) {
  if (on_start) on_start();
  while (true) {
    std::function<void()> task;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](ThreadPool* pool) ABSL_EXCLUSIVE_LOCKS_REQUIRED(pool->mu_) {
            return pool->stopping_ || !pool->tasks_.empty();
          },
          this));
      if (tasks_.empty()) return;  // stopping, and nothing left to do
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    task();
  }
}

}  // namespace loramux
