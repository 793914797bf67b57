// Encrypts and decrypts chunks in DSE's layout: [IV][ciphertext], a fresh random IV per chunk
// (none for ECB). Pure C++: no Node-API here, so the same object serves pool threads.
#pragma once

#include <openssl/evp.h>

#include <cstdint>
#include <memory>
#include <string>

#include "aes_ni.h"
#include "errors.h"
#include "gcm_ni.h"
#include "secure_bytes.h"

namespace tde {

// What TypeScript decided about a cipher; the addon checks only what OpenSSL alone can know.
struct CipherSpec {
  std::string evp_name;   // OpenSSL name, e.g. "AES-128-CBC", "BF-ECB", "DES-EDE3-CBC"
  size_t iv_length = 0;   // bytes of IV stored before each chunk's ciphertext; 0 for ECB
  bool padding = true;    // PKCS5 padding (JCE's PKCS5Padding), else NoPadding
  int rc2_key_bits = 0;   // RC2's effective key bits; 0 for other ciphers
  size_t tag_length = 0;  // AEAD (GCM) tag bytes stored after the ciphertext; 0 otherwise
  // Cassandra's commit log and hints: one IV for every block of a file, kept in the file's
  // header rather than before each block. When set, iv_length must be 0 and this IV is used.
  std::string fixed_iv;
};

// A byte range the caller owns; {nullptr, 0} when absent.
struct Span {
  const uint8_t* data = nullptr;
  size_t size = 0;
};

// Owns a cipher context for one thread's run of chunks. Not shareable between threads.
class CipherContext {
 public:
  CipherContext() : ctx_(EVP_CIPHER_CTX_new()) {}
  ~CipherContext() { EVP_CIPHER_CTX_free(ctx_); }
  CipherContext(const CipherContext&) = delete;
  CipherContext& operator=(const CipherContext&) = delete;
  EVP_CIPHER_CTX* get() const { return ctx_; }

 private:
  EVP_CIPHER_CTX* ctx_;
};

// An AES key as the addon's AES-NI code takes it: expanded for encryption and for decryption,
// and (GCM only) the GHASH key derived from it.
struct AesKeySet {
  aesni::RoundKeys forward;
  aesni::RoundKeys inverse;
  gcmni::HashKey hash;
};

class ChunkCipherCore {
 public:
  // Validates the spec and key against OpenSSL and copies the key into locked memory.
  static std::shared_ptr<ChunkCipherCore> Create(const CipherSpec& spec, const uint8_t* key,
                                                 size_t key_len, Status* status);

  // Largest output for `plain_len` input bytes, IV (and tag) included.
  size_t EncryptedLength(size_t plain_len) const;
  // Largest plaintext a chunk of `stored_len` bytes can hold (0 if it is too short to be valid).
  size_t MaxDecryptedLength(size_t stored_len) const;

  // Prepares `ctx` with the key for encryption or decryption. Each chunk then only resets the IV,
  // so the key schedule is computed once per thread per batch, not once per chunk.
  Status Prepare(CipherContext* ctx, bool encrypt) const;
  // `aad` is authenticated with the chunk under an AEAD mode and must be absent otherwise.
  // `iv` holds iv_length fresh random bytes for this chunk, or is null to draw them here (a
  // batch draws all its IVs in one call: the DRBG's per-call cost exceeds a small chunk's AES).
  Status Encrypt(CipherContext* ctx, const uint8_t* in, size_t in_len, Span aad, uint8_t* out,
                 size_t out_cap, size_t* written, const uint8_t* iv = nullptr) const;
  Status Decrypt(CipherContext* ctx, const uint8_t* in, size_t in_len, Span aad, uint8_t* out,
                 size_t out_cap, size_t* written) const;

  // The checks Encrypt makes before touching any byte, for callers that encrypt by other means.
  Status CheckEncrypt(size_t in_len, size_t out_cap) const;

  // The expanded key for multi-buffer encryption (aes_ni.h), or null when this cipher cannot
  // use it: not AES-CBC with per-chunk IVs, no AES-NI, turned off, or destroyed.
  const aesni::RoundKeys* MultiBufferKeys() const {
    return mode_ == Mode::kCbc ? AesKeys() : nullptr;
  }

  void Wipe() {
    key_.Wipe();
    if (aes_keys_) aes_keys_->Wipe();
  }
  bool wiped() const { return key_.wiped(); }
  bool aead() const { return spec_.tag_length > 0; }
  const CipherSpec& spec() const { return spec_; }
  size_t block_size() const { return block_size_; }

 private:
  ChunkCipherCore(const CipherSpec& spec, const EVP_CIPHER* cipher, const uint8_t* key,
                  size_t key_len);
  Status AddAad(EVP_CIPHER_CTX* c, Span aad) const;
  const uint8_t* FixedIv() const {
    return spec_.fixed_iv.empty() ? nullptr
                                  : reinterpret_cast<const uint8_t*>(spec_.fixed_iv.data());
  }

  // ECB: chunks go through EVP without re-initialising it for each (ECB carries no state from
  // block to block) and the padding is added and checked here. CTR (AES, with AES-NI): through
  // aes_ni.h. Re-initialising EVP for every chunk costs as much as encrypting a 16 KiB chunk.
  Status EncryptEcb(EVP_CIPHER_CTX* c, const uint8_t* in, size_t in_len, uint8_t* out,
                    size_t* written) const;
  Status DecryptEcb(EVP_CIPHER_CTX* c, const uint8_t* in, size_t in_len, uint8_t* out,
                    size_t* written) const;
  // Checks and removes PKCS5 padding from `len` decrypted bytes at `out`.
  Status Unpad(uint8_t* out, size_t len, size_t* written) const;
  // AES-GCM through gcm_ni.h (no EVP call per chunk). Encrypting, the chunk's IV is already in
  // place at the start of `out`.
  Status EncryptGcm(const AesKeySet& keys, const uint8_t* in, size_t in_len, Span aad, uint8_t* out,
                    size_t* written) const;
  Status DecryptGcm(const AesKeySet& keys, const uint8_t* in, size_t body_len, Span aad,
                    uint8_t* out, size_t* written) const;
  // The AES-NI key set (aes_keys_), or null when there is none or the code is turned off.
  const AesKeySet* KeySet() const {
    if (!aes_keys_ || aes_keys_->wiped() || !aesni::Available()) return nullptr;
    return reinterpret_cast<const AesKeySet*>(aes_keys_->data());
  }
  // Its expanded key, or the inverse cipher's; null as KeySet().
  const aesni::RoundKeys* AesKeys(bool inverse = false) const {
    const AesKeySet* set = KeySet();
    if (set == nullptr) return nullptr;
    return inverse ? &set->inverse : &set->forward;
  }

  enum class Mode { kOther, kEcb, kCbc, kCtr, kGcm };

  CipherSpec spec_;
  const EVP_CIPHER* cipher_;
  size_t block_size_;
  SecureBytes key_;
  Mode mode_ = Mode::kOther;
  // AES-CBC, CTR, ECB and GCM where the processor has AES-NI: an AesKeySet, in locked memory.
  std::unique_ptr<SecureBytes> aes_keys_;
};

}  // namespace tde
