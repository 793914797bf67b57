// AES with AES-NI where OpenSSL's EVP interface costs too much per chunk or leaves speed unused:
// multi-buffer CBC encryption, CBC decryption, CTR and ECB (GCM: gcm_ni.h).
//
// Multi-buffer AES-CBC encryption:
// CBC encryption is serial inside a chunk: each block is encrypted with the previous block's
// ciphertext mixed in, so one chunk leaves the AES unit idle for most of each instruction's
// latency (OpenSSL's single stream reaches about a third of what the unit can do). Chunks are
// independent, though, so this encrypts up to eight chunks at once, one block of each per step,
// which keeps the unit busy. Output is byte for byte what any CBC implementation gives.
//
// Decryption needs none of this: CBC decryption is parallel within a chunk, and OpenSSL's
// already runs at the unit's full rate.
//
// Where the processor has VAES, CTR, ECB and CBC decryption take two blocks per instruction in
// 256-bit registers (SSTABLE_TDE_VAES=0 turns that off); the OpenSSL inside Node 20 does not.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tde {
namespace aesni {

// Whether the addon's 256-bit code (VAES, VPCLMULQDQ: here, in gcm_ni.h and for CRC32) may run:
// true unless the environment variable SSTABLE_TDE_VAES is 0. Each user checks the processor.
bool WideAllowed();

// True on x86-64 processors with AES-NI, unless turned off by SetEnabled(false) or the
// environment variable SSTABLE_TDE_MULTIBUFFER=0 (benchmarks compare both ways).
bool Available();
void SetEnabled(bool on);

// The expanded key: rounds + 1 round keys of 16 bytes, in the order AESENC takes them.
struct RoundKeys {
  alignas(16) uint8_t bytes[15 * 16];
  int rounds = 0;  // 10, 12 or 14
};

// Expands a 16, 24 or 32-byte AES key. Requires Available(). Returns false for other lengths.
bool ExpandKey(const uint8_t* key, size_t key_len, RoundKeys* out);

// The round keys of the inverse cipher (for AESDEC), from an expanded key.
void InverseKeys(const RoundKeys& keys, RoundKeys* out);

// One chunk to encrypt: `len` bytes from `in`, CBC under `iv`, written to `out` (with PKCS5
// padding: len / 16 + 1 blocks; without: len / 16 blocks, and len must be a multiple of 16).
struct Job {
  const uint8_t* in = nullptr;
  size_t len = 0;
  uint8_t* out = nullptr;
  const uint8_t* iv = nullptr;
  bool padding = true;
  size_t index = 0;  // the caller's, handed back to Done
};

// Pulls jobs from Next() until it returns false, keeping up to eight in flight, and calls Done()
// as each one completes (in no particular order). Runs on the calling thread only.
class JobSource {
 public:
  virtual ~JobSource() = default;
  virtual bool Next(Job* job) = 0;
  virtual void Done(const Job& job) = 0;
};

void EncryptCbc(const RoundKeys& keys, JobSource* source);

// AES-CTR over `len` bytes (any length), as JCE's AES/CTR/NoPadding and OpenSSL count: `iv` is
// a 128-bit big-endian counter, one more for each 16-byte block. Encrypts and decrypts alike;
// `out` may be `in`. Eight blocks are in flight at a time, and no setup is paid per call.
void CtrXor(const RoundKeys& keys, const uint8_t* iv, const uint8_t* in, uint8_t* out, size_t len);

// AES-CBC decryption of `len` bytes (a multiple of 16) with the inverse keys: parallel within a
// chunk, eight blocks at a time, and no setup per call. `out` may be `in`. Padding is the
// caller's to check.
void DecryptCbc(const RoundKeys& inverse, const uint8_t* iv, const uint8_t* in, uint8_t* out,
                size_t len);

// AES-ECB over `len` bytes (a multiple of 16; padding is the caller's), eight blocks in flight
// and no setup per call. Decryption takes the inverse keys. `out` may be `in`.
void EncryptEcb(const RoundKeys& keys, const uint8_t* in, uint8_t* out, size_t len);
void DecryptEcb(const RoundKeys& inverse, const uint8_t* in, uint8_t* out, size_t len);

}  // namespace aesni
}  // namespace tde
