// The chunk codecs Cassandra's compressor classes use, each in Cassandra's chunk framing:
//
//   LZ4      4-byte little-endian uncompressed length, then an LZ4 block (liblz4, the library
//            Cassandra's own LZ4Compressor reaches through lz4-java: its output is byte for byte
//            what Cassandra writes)
//   Deflate  a zlib stream at the default level, as java.util.zip.Deflater writes (the system's
//            libz, the zlib Java itself uses: again byte for byte what Cassandra writes)
//   Snappy   a raw Snappy block (libsnappy, when the system has it)
//
// The libraries are loaded from the system at first use, not linked: where one is missing
// CodecAvailable() says so and TypeScript uses its npm fallback for that codec instead.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "errors.h"

namespace tde {

enum class CodecId { kNone, kLz4, kDeflate, kSnappy };

// "None", "LZ4", "Deflate" or "Snappy"; false for any other name.
bool ParseCodec(const std::string& name, CodecId* out);

// Whether this process can run the codec here (None always can).
bool CodecAvailable(CodecId codec);

// The most bytes Compress can write for `len` input bytes, framing included.
size_t CompressBound(CodecId codec, size_t len);

// Compresses one chunk. `cap` must be at least CompressBound(codec, len).
Status Compress(CodecId codec, const uint8_t* in, size_t len, uint8_t* out, size_t cap,
                size_t* written);

// Decompresses one chunk, which must decode to exactly `expected` bytes; `out` holds at least
// that many. Every length the chunk claims is checked before it is trusted, so a hostile chunk
// can neither overrun `out` nor make anything allocate by its say-so. Failures are
// ERR_TDE_CORRUPT_CHUNK with a message saying what is wrong.
Status Uncompress(CodecId codec, const uint8_t* in, size_t len, uint8_t* out, size_t expected);

}  // namespace tde
