#include "read_check.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "thread_pool.h"

namespace tde {

namespace {

// Small enough that both cores share a batch's region evenly and a piece is checksummed while
// it is still in the core's cache; large enough that a read is one cheap system call.
constexpr size_t kReadPiece = 256 * 1024;

}  // namespace

void ReadCheckJob::Start(std::function<void()> done) {
  sums.assign(span_offset.size(), Initial(kind));
  region_sum = Initial(kind);
  if (length == 0) {
    close(fd);
    done();
    return;
  }
  for (size_t at = 0; at < length; at += kReadPiece) {
    pieces_.push_back(Piece{at, std::min(length, at + kReadPiece), {}, 0, false, 0});
  }
  next_ = std::make_unique<std::atomic<size_t>>(0);
  size_t participants = std::min(Parallelism(), pieces_.size());
  ThreadPool::Instance().Post(
      participants, [this] { Body(); },
      [this, done = std::move(done)] {
        Fold();
        close(fd);
        done();
      });
}

void ReadCheckJob::Body() {
  for (;;) {
    size_t k = next_->fetch_add(1);
    if (k >= pieces_.size()) return;
    RunPiece(&pieces_[k]);
  }
}

void ReadCheckJob::RunPiece(Piece* p) {
  size_t at = p->begin;
  while (at < p->end) {
    ssize_t n = pread(fd, out + at, p->end - at, static_cast<off_t>(position + at));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      p->error = n < 0 ? errno : 0;
      p->ended = n == 0;
      p->failed_at = at;
      return;
    }
    at += static_cast<size_t>(n);
  }

  // The piece cut at every span edge inside it; each part checksummed once, in order.
  size_t s = std::upper_bound(span_offset.begin(), span_offset.end(), p->begin) -
             span_offset.begin();
  // The span that starts at or before the piece may still cover its beginning.
  if (s > 0 && span_offset[s - 1] + span_length[s - 1] > p->begin) s--;
  size_t pos = p->begin;
  while (pos < p->end) {
    bool inside = s < span_offset.size() && span_offset[s] <= pos;
    size_t stop;
    if (inside) {
      stop = std::min(p->end, span_offset[s] + span_length[s]);
    } else {
      stop = s < span_offset.size() ? std::min(p->end, span_offset[s]) : p->end;
    }
    if (stop > pos) {
      uint32_t sum = Checksum(kind, Initial(kind), out + pos, stop - pos);
      p->segments.push_back(Segment{inside ? static_cast<int64_t>(s) : -1, stop - pos, sum});
    }
    if (inside && stop == span_offset[s] + span_length[s]) s++;
    // Empty spans sitting here have nothing to read; their checksum stays the initial value.
    while (s < span_offset.size() && span_length[s] == 0 && span_offset[s] <= stop) s++;
    pos = stop;
  }
}

void ReadCheckJob::Fold() {
  // The first failure in file order is the one reported: a later piece may have been read
  // before the file was cut short under an earlier one.
  for (const Piece& p : pieces_) {
    if (p.error == 0 && !p.ended) continue;
    error_number = p.error;
    std::string what = p.ended ? std::string("the file ended") : std::strerror(p.error);
    status = Status::Error("ERR_TDE_IO", what);
    status.index = position + static_cast<int64_t>(p.failed_at);
    return;
  }

  std::vector<bool> started(sums.size(), false);
  for (const Piece& p : pieces_) {
    for (const Segment& g : p.segments) {
      region_sum = Combine(kind, region_sum, g.sum, g.length);
      if (g.span < 0) continue;
      uint32_t& sum = sums[static_cast<size_t>(g.span)];
      sum = started[g.span] ? Combine(kind, sum, g.sum, g.length) : g.sum;
      started[g.span] = true;
    }
  }
}

}  // namespace tde
