#include "chunk_cipher.h"

#include <openssl/err.h>

#include <climits>
#include <cstring>

#include "cipher_suite.h"

namespace tde {

namespace {

Status EvpFailure(const char* call) {
  std::string reason = OpenSslReason();
  return Status::Error("ERR_TDE_CRYPTO_INTERNAL",
                       std::string(call) + " failed" + (reason.empty() ? "" : ": " + reason));
}

Status IntegrityFailure() {
  return Status::Error("ERR_TDE_INTEGRITY",
                       "the chunk fails its authentication tag: its bytes were altered, or it was "
                       "moved from another position, SSTable or key");
}

}  // namespace

Status ChunkCipherCore::AddAad(EVP_CIPHER_CTX* c, Span aad) const {
  if (spec_.tag_length == 0) {
    if (aad.data != nullptr) {
      return Status::Error("ERR_TDE_INVALID_ARGUMENT",
                           spec_.evp_name + " takes no additional data");
    }
    return Status::Ok();
  }
  if (aad.size > static_cast<size_t>(INT_MAX)) {
    return Status::Error("ERR_TDE_INVALID_ARGUMENT", "additional data too long");
  }
  int ignored = 0;
  if (aad.size > 0 &&
      EVP_CipherUpdate(c, nullptr, &ignored, aad.data, static_cast<int>(aad.size)) != 1) {
    return EvpFailure("EVP_CipherUpdate (additional data)");
  }
  return Status::Ok();
}

std::shared_ptr<ChunkCipherCore> ChunkCipherCore::Create(const CipherSpec& spec, const uint8_t* key,
                                                         size_t key_len, Status* status) {
  const EVP_CIPHER* cipher = FetchCipher(spec.evp_name, status);
  if (cipher == nullptr) return nullptr;

  // Key length is checked by Prepare() below through EVP_CIPHER_CTX_set_key_length, which
  // accepts any length a variable-length cipher takes and only the exact one otherwise.
  if (key_len == 0) {
    *status = Status::Error("ERR_TDE_KEY_LENGTH", spec.evp_name + " needs a key");
    return nullptr;
  }

  size_t cipher_iv = static_cast<size_t>(EVP_CIPHER_get_iv_length(cipher));
  bool is_aead = (EVP_CIPHER_get_flags(cipher) & EVP_CIPH_FLAG_AEAD_CIPHER) != 0;
  // Tags shorter than 12 bytes are forgeable by trial far too soon for chunks (NIST SP 800-38D
  // allows 4 and 8 bytes only for tightly limited uses).
  bool tag_ok = is_aead ? spec.tag_length >= 12 && spec.tag_length <= 16 : spec.tag_length == 0;
  if (!tag_ok) {
    *status = Status::Error("ERR_TDE_INVALID_ARGUMENT",
                            spec.evp_name + (is_aead ? " needs a tag length of 12 to 16 bytes"
                                                     : " is not an AEAD cipher; it takes no tag"));
    return nullptr;
  }
  if (!spec.fixed_iv.empty() && (spec.iv_length != 0 || spec.fixed_iv.size() != cipher_iv)) {
    *status = Status::Error("ERR_TDE_INVALID_ARGUMENT",
                            spec.evp_name + " takes a " + std::to_string(cipher_iv) + "-byte IV");
    return nullptr;
  }
  // Without either, every chunk would be encrypted under the same (all-zero) IV: for CBC equal
  // chunk beginnings would show, and for CTR and GCM the keystream would repeat.
  if (cipher_iv > 0 && spec.iv_length == 0 && spec.fixed_iv.empty()) {
    *status = Status::Error("ERR_TDE_INVALID_ARGUMENT",
                            spec.evp_name + " needs an IV: a fresh " + std::to_string(cipher_iv) +
                                "-byte one per chunk (ivLength) or a fixed one (fixedIv)");
    return nullptr;
  }
  if (spec.iv_length != 0 && spec.iv_length != cipher_iv) {
    *status = Status::Error("ERR_TDE_INVALID_ARGUMENT",
                            spec.evp_name + " uses a " + std::to_string(cipher_iv) +
                                "-byte IV, not " + std::to_string(spec.iv_length));
    return nullptr;
  }

  std::shared_ptr<ChunkCipherCore> core(new ChunkCipherCore(spec, cipher, key, key_len));
  if (!core->key_.valid()) {
    *status = Status::Error("ERR_TDE_CRYPTO_INTERNAL", "out of memory for the key");
    return nullptr;
  }

  // AES-CBC with a fresh IV per chunk can be encrypted many chunks at a time, and AES-CTR and
  // AES-ECB run without EVP's cost per call (aes_ni.h).
  const std::string& name = spec.evp_name;
  bool aes = name.rfind("AES-", 0) == 0;
  int mode = EVP_CIPHER_get_mode(cipher);
  if (mode == EVP_CIPH_ECB_MODE) core->mode_ = Mode::kEcb;
  if (aes && mode == EVP_CIPH_CBC_MODE) core->mode_ = Mode::kCbc;
  if (aes && mode == EVP_CIPH_CTR_MODE) core->mode_ = Mode::kCtr;
  // GCM with a fresh standard 12-byte IV per chunk (gcm_ni.h).
  bool gcm = aes && mode == EVP_CIPH_GCM_MODE && spec.iv_length == 12 && spec.fixed_iv.empty() &&
             gcmni::Available();
  if (gcm) core->mode_ = Mode::kGcm;
  bool per_chunk_iv = spec.iv_length == 16 && spec.fixed_iv.empty();
  bool aes_ni = gcm || (aes && core->mode_ == Mode::kEcb) ||
                ((core->mode_ == Mode::kCbc || core->mode_ == Mode::kCtr) && per_chunk_iv);
  if (aes_ni && aesni::Available()) {
    AesKeySet expanded;
    if (aesni::ExpandKey(key, key_len, &expanded.forward)) {
      aesni::InverseKeys(expanded.forward, &expanded.inverse);
      if (gcm) gcmni::Init(expanded.forward, &expanded.hash);
      core->aes_keys_.reset(
          new SecureBytes(reinterpret_cast<const uint8_t*>(&expanded), sizeof expanded));
      if (!core->aes_keys_->valid()) core->aes_keys_.reset();
    }
    OPENSSL_cleanse(&expanded, sizeof expanded);
  }

  // Prepare once now, so a key OpenSSL rejects (for example a variable-length key outside the
  // cipher's range) fails at creation rather than on the first chunk.
  CipherContext probe;
  Status st = core->Prepare(&probe, true);
  if (!st.ok()) {
    *status = st;
    return nullptr;
  }
  return core;
}

ChunkCipherCore::ChunkCipherCore(const CipherSpec& spec, const EVP_CIPHER* cipher,
                                 const uint8_t* key, size_t key_len)
    : spec_(spec),
      cipher_(cipher),
      block_size_(static_cast<size_t>(EVP_CIPHER_get_block_size(cipher))),
      key_(key, key_len) {}

size_t ChunkCipherCore::EncryptedLength(size_t plain_len) const {
  size_t body = plain_len;
  if (spec_.padding && block_size_ > 1) body = (plain_len / block_size_ + 1) * block_size_;
  return spec_.iv_length + body + spec_.tag_length;
}

size_t ChunkCipherCore::MaxDecryptedLength(size_t stored_len) const {
  size_t overhead = spec_.iv_length + spec_.tag_length;
  return stored_len < overhead ? 0 : stored_len - overhead;
}

Status ChunkCipherCore::Prepare(CipherContext* ctx, bool encrypt) const {
  if (key_.wiped()) {
    return Status::Error("ERR_TDE_CIPHER_DESTROYED", "the cipher was destroyed; its key is gone");
  }
  EVP_CIPHER_CTX* c = ctx->get();
  if (c == nullptr) return EvpFailure("EVP_CIPHER_CTX_new");

  int enc = encrypt ? 1 : 0;
  if (EVP_CipherInit_ex2(c, cipher_, nullptr, nullptr, enc, nullptr) != 1) {
    return EvpFailure("EVP_CipherInit_ex2");
  }

  // Blowfish and RC2 default to a 128-bit key; a shorter or longer key must be declared before it
  // is set, or OpenSSL silently uses only the default number of bytes.
  if (EVP_CIPHER_CTX_set_key_length(c, static_cast<int>(key_.size())) != 1) {
    std::string reason = OpenSslReason();
    return Status::Error("ERR_TDE_KEY_LENGTH", spec_.evp_name + " does not take a " +
                                                   std::to_string(key_.size() * 8) + "-bit key" +
                                                   (reason.empty() ? "" : " (" + reason + ")"));
  }
  if (spec_.rc2_key_bits > 0 &&
      EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_SET_RC2_KEY_BITS, spec_.rc2_key_bits, nullptr) != 1) {
    return EvpFailure("EVP_CTRL_SET_RC2_KEY_BITS");
  }
  if (EVP_CipherInit_ex2(c, nullptr, key_.data(), nullptr, enc, nullptr) != 1) {
    return EvpFailure("EVP_CipherInit_ex2 (key)");
  }
  // Set once: re-initialising with only an IV, as each chunk does, keeps it. ECB chunks are
  // padded and unpadded here (EncryptEcb, DecryptEcb), so EVP keeps no state between them.
  EVP_CIPHER_CTX_set_padding(c, spec_.padding && mode_ != Mode::kEcb ? 1 : 0);
  return Status::Ok();
}

