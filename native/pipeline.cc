#include "pipeline.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <mutex>

#include "aes_ni.h"
#include "cipher_suite.h"
#include "secure_bytes.h"
#include "thread_pool.h"

namespace tde {

// Shared by the threads of one batch: which chunks are taken, and the first failure. Threads
// take chunks in runs (see Cursor), so that on small chunks they do not contend for one counter.
class Progress {
 public:
  Progress(Status* status, size_t n, size_t run) : status_(status), n_(n), run_(run) {}

  // Takes the next run of chunks, [*begin, *end); false once every chunk is taken or one failed.
  // Chunks not yet taken all lie past any failed one, so none of them needs doing.
  bool Take(size_t* begin, size_t* end) {
    if (failed_at_.load(std::memory_order_relaxed) != kNone) return false;
    size_t i = next_.fetch_add(run_, std::memory_order_relaxed);
    if (i >= n_) return false;
    *begin = i;
    *end = std::min(n_, i + run_);
    return true;
  }

  // Whether chunk i still needs doing: every chunk before the first failure does, so that the
  // failure reported is the lowest-numbered one.
  bool Wanted(size_t i) const { return i < failed_at_.load(std::memory_order_relaxed); }

  // index -1: a failure of the batch as a whole, which stops every chunk.
  void Fail(Status st, int64_t index) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (status_->ok() || (index >= 0 && index < status_->index)) {
      *status_ = std::move(st);
      status_->index = index;
    }
    size_t at = index < 0 ? 0 : static_cast<size_t>(index);
    if (at < failed_at_.load()) failed_at_.store(at);
  }

 private:
  static constexpr size_t kNone = SIZE_MAX;

  Status* status_;
  const size_t n_;
  const size_t run_;
  std::atomic<size_t> next_{0};
  std::atomic<size_t> failed_at_{kNone};
  std::mutex mutex_;
};

// One thread's walk through the chunks it takes from a Progress, a run at a time.
class Cursor {
 public:
  explicit Cursor(Progress* progress) : progress_(progress) {}

  // The next chunk index for this thread, or `n` when there is nothing left for it.
  size_t Next(size_t n) {
    if (at_ == end_ && !progress_->Take(&at_, &end_)) return n;
    size_t i = at_++;
    return progress_->Wanted(i) ? i : n;
  }

 private:
  Progress* progress_;
  size_t at_ = 0;
  size_t end_ = 0;
};

namespace {

// Below this much input per thread, waking another thread costs more than it saves.
constexpr size_t kMinBytesPerThread = 32 * 1024;

// How much a thread takes at a time, at most, when chunks are small.
constexpr size_t kRunBytes = 64 * 1024;

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
      : job_(job), progress_(progress), cursor_(progress), ivs_(ivs) {}

  bool Next(aesni::Job* lane) override {
    ChunkJob& job = *job_;
    size_t n = job.in.size();
    for (;;) {
      size_t i = cursor_.Next(n);
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
    if (job_->want_sums)
      job_->sums[i] = Checksum(job_->sum_kind, Initial(job_->sum_kind), job_->out[i], stored);
  }

 private:
  ChunkJob* job_;
  Progress* progress_;
  Cursor cursor_;
  const uint8_t* ivs_;
};

// One chunk through every step, on the calling thread.
Status EncodeOne(ChunkJob& job, size_t i, CipherContext* ctx, const uint8_t* iv, size_t* written) {
  if (!job.core)
    return Compress(job.codec, job.in[i], job.in_len[i], job.out[i], job.out_cap[i], written);

  Span aad = job.aad.empty() ? Span() : job.aad[i];
  if (job.codec == CodecId::kNone) {
    return job.core->Encrypt(ctx, job.in[i], job.in_len[i], aad, job.out[i], job.out_cap[i],
                             written, iv);
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
    Status st =
        job.core->Decrypt(ctx, job.in[i], job.in_len[i], aad, job.out[i], job.out_cap[i], written);
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
  Status st = job.core->Decrypt(ctx, job.in[i], job.in_len[i], aad, scratch->data(),
                                scratch->size(), &compressed);
  if (!st.ok()) return st;
  *written = expected;
  return Uncompress(job.codec, scratch->data(), compressed, job.out[i], expected);
}

}  // namespace

void ChunkJob::Start(std::function<void()> done) {
  size_t n = in.size();
  written.assign(n, 0);
  sums.assign(want_sums ? n : 0, 0);
  if (n == 0) {
    done();
    return;
  }

  size_t total = 0;
  for (size_t len : in_len) total += len;
  size_t by_size = std::max<size_t>(1, total / kMinBytesPerThread);
  size_t participants = std::min({Parallelism(), n, by_size});

  // Every IV of the batch from one DRBG request (or a few: a request may be at most 64 KiB).
  size_t iv_len = encode && core ? core->spec().iv_length : 0;
  ivs_.assign(n * iv_len, 0);
  for (size_t at = 0; at < ivs_.size(); at += 65536) {
    if (!RandomBytes(ivs_.data() + at, std::min<size_t>(65536, ivs_.size() - at))) {
      status = Status::Error("ERR_TDE_CRYPTO_INTERNAL", "RAND_bytes failed: no IVs for the batch");
      done();
      return;
    }
  }
  // Runs of about 64 KiB, and at least four per thread, so that a thread's share stays even.
  size_t run = std::max<size_t>(
      1, std::min(kRunBytes / std::max<size_t>(1, total / n), n / (participants * 4)));
  progress_ = std::make_shared<Progress>(&status, n, run);

  ThreadPool::Instance().Post(
      participants,
      [this] {
        Body();
        ScrubStack();
      },
      [this, done = std::move(done)] {
        OPENSSL_cleanse(ivs_.data(), ivs_.size());
        done();
      });
}

void ChunkJob::Body() {
  size_t n = in.size();
  size_t iv_len = encode && core ? core->spec().iv_length : 0;
  Progress& progress = *progress_;

  const aesni::RoundKeys* mb_keys =
      encode && core && aad.empty() ? core->MultiBufferKeys() : nullptr;
  if (mb_keys != nullptr) {
    MultiBufferSource source(this, &progress, ivs_.data());
    aesni::EncryptCbc(*mb_keys, &source);
    return;
  }

  CipherContext ctx;
  if (core) {
    Status st = core->Prepare(&ctx, encode);
    if (!st.ok()) {
      progress.Fail(std::move(st), -1);
      return;
    }
  }
  std::vector<uint8_t> scratch;
  Cursor cursor(&progress);
  for (size_t i = cursor.Next(n); i < n; i = cursor.Next(n)) {
    size_t w = 0;
    Status st = encode
                    ? EncodeOne(*this, i, &ctx, iv_len > 0 ? ivs_.data() + i * iv_len : nullptr, &w)
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
}

}  // namespace tde
