#include "checksum.h"

#include <zlib.h>

#include <algorithm>
#include <atomic>

#include "thread_pool.h"

namespace tde {

namespace {

// Pieces of this size keep a thread busy long enough to be worth waking, and small enough that
// one large buffer spreads over every core.
constexpr size_t kPiece = 1 << 20;

}  // namespace

uint32_t Initial(ChecksumKind kind) { return kind == ChecksumKind::kCrc32 ? 0 : 1; }

uint32_t Checksum(ChecksumKind kind, uint32_t previous, const uint8_t* data, size_t len) {
  uLong value = previous;
  // zlib takes lengths as uInt; feed it at most 1 GiB at a time.
  while (len > 0) {
    uInt n = static_cast<uInt>(std::min<size_t>(len, 1u << 30));
    value = kind == ChecksumKind::kCrc32 ? crc32(value, data, n) : adler32(value, data, n);
    data += n;
    len -= n;
  }
  return static_cast<uint32_t>(value);
}

uint32_t Combine(ChecksumKind kind, uint32_t a, uint32_t b, uint64_t len_b) {
  z_off64_t n = static_cast<z_off64_t>(len_b);
  return static_cast<uint32_t>(kind == ChecksumKind::kCrc32 ? crc32_combine64(a, b, n)
                                                            : adler32_combine64(a, b, n));
}

void ChecksumJob::Run() {
  // Work items: (buffer, offset within it, length).
  struct Piece {
    size_t buffer;
    size_t offset;
    size_t length;
    uint32_t sum;
  };
  std::vector<Piece> pieces;
  size_t total = 0;
  for (size_t i = 0; i < in.size(); i++) {
    total += len[i];
    if (len[i] == 0) pieces.push_back(Piece{i, 0, 0, Initial(kind)});
    for (size_t at = 0; at < len[i]; at += kPiece) {
      pieces.push_back(Piece{i, at, std::min(kPiece, len[i] - at), 0});
    }
  }

  std::atomic<size_t> next{0};
  auto body = [&] {
    for (;;) {
      size_t k = next.fetch_add(1);
      if (k >= pieces.size()) break;
      Piece& p = pieces[k];
      p.sum = Checksum(kind, Initial(kind), in[p.buffer] + p.offset, p.length);
    }
  };
  size_t participants = std::min({Parallelism(), pieces.size(), std::max<size_t>(1, total / kPiece)});
  ThreadPool::Instance().RunParallel(participants, body);

  // Pieces are in buffer order, so each buffer's sum and the running total are plain folds.
  sums.assign(in.size(), Initial(kind));
  combined = initial;
  std::vector<bool> started(in.size(), false);
  for (size_t k = 0; k < pieces.size(); k++) {
    const Piece& p = pieces[k];
    uint32_t& s = sums[p.buffer];
    s = started[p.buffer] ? Combine(kind, s, p.sum, p.length) : p.sum;
    started[p.buffer] = true;
    combined = Combine(kind, combined, p.sum, p.length);
    bool last_of_buffer = k + 1 == pieces.size() || pieces[k + 1].buffer != p.buffer;
    if (framed && last_of_buffer) {
      const uint8_t be[4] = {static_cast<uint8_t>(s >> 24), static_cast<uint8_t>(s >> 16),
                             static_cast<uint8_t>(s >> 8), static_cast<uint8_t>(s)};
      combined = Checksum(kind, combined, be, 4);
    }
  }
}

}  // namespace tde