Status ChunkCipherCore::EncryptEcb(EVP_CIPHER_CTX* c, const uint8_t* in, size_t in_len,
                                   uint8_t* out, size_t* written) const {
  size_t whole = in_len / block_size_ * block_size_;
  const aesni::RoundKeys* keys = AesKeys();
  int n = 0;
  if (keys != nullptr) {
    aesni::EncryptEcb(*keys, in, out, whole);
    n = static_cast<int>(whole);
  } else if (whole > 0 && EVP_CipherUpdate(c, out, &n, in, static_cast<int>(whole)) != 1) {
    return EvpFailure("EVP_CipherUpdate");
  }
  size_t done = static_cast<size_t>(n);
  if (spec_.padding) {
    // PKCS5: the rest of the chunk, then as many bytes as the block lacks, each that count.
    uint8_t block[EVP_MAX_BLOCK_LENGTH];
    size_t rest = in_len - whole;
    if (rest > 0) std::memcpy(block, in + whole, rest);  // an empty input may have no memory
    std::memset(block + rest, static_cast<int>(block_size_ - rest), block_size_ - rest);
    int m = static_cast<int>(block_size_);
    bool ok = true;
    if (keys != nullptr) {
      aesni::EncryptEcb(*keys, block, out + done, block_size_);
    } else {
      ok = EVP_CipherUpdate(c, out + done, &m, block, static_cast<int>(block_size_)) == 1;
    }
    OPENSSL_cleanse(block, sizeof block);
    if (!ok) return EvpFailure("EVP_CipherUpdate");
    done += static_cast<size_t>(m);
  }
  *written = done;
  return Status::Ok();
}

