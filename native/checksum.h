// The checksums Cassandra puts on chunks and whole files: CRC32 (ma and later, BTI) and Adler-32
// (la). Both come from the zlib inside Node (its symbols are the ones addons link against), whose
// CRC32 uses carry-less multiplication where the processor has it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace tde {

enum class ChecksumKind { kCrc32, kAdler32 };

// Continues a running checksum: pass Initial(kind) to start, or a previous result to extend it.
uint32_t Checksum(ChecksumKind kind, uint32_t previous, const uint8_t* data, size_t len);
uint32_t Initial(ChecksumKind kind);
// The checksum of A followed by B, from the checksums of each and B's length.
uint32_t Combine(ChecksumKind kind, uint32_t a, uint32_t b, uint64_t len_b);

// Checksums of many buffers at once across the thread pool, and of all of them end to end
// continuing from `initial`. Buffers larger than a piece are split and their parts combined, so
// one large buffer also uses every core.
struct ChecksumJob {
  ChecksumKind kind = ChecksumKind::kCrc32;
  uint32_t initial = 0;
  // When set, `combined` covers each buffer followed by its own checksum as 4 big-endian bytes:
  // Data.db's framing, so a writer gets its chunks' checksums and its digest in one pass.
  bool framed = false;
  std::vector<const uint8_t*> in;
  std::vector<size_t> len;

  // Filled by Run().
  std::vector<uint32_t> sums;
  uint32_t combined = 0;

  // Safe to call off the JS thread.
  void Run();
};

}  // namespace tde
