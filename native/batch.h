// A batch of independent chunks encrypted or decrypted across the thread pool.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "chunk_cipher.h"
#include "errors.h"

namespace tde {

struct BatchJob {
  std::shared_ptr<ChunkCipherCore> core;
  bool encrypt = true;

  // Caller-owned memory; it must stay valid and untouched until Run() returns.
  std::vector<const uint8_t*> in;
  std::vector<size_t> in_len;
  std::vector<uint8_t*> out;
  std::vector<size_t> out_cap;
  // Additional data per chunk for AEAD ciphers; empty otherwise.
  std::vector<Span> aad;

  // Filled by Run(): bytes written per chunk, and the first failure (lowest chunk index).
  std::vector<uint32_t> written;
  Status status;

  // Safe to call off the JS thread. Stops early once a chunk fails.
  void Run();
};

}  // namespace tde
