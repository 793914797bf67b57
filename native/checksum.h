// Adler-32 as Cassandra's la-format SSTables use it (chunk checksums and Digest.adler32). CRC32
// comes from Node's zlib.crc32; Node offers no Adler-32.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tde {

// Continues a running checksum: pass 1 to start, or a previous result to extend it.
uint32_t Adler32(uint32_t adler, const uint8_t* data, size_t len);

}  // namespace tde
