// A batch of independent chunks carried through the codec and the cipher across the thread pool:
// encoding compresses then encrypts each chunk (as DSE's encrypting compressors do), decoding
// decrypts then decompresses it. Either step may be absent: a cipher alone (Encryptor, config
// values), a codec alone (Cassandra's plain compressors). Checksums of what is produced come in
// the same pass, while the bytes are still in cache.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "checksum.h"
#include "chunk_cipher.h"
#include "codec.h"
#include "errors.h"

namespace tde {

// Which chunk comes next and the first failure, shared by the threads of one batch.
class Progress;

struct ChunkJob {
  std::shared_ptr<ChunkCipherCore> core;  // null: no encryption step
  CodecId codec = CodecId::kNone;
  bool encode = true;

  // Caller-owned memory; it must stay valid and untouched until Run() returns. Encoding writes
  // each chunk's compressed form into its output and encrypts it there, in place.
  std::vector<const uint8_t*> in;
  std::vector<size_t> in_len;
  std::vector<uint8_t*> out;
  std::vector<size_t> out_cap;
  // Decoding: the plain length each chunk must have. Empty: whatever decryption yields (only
  // without a codec).
  std::vector<size_t> expected;
  // Additional data per chunk for AEAD ciphers; empty otherwise.
  std::vector<Span> aad;
  // Encoding: the checksum (of `sum_kind`) of each output chunk as stored. Decoding: the CRC32
  // of each plain chunk.
  bool want_sums = false;
  ChecksumKind sum_kind = ChecksumKind::kCrc32;

  // Filled by Run(): bytes written per chunk, checksums if asked for, and the first failure
  // (lowest chunk index).
  std::vector<uint32_t> written;
  std::vector<uint32_t> sums;
  Status status;

  // Runs the batch on the thread pool and returns at once; `done` runs once, when every chunk is
  // done or the batch has stopped at a failure: on a pool thread, or on the caller's thread when
  // nothing was started (an empty batch, no IVs). The job must stay where it is, untouched,
  // until then. Stops early once a chunk fails.
  void Start(std::function<void()> done);

 private:
  void Body();

  std::vector<uint8_t> ivs_;
  std::shared_ptr<Progress> progress_;
};

}  // namespace tde