Status ChunkCipherCore::DecryptEcb(EVP_CIPHER_CTX* c, const uint8_t* in, size_t in_len,
                                   uint8_t* out, size_t* written) const {
  const aesni::RoundKeys* inverse = AesKeys(true);
  int n = 0;
  if (inverse != nullptr) {
    aesni::DecryptEcb(*inverse, in, out, in_len);
    n = static_cast<int>(in_len);
  } else if (in_len > 0 && EVP_CipherUpdate(c, out, &n, in, static_cast<int>(in_len)) != 1) {
    return EvpFailure("EVP_CipherUpdate");
  }
  if (!spec_.padding) {
    *written = static_cast<size_t>(n);
    return Status::Ok();
  }
  return Unpad(out, static_cast<size_t>(n), written);
}

Status ChunkCipherCore::EncryptGcm(const AesKeySet& keys, const uint8_t* in, size_t in_len,
                                   Span aad, uint8_t* out, size_t* written) const {
  uint8_t* body = out + spec_.iv_length;
  uint8_t tag[16];
  gcmni::Encrypt(keys.forward, keys.hash, out, aad.data, aad.size, in, body, in_len, tag);
  std::memcpy(body + in_len, tag, spec_.tag_length);
  *written = spec_.iv_length + in_len + spec_.tag_length;
  return Status::Ok();
}

Status ChunkCipherCore::DecryptGcm(const AesKeySet& keys, const uint8_t* in, size_t body_len,
                                   Span aad, uint8_t* out, size_t* written) const {
  uint8_t expected[16];
  gcmni::Decrypt(keys.forward, keys.hash, in, aad.data, aad.size, in + spec_.iv_length, out,
                 body_len, expected);
  // Compared in constant time. The plaintext is written before the tag is checked: wiped here
  // on a mismatch, and the batch layer discards `out` on any error.
  bool match = CRYPTO_memcmp(expected, in + spec_.iv_length + body_len, spec_.tag_length) == 0;
  OPENSSL_cleanse(expected, sizeof expected);
  if (!match) {
    OPENSSL_cleanse(out, body_len);
    return IntegrityFailure();
  }
  *written = body_len;
  return Status::Ok();
}

