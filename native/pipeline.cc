#include "pipeline.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>

#include "aes_ni.h"
#include "cipher_suite.h"
#include "thread_pool.h"

namespace tde {

namespace {

// Below this much input per thread, waking another thread costs more than it saves.
constexpr size_t kMinBytesPerThread = 32 * 1024;

// Shared by the threads of one Run(): which chunk comes next, and the first failure.
class Progress {
 public:
  explicit Progress(Status* status) : status_(status) {}

  // The next chunk index, or `n` once every chunk is taken or a chunk has failed.
  size_t Next(size_t n) {
    if (failed_.load(std::memory_order_relaxed)) return n;
    size_t i = next_.fetch_add(1);
    return i < n ? i : n;
  }

  void Fail(Status st, int64_t index) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (status_->ok() || (index >= 0 && index < status_->index)) {
      *status_ = std::move(st);
      status_->index = index;
    }
    failed_.store(true);
  }

 private:
  Status* status_;
  std::atomic<size_t> next_{0};
  std::atomic<bool> failed_{false};
  std::mutex mutex_;
};

// Compresses chunk i into its output, after the space its IV takes, for encryption in place.
// Returns the compressed length through `len`.
Status CompressForCipher(ChunkJob& job, size_t i, size_t* len) {
  const CipherSpec& spec = job.core->spec();
  size_t reserved = spec.iv_length + spec.tag_length;
  if (job.out_cap[i] < reserved) {
    return Status::Error("ERR_TDE_INVALID_ARGUMENT", "output buffer too small for the chunk");
  }
  return Compress(job.codec, job.in[i], job.in_len[i], job.out[i] + spec.iv_length,
                  job.out_cap[i] - reserved, len);
}

// AES-CBC encoding on one thread: up to eight chunks in flight (aes_ni.h). Each chunk is
// compressed as its lane takes it, and checksummed as soon as it is encrypted.
class MultiBufferSource : public aesni::JobSource {
 public:
  MultiBufferSource(ChunkJob* job, Progress* progress, const uint8_t* ivs)
      : job_(job), progress_(progress), ivs_(ivs) {}

  bool Next(aesni::Job* lane) override {
    ChunkJob& job = *job_;
    size_t n = job.in.size();
    for (;;) {
      size_t i = progress_->Next(n);
      if (i >= n) return false;

      const uint8_t* plain = job.in[i];
      size_t len = job.in_len[i];
      Status st;
      if (job.codec != CodecId::kNone) {
        st = CompressForCipher(job, i, &len);
        plain = job.out[i] + 16;
      }
      if (st.ok()) st = job.core->CheckEncrypt(len, job.out_cap[i]);
      if (!st.ok()) {
        progress_->Fail(std::move(st), static_cast<int64_t>(i));
        return false;
      }

      std::memcpy(job.out[i], ivs_ + i * 16, 16);
      lane->in = plain;
      lane->len = len;
      lane->out = job.out[i] + 16;
      lane->iv = ivs_ + i * 16;
      lane->padding = job.core->spec().padding;
      lane->index = i;
      return true;
    }
  }

  void Done(const aesni::Job& lane) override {
    size_t i = lane.index;
    size_t stored = 16 + (lane.len / 16 + (lane.padding ? 1 : 0)) * 16;
    job_->written[i] = static_cast<uint32_t>(stored);
    if (job_->want_sums) job_->sums[i] = Checksum(job_->sum_kind, Initial(job_->sum_kind), job_->out[i], stored);
  }

