// A process-wide pool of worker threads for chunk batches.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace tde {

class ThreadPool {
 public:
  // The pool is created on first use with one thread per core and lives until the process ends.
  // Its threads never call into JavaScript, so one pool safely serves every addon instance
  // (main thread and worker threads alike).
  static ThreadPool& Instance();

  // Runs `body` on up to `participants` pool threads (one: on the calling thread) and returns
  // when every copy has returned. Each copy is expected to pull work from a shared counter,
  // so a copy that starts late simply finds nothing left to do.
  void RunParallel(size_t participants, const std::function<void()>& body);

  // Runs `body` on up to `participants` pool threads (at least one) without waiting for it, then
  // `done` once, on the pool thread whose copy of `body` returns last. The caller's thread is
  // free meanwhile: a batch costs it no thread of its own, only the hand-over.
  void Post(size_t participants, std::function<void()> body, std::function<void()> done);

  size_t size() const { return threads_.size(); }

 private:
  explicit ThreadPool(size_t threads);
  void Loop();

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> queue_;
  std::vector<std::thread> threads_;
};

// How many threads one batch may use. Defaults to the number of cores; SSTABLE_TDE_THREADS or
// setParallelism() (used by benchmarks to measure one thread) changes it.
size_t Parallelism();
void SetParallelism(size_t n);

}  // namespace tde