Status ChunkCipherCore::Unpad(uint8_t* out, size_t len, size_t* written) const {
  // Every padding byte must say how many there are, from 1 to a whole block.
  size_t pad = len > 0 ? out[len - 1] : 0;
  bool valid = pad >= 1 && pad <= block_size_ && pad <= len;
  for (size_t i = 1; valid && i <= pad; i++) valid = out[len - i] == pad;
  if (!valid) {
    OPENSSL_cleanse(out, len);
    return Status::Error("ERR_TDE_DECRYPT_FAILED",
                         "the chunk does not decrypt to valid padding: it was written with a "
                         "different key, or its bytes were altered");
  }
  *written = len - pad;
  return Status::Ok();
}

Status ChunkCipherCore::CheckEncrypt(size_t in_len, size_t out_cap) const {
  if (in_len > static_cast<size_t>(INT_MAX) - 64) {
    return Status::Error("ERR_TDE_CHUNK_LENGTH", "a chunk may hold at most 2 GiB");
  }
  if (out_cap < EncryptedLength(in_len)) {
    return Status::Error("ERR_TDE_INVALID_ARGUMENT", "output buffer too small for the chunk");
  }
  if (key_.wiped()) {
    return Status::Error("ERR_TDE_CIPHER_DESTROYED", "the cipher was destroyed; its key is gone");
  }
  if (!spec_.padding && block_size_ > 1 && in_len % block_size_ != 0) {
    return Status::Error("ERR_TDE_CHUNK_LENGTH",
                         "NoPadding needs whole " + std::to_string(block_size_) +
                             "-byte blocks; the chunk has " + std::to_string(in_len) + " bytes");
  }
  return Status::Ok();
}

Status ChunkCipherCore::Encrypt(CipherContext* ctx, const uint8_t* in, size_t in_len, Span aad,
                                uint8_t* out, size_t out_cap, size_t* written,
                                const uint8_t* fresh_iv) const {
  Status checked = CheckEncrypt(in_len, out_cap);
  if (!checked.ok()) return checked;
  EVP_CIPHER_CTX* c = ctx->get();

  if (mode_ == Mode::kEcb && spec_.tag_length == 0) return EncryptEcb(c, in, in_len, out, written);
  const aesni::RoundKeys* ctr = mode_ == Mode::kCtr ? AesKeys() : nullptr;
  if (ctr != nullptr) {
    if (fresh_iv != nullptr) {
      std::memcpy(out, fresh_iv, 16);
    } else if (!RandomBytes(out, 16)) {
      return EvpFailure("RAND_bytes");
    }
    aesni::CtrXor(*ctr, out, in, out + 16, in_len);
    *written = 16 + in_len;
    return Status::Ok();
  }

  const uint8_t* iv = FixedIv();
  if (spec_.iv_length > 0) {
    if (fresh_iv != nullptr) {
      std::memcpy(out, fresh_iv, spec_.iv_length);
    } else if (!RandomBytes(out, spec_.iv_length)) {
      return EvpFailure("RAND_bytes");
    }
    iv = out;
  }
  const AesKeySet* gcm = mode_ == Mode::kGcm ? KeySet() : nullptr;
  if (gcm != nullptr) return EncryptGcm(*gcm, in, in_len, aad, out, written);
  if (EVP_CipherInit_ex2(c, nullptr, nullptr, iv, 1, nullptr) != 1) {
    return EvpFailure("EVP_CipherInit_ex2 (IV)");
  }

  Status st = AddAad(c, aad);
  if (!st.ok()) return st;

  uint8_t* body = out + spec_.iv_length;
  int n1 = 0;
  int n2 = 0;
  if (EVP_CipherUpdate(c, body, &n1, in, static_cast<int>(in_len)) != 1) {
    return EvpFailure("EVP_CipherUpdate");
  }
  if (EVP_CipherFinal_ex(c, body + n1, &n2) != 1) {
    ERR_clear_error();
    return Status::Error("ERR_TDE_CHUNK_LENGTH",
                         "NoPadding needs whole " + std::to_string(block_size_) +
                             "-byte blocks; the chunk has " + std::to_string(in_len) + " bytes");
  }
  size_t body_len = static_cast<size_t>(n1) + static_cast<size_t>(n2);
  if (spec_.tag_length > 0 &&
      EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, static_cast<int>(spec_.tag_length),
                          body + body_len) != 1) {
    return EvpFailure("EVP_CTRL_AEAD_GET_TAG");
  }
  *written = spec_.iv_length + body_len + spec_.tag_length;
  return Status::Ok();
}

