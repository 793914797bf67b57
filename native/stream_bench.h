// A baseline for benchmarks: one thread pushing one continuous stream through an EVP cipher, as
// `openssl speed -evp` does. It exists so bench/ can compare the chunk cipher with plain OpenSSL
// in the same process and run; nothing else uses it.
#pragma once

#include <cstddef>
#include <cstdint>

#include "chunk_cipher.h"
#include "errors.h"

namespace tde {

// Encrypts `rounds` consecutive pieces of `chunk` bytes as a single stream (no per-chunk IV or
// re-initialisation) and stores the elapsed seconds in `seconds`.
Status StreamBench(const CipherSpec& spec, const uint8_t* key, size_t key_len, size_t chunk,
                   size_t rounds, double* seconds);

// The same on `threads` threads at once, each with its own stream and memory (`openssl speed
// -multi`): what OpenSSL itself reaches when every core encrypts, memory bandwidth included.
// `seconds` is the time until the last stream finishes.
Status StreamBenchParallel(const CipherSpec& spec, const uint8_t* key, size_t key_len, size_t chunk,
                           size_t rounds, size_t threads, double* seconds);

}  // namespace tde
