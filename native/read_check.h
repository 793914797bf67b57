// Reading a stretch of a file and checksumming it in one trip to the thread pool.
//
// A reader used to hand each batch to a libuv thread to read and then to the pool to checksum:
// two hand-overs between threads per batch, and the checksum pass met the bytes long after the
// kernel had copied them in. Here each pool thread reads a piece with pread and checksums it at
// once, while it is still in cache.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "checksum.h"
#include "errors.h"

namespace tde {

struct ReadCheckJob {
  // A descriptor of the job's own (a duplicate of the caller's), closed when the job is over: the
  // caller may close its descriptor meanwhile without the number being reused under the read.
  int fd = -1;
  // File offset of the region, its length, and where it goes (at least `length` bytes).
  int64_t position = 0;
  size_t length = 0;
  uint8_t* out = nullptr;
  ChecksumKind kind = ChecksumKind::kCrc32;
  // Spans of the region checksummed one by one (chunks and their stored checksums): in
  // ascending order, not overlapping, and within the region. The caller checks this.
  std::vector<size_t> span_offset;
  std::vector<size_t> span_length;

  // Results: each span's checksum and the whole region's; or the failure, with the file offset
  // where reading failed in `status.index` and the errno in `error_number` (0: the file ended).
  std::vector<uint32_t> sums;
  uint32_t region_sum = 0;
  Status status;
  int error_number = 0;

  // Runs the job on the pool and calls `done` once, on a pool thread, when it is over (and `fd`
  // is closed).
  void Start(std::function<void()> done);

 private:
  // Part of a piece that lies in one span (span >= 0) or between spans (-1), with its checksum.
  struct Segment {
    int64_t span;
    size_t length;
    uint32_t sum;
  };
  struct Piece {
    size_t begin;
    size_t end;
    std::vector<Segment> segments;
    int error = 0;
    bool ended = false;  // the file ended inside this piece
    size_t failed_at = 0;
  };

  void Body();
  void RunPiece(Piece* p);
  void Fold();

  std::vector<Piece> pieces_;
  // Next piece to take; allocated by Start, so that a job can be moved until then.
  std::unique_ptr<std::atomic<size_t>> next_;
};

}  // namespace tde
