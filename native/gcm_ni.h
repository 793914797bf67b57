// AES-GCM with VAES and VPCLMULQDQ, for chunks with the standard 12-byte IV.
//
// OpenSSL's own AES-GCM is fast on long messages, but through EVP every chunk pays for a
// re-initialisation and several provider parameter lookups, a real share of a 4 KiB chunk; and
// the OpenSSL inside Node 20 does not use the 256-bit AES and carry-less multiply instructions of
// recent processors. Here a chunk costs only its blocks: the counter-mode AES of eight blocks, two
// per instruction, runs interleaved with the GHASH of the eight before them, so the AES unit and
// the carry-less multiplier work side by side, and GHASH reduces once per eight blocks (powers of
// H up to H^8 are kept with the key). Without those instructions, GCM goes through EVP.
//
// GHASH works on bit-reflected field elements; as is usual with PCLMULQDQ, blocks are
// byte-reversed on load and the product is shifted left by one bit before the reduction modulo
// x^128 + x^7 + x^2 + x + 1. Output is byte for byte that of any GCM implementation (NIST SP
// 800-38D); the tests compare it with OpenSSL's through Node's crypto.
#pragma once

#include <cstddef>
#include <cstdint>

#include "aes_ni.h"

namespace tde {
namespace gcmni {

// True where aesni::Available() is, the processor has AVX2, VAES and VPCLMULQDQ, and
// SSTABLE_TDE_VAES is not 0.
bool Available();

// The hash key's powers H^1 .. H^8, in the form the multiplications take. Key material: keep it
// in wiped memory, as the round keys.
struct HashKey {
  alignas(16) uint8_t powers[8][16];
};

// Computes the hash key of an expanded AES key. Requires Available().
void Init(const aesni::RoundKeys& keys, HashKey* out);

// Encrypts or decrypts `len` bytes (any length) under `iv` (12 bytes), after authenticating
// `aad`, and writes the full 16-byte tag to `tag` (encrypting: the tag to store; decrypting: the
// one expected, for the caller to compare in constant time). `out` may be `in`.
void Encrypt(const aesni::RoundKeys& keys, const HashKey& hash, const uint8_t* iv,
             const uint8_t* aad, size_t aad_len, const uint8_t* in, uint8_t* out, size_t len,
             uint8_t tag[16]);
void Decrypt(const aesni::RoundKeys& keys, const HashKey& hash, const uint8_t* iv,
             const uint8_t* aad, size_t aad_len, const uint8_t* in, uint8_t* out, size_t len,
             uint8_t tag[16]);

}  // namespace gcmni
}  // namespace tde
