#include "thread_pool.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <memory>

namespace tde {

namespace {

size_t CoreCount() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : n;
}

size_t InitialParallelism() {
  const char* env = std::getenv("SSTABLE_TDE_THREADS");
  if (env != nullptr) {
    long n = std::strtol(env, nullptr, 10);
    if (n > 0 && n <= 1024) return static_cast<size_t>(n);
  }
  return CoreCount();
}

std::atomic<size_t> g_parallelism{InitialParallelism()};

}  // namespace

size_t Parallelism() { return g_parallelism.load(std::memory_order_relaxed); }

void SetParallelism(size_t n) { g_parallelism.store(n == 0 ? 1 : n, std::memory_order_relaxed); }

ThreadPool& ThreadPool::Instance() {
  // Deliberately leaked: joining threads from a static destructor at exit can deadlock, and the
  // threads hold no state that needs an orderly shutdown.
  static ThreadPool* pool = new ThreadPool(std::max(CoreCount(), InitialParallelism()));
  return *pool;
}

ThreadPool::ThreadPool(size_t threads) {
  for (size_t i = 0; i < threads; i++) {
    threads_.emplace_back([this] { Loop(); });
    threads_.back().detach();
  }
}

void ThreadPool::Loop() {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [this] { return !queue_.empty(); });
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    job();
  }
}

void ThreadPool::RunParallel(size_t participants, const std::function<void()>& body) {
  // One copy runs on the calling thread: no hand-over to wait for.
  if (participants <= 1) {
    body();
    return;
  }

  // Several run on the pool only, never on the calling thread: batches from several callers at
  // once (a writer keeps two in flight) then share the pool's threads, one per core, instead of
  // each adding its caller to them and the cores being oversubscribed.
  struct Join {
    std::mutex mutex;
    std::condition_variable done;
    size_t pending;
  };
  auto join = std::make_shared<Join>();
  size_t copies = std::max<size_t>(1, std::min(participants, threads_.size()));
  join->pending = copies;

  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t i = 0; i < copies; i++) {
      queue_.emplace_back([join, &body] {
        body();
        std::lock_guard<std::mutex> l(join->mutex);
        if (--join->pending == 0) join->done.notify_one();
      });
    }
  }
  wake_.notify_all();

  std::unique_lock<std::mutex> lock(join->mutex);
  join->done.wait(lock, [&] { return join->pending == 0; });
}

void ThreadPool::Post(size_t participants, std::function<void()> body, std::function<void()> done) {
  struct Shared {
    std::function<void()> body;
    std::function<void()> done;
    std::atomic<size_t> pending;
  };
  size_t copies = std::max<size_t>(1, std::min(participants, threads_.size()));
  auto shared = std::make_shared<Shared>();
  shared->body = std::move(body);
  shared->done = std::move(done);
  shared->pending.store(copies);

  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t i = 0; i < copies; i++) {
      queue_.emplace_back([shared] {
        shared->body();
        if (shared->pending.fetch_sub(1, std::memory_order_acq_rel) == 1) shared->done();
      });
    }
  }
  if (copies == 1) {
    wake_.notify_one();
  } else {
    wake_.notify_all();
  }
}

}  // namespace tde
