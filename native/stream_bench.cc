#include "stream_bench.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <thread>
#include <vector>

#include "cipher_suite.h"

namespace tde {

namespace {

// One stream; `start` is called once the memory is ready, just before the timed part.
Status Stream(const CipherSpec& spec, const uint8_t* key, size_t key_len, size_t chunk,
              size_t rounds, const std::function<void()>& start, double* seconds) {
  Status st;
  std::shared_ptr<ChunkCipherCore> core = ChunkCipherCore::Create(spec, key, key_len, &st);
  if (!core) return st;

  CipherContext ctx;
  st = core->Prepare(&ctx, true);
  if (!st.ok()) return st;
  std::vector<uint8_t> iv(16, 7);
  if (EVP_CipherInit_ex2(ctx.get(), nullptr, nullptr, spec.iv_length ? iv.data() : nullptr, 1,
                         nullptr) != 1) {
    return Status::Error("ERR_TDE_CRYPTO_INTERNAL", "EVP_CipherInit_ex2 failed");
  }
  EVP_CIPHER_CTX_set_padding(ctx.get(), 0);

  // The same amount of memory as a batch of `rounds` chunks, touched once before timing, so the
  // baseline pays the same memory traffic as the chunk cipher and none of the page faults.
  std::vector<uint8_t> in(chunk * rounds, 0x5a);
  std::vector<uint8_t> out(chunk * rounds + 64, 0);
  start();
  auto begin = std::chrono::steady_clock::now();
  for (size_t r = 0; r < rounds; r++) {
    int n = 0;
    if (EVP_CipherUpdate(ctx.get(), out.data() + r * chunk, &n, in.data() + r * chunk,
                         static_cast<int>(chunk)) != 1) {
      return Status::Error("ERR_TDE_CRYPTO_INTERNAL", "EVP_CipherUpdate failed");
    }
  }
  *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
  return Status::Ok();
}

}  // namespace

Status StreamBench(const CipherSpec& spec, const uint8_t* key, size_t key_len, size_t chunk,
                   size_t rounds, double* seconds) {
  return Stream(
      spec, key, key_len, chunk, rounds, [] {}, seconds);
}

Status StreamBenchParallel(const CipherSpec& spec, const uint8_t* key, size_t key_len, size_t chunk,
                           size_t rounds, size_t threads, double* seconds) {
  std::vector<Status> results(threads);
  std::vector<double> times(threads, 0);
  std::atomic<size_t> ready{0};
  // The streams start together, once every thread has its memory ready, so they overlap fully;
  // the slowest one's time counts.
  auto start = [&] {
    ready.fetch_add(1);
    while (ready.load() < threads) std::this_thread::yield();
  };
  auto body = [&](size_t k) {
    results[k] = Stream(spec, key, key_len, chunk, rounds, start, &times[k]);
  };
  std::vector<std::thread> pool;
  for (size_t k = 1; k < threads; k++) pool.emplace_back(body, k);
  body(0);
  for (std::thread& t : pool) t.join();
  *seconds = *std::max_element(times.begin(), times.end());
  for (const Status& st : results) {
    if (!st.ok()) return st;
  }
  return Status::Ok();
}

}  // namespace tde