 private:
  ChunkJob* job_;
  Progress* progress_;
  const uint8_t* ivs_;
};

// One chunk through every step, on the calling thread.
Status EncodeOne(ChunkJob& job, size_t i, CipherContext* ctx, const uint8_t* iv, size_t* written) {
  if (!job.core) return Compress(job.codec, job.in[i], job.in_len[i], job.out[i], job.out_cap[i], written);

  Span aad = job.aad.empty() ? Span() : job.aad[i];
  if (job.codec == CodecId::kNone) {
    return job.core->Encrypt(ctx, job.in[i], job.in_len[i], aad, job.out[i], job.out_cap[i], written, iv);
  }
  size_t len = 0;
  Status st = CompressForCipher(job, i, &len);
  if (!st.ok()) return st;
  const uint8_t* body = job.out[i] + job.core->spec().iv_length;
  return job.core->Encrypt(ctx, body, len, aad, job.out[i], job.out_cap[i], written, iv);
}

Status DecodeOne(ChunkJob& job, size_t i, CipherContext* ctx, std::vector<uint8_t>* scratch,
                 size_t* written) {
  size_t expected = job.expected.empty() ? 0 : job.expected[i];
  if (!job.expected.empty() && job.out_cap[i] < expected) {
    return Status::Error("ERR_TDE_INVALID_ARGUMENT", "output buffer too small for the chunk");
  }
  if (!job.core) {
    *written = expected;
    return Uncompress(job.codec, job.in[i], job.in_len[i], job.out[i], expected);
  }

  Span aad = job.aad.empty() ? Span() : job.aad[i];
  if (job.codec == CodecId::kNone) {
    Status st = job.core->Decrypt(ctx, job.in[i], job.in_len[i], aad, job.out[i], job.out_cap[i], written);
    if (st.ok() && !job.expected.empty() && *written != expected) {
      return Status::Error("ERR_TDE_CORRUPT_CHUNK", "chunk holds " + std::to_string(*written) +
                                                        " bytes where " + std::to_string(expected) +
                                                        " were expected");
    }
    return st;
  }

  // Decrypted into this thread's scratch space, then decompressed into the output.
  if (scratch->size() < job.in_len[i]) scratch->resize(job.in_len[i]);
  size_t compressed = 0;
  Status st = job.core->Decrypt(ctx, job.in[i], job.in_len[i], aad, scratch->data(), scratch->size(),
                                &compressed);
  if (!st.ok()) return st;
  *written = expected;
  return Uncompress(job.codec, scratch->data(), compressed, job.out[i], expected);
}

}  // namespace

void ChunkJob::Run() {
  size_t n = in.size();
  written.assign(n, 0);
  sums.assign(want_sums ? n : 0, 0);
  if (n == 0) return;

  size_t total = 0;
  for (size_t len : in_len) total += len;
  size_t by_size = std::max<size_t>(1, total / kMinBytesPerThread);
  size_t participants = std::min({Parallelism(), n, by_size});

  // Every IV of the batch from one DRBG request (or a few: a request may be at most 64 KiB).
  size_t iv_len = encode && core ? core->spec().iv_length : 0;
  std::vector<uint8_t> ivs(n * iv_len);
  for (size_t at = 0; at < ivs.size(); at += 65536) {
    if (!RandomBytes(ivs.data() + at, std::min<size_t>(65536, ivs.size() - at))) {
      status = Status::Error("ERR_TDE_CRYPTO_INTERNAL", "RAND_bytes failed: no IVs for the batch");
      return;
    }
  }
  Progress progress(&status);

  const aesni::RoundKeys* mb_keys = encode && core && aad.empty() ? core->MultiBufferKeys() : nullptr;
  if (mb_keys != nullptr) {
    ThreadPool::Instance().RunParallel(participants, [&] {
      MultiBufferSource source(this, &progress, ivs.data());
      aesni::EncryptCbc(*mb_keys, &source);
    });
    OPENSSL_cleanse(ivs.data(), ivs.size());
    return;
  }

  ThreadPool::Instance().RunParallel(participants, [&] {
    CipherContext ctx;
    if (core) {
      Status st = core->Prepare(&ctx, encode);
      if (!st.ok()) {
        progress.Fail(std::move(st), -1);
        return;
      }
    }
    std::vector<uint8_t> scratch;
    for (size_t i = progress.Next(n); i < n; i = progress.Next(n)) {
      size_t w = 0;
      Status st = encode ? EncodeOne(*this, i, &ctx, iv_len > 0 ? ivs.data() + i * iv_len : nullptr, &w)
                         : DecodeOne(*this, i, &ctx, &scratch, &w);
      if (!st.ok()) {
        progress.Fail(std::move(st), static_cast<int64_t>(i));
        return;
      }
      written[i] = static_cast<uint32_t>(w);
      if (want_sums) {
        ChecksumKind kind = encode ? sum_kind : ChecksumKind::kCrc32;
        sums[i] = Checksum(kind, Initial(kind), out[i], w);
      }
    }
  });
  OPENSSL_cleanse(ivs.data(), ivs.size());
}

}  // namespace tde
