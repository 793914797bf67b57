#include "batch.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <functional>
#include <mutex>

#include <openssl/crypto.h>

#include "cipher_suite.h"
#include "thread_pool.h"

namespace tde {

namespace {

// Below this much input per thread, waking another thread costs more than it saves.
constexpr size_t kMinBytesPerThread = 32 * 1024;

}  // namespace

void BatchJob::Run() {
  size_t n = in.size();
  written.assign(n, 0);
  if (n == 0) return;

  size_t total = 0;
  for (size_t len : in_len) total += len;
  size_t by_size = std::max<size_t>(1, total / kMinBytesPerThread);
  size_t participants = std::min({Parallelism(), n, by_size});

  // Every IV of the batch from one DRBG request (or a few: a request may be at most 64 KiB).
  size_t iv_len = core->spec().iv_length;
  std::vector<uint8_t> ivs(encrypt ? n * iv_len : 0);
  for (size_t at = 0; at < ivs.size(); at += 65536) {
    if (!RandomBytes(ivs.data() + at, std::min<size_t>(65536, ivs.size() - at))) {
      status = Status::Error("ERR_TDE_CRYPTO_INTERNAL", "RAND_bytes failed: no IVs for the batch");
      return;
    }
  }

  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex error_mutex;

  auto record = [&](Status st, int64_t index) {
    std::lock_guard<std::mutex> lock(error_mutex);
    if (status.ok() || (index >= 0 && index < status.index)) {
      status = std::move(st);
      status.index = index;
    }
    failed.store(true);
  };

  // AES-CBC encryption: each thread keeps up to eight chunks in flight (aes_cbc_mb.h), taking
  // the next chunk from the shared counter whenever one of its lanes frees up.
  const aesmb::RoundKeys* mb_keys = encrypt && aad.empty() ? core->MultiBufferKeys() : nullptr;
  if (mb_keys != nullptr) {
    class Source : public aesmb::JobSource {
     public:
      Source(BatchJob* batch, std::atomic<size_t>* next, std::atomic<bool>* failed, const uint8_t* ivs,
             const std::function<void(Status, int64_t)>& record)
          : b_(batch), next_(next), failed_(failed), ivs_(ivs), record_(record) {}

      bool Next(aesmb::Job* job) override {
        if (failed_->load(std::memory_order_relaxed)) return false;
        size_t i = next_->fetch_add(1);
        if (i >= b_->in.size()) return false;
        Status st = b_->core->CheckEncrypt(b_->in_len[i], b_->out_cap[i]);
        if (!st.ok()) {
          record_(std::move(st), static_cast<int64_t>(i));
          return false;
        }
        std::memcpy(b_->out[i], ivs_ + i * 16, 16);
        job->in = b_->in[i];
        job->len = b_->in_len[i];
        job->out = b_->out[i] + 16;
        job->iv = ivs_ + i * 16;
        job->padding = b_->core->spec().padding;
        job->index = i;
        return true;
      }

      void Done(const aesmb::Job& job) override {
        size_t blocks = job.len / 16 + (job.padding ? 1 : 0);
        b_->written[job.index] = static_cast<uint32_t>(16 + blocks * 16);
      }

     private:
      BatchJob* b_;
      std::atomic<size_t>* next_;
      std::atomic<bool>* failed_;
      const uint8_t* ivs_;
      const std::function<void(Status, int64_t)>& record_;
    };

    std::function<void(Status, int64_t)> on_error = record;
    auto mb_body = [&] {
      Source source(this, &next, &failed, ivs.data(), on_error);
      aesmb::EncryptCbc(*mb_keys, &source);
    };
    ThreadPool::Instance().RunParallel(participants, mb_body);
    OPENSSL_cleanse(ivs.data(), ivs.size());
    return;
  }

  auto body = [&] {
    CipherContext ctx;
    Status st = core->Prepare(&ctx, encrypt);
    if (!st.ok()) {
      record(std::move(st), -1);
      return;
    }
    while (!failed.load(std::memory_order_relaxed)) {
      size_t i = next.fetch_add(1);
      if (i >= n) break;
      size_t w = 0;
      Span a = aad.empty() ? Span() : aad[i];
      st = encrypt ? core->Encrypt(&ctx, in[i], in_len[i], a, out[i], out_cap[i], &w,
                                   iv_len > 0 ? ivs.data() + i * iv_len : nullptr)
                   : core->Decrypt(&ctx, in[i], in_len[i], a, out[i], out_cap[i], &w);
      if (!st.ok()) {
        record(std::move(st), static_cast<int64_t>(i));
        return;
      }
      written[i] = static_cast<uint32_t>(w);
    }
  };

  ThreadPool::Instance().RunParallel(participants, body);
  OPENSSL_cleanse(ivs.data(), ivs.size());
}

}  // namespace tde