Status ChunkCipherCore::Decrypt(CipherContext* ctx, const uint8_t* in, size_t in_len, Span aad,
                                uint8_t* out, size_t out_cap, size_t* written) const {
  if (in_len > static_cast<size_t>(INT_MAX)) {
    return Status::Error("ERR_TDE_CHUNK_LENGTH", "a chunk may hold at most 2 GiB");
  }
  size_t overhead = spec_.iv_length + spec_.tag_length;
  size_t body_len = in_len < overhead ? 0 : in_len - overhead;
  bool whole_blocks = block_size_ <= 1 || body_len % block_size_ == 0;
  if (in_len < overhead || !whole_blocks || (spec_.padding && block_size_ > 1 && body_len == 0)) {
    return Status::Error(
        "ERR_TDE_CHUNK_LENGTH",
        "an encrypted chunk of " + std::to_string(in_len) +
            " bytes cannot be valid: it must hold a " + std::to_string(spec_.iv_length) +
            "-byte IV" +
            (spec_.tag_length > 0 ? ", a " + std::to_string(spec_.tag_length) + "-byte tag"
                                  : std::string()) +
            (block_size_ > 1 ? " and whole " + std::to_string(block_size_) + "-byte blocks"
                             : std::string()));
  }
  if (out_cap < body_len) {
    return Status::Error("ERR_TDE_INVALID_ARGUMENT", "output buffer too small for the chunk");
  }
  if (key_.wiped()) {
    return Status::Error("ERR_TDE_CIPHER_DESTROYED", "the cipher was destroyed; its key is gone");
  }
  EVP_CIPHER_CTX* c = ctx->get();

  if (mode_ == Mode::kEcb && spec_.tag_length == 0) return DecryptEcb(c, in, in_len, out, written);
  const aesni::RoundKeys* ctr = mode_ == Mode::kCtr ? AesKeys() : nullptr;
  if (ctr != nullptr) {
    aesni::CtrXor(*ctr, in, in + 16, out, body_len);
    *written = body_len;
    return Status::Ok();
  }
  const aesni::RoundKeys* inverse = mode_ == Mode::kCbc ? AesKeys(true) : nullptr;
  if (inverse != nullptr) {
    aesni::DecryptCbc(*inverse, in, in + 16, out, body_len);
    if (!spec_.padding) {
      *written = body_len;
      return Status::Ok();
    }
    return Unpad(out, body_len, written);
  }

  const AesKeySet* gcm = mode_ == Mode::kGcm ? KeySet() : nullptr;
  if (gcm != nullptr) return DecryptGcm(*gcm, in, body_len, aad, out, written);

  const uint8_t* iv = spec_.iv_length > 0 ? in : FixedIv();
  if (EVP_CipherInit_ex2(c, nullptr, nullptr, iv, 0, nullptr) != 1) {
    return EvpFailure("EVP_CipherInit_ex2 (IV)");
  }
  if (spec_.tag_length > 0) {
    // OpenSSL takes the expected tag through a non-const pointer; hand it a copy.
    uint8_t tag[16];
    std::memcpy(tag, in + spec_.iv_length + body_len, spec_.tag_length);
    if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, static_cast<int>(spec_.tag_length), tag) !=
        1) {
      return EvpFailure("EVP_CTRL_AEAD_SET_TAG");
    }
  }
  Status st = AddAad(c, aad);
  if (!st.ok()) return st;

  // With padding on, EVP holds back the last block until Final, so Update writes at most
  // body_len - block_size bytes and Final at most block_size - 1: `out` of body_len suffices.
  // Under GCM, Update writes plaintext before the tag is checked; the caller must discard `out`
  // when this returns an error, as the batch layer does.
  int n1 = 0;
  int n2 = 0;
  if (EVP_CipherUpdate(c, out, &n1, in + spec_.iv_length, static_cast<int>(body_len)) != 1) {
    return EvpFailure("EVP_CipherUpdate");
  }
  if (EVP_CipherFinal_ex(c, out + n1, &n2) != 1) {
    ERR_clear_error();
    OPENSSL_cleanse(out, static_cast<size_t>(n1));  // never leave unauthenticated plaintext about
    if (spec_.tag_length > 0) return IntegrityFailure();
    return Status::Error("ERR_TDE_DECRYPT_FAILED",
                         "the chunk does not decrypt to valid padding: it was written with a "
                         "different key, or its bytes were altered");
  }
  *written = static_cast<size_t>(n1) + static_cast<size_t>(n2);
  return Status::Ok();
}

}  // namespace tde
