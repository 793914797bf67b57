// Error codes the addon can report. src/errors.ts declares the same codes (a test keeps the two
// lists equal), so TypeScript callers can branch on `err.code` whichever side raised the error.
#pragma once

#include <cstdint>
#include <string>

#define TDE_NATIVE_ERROR_CODES(X)                                                                \
  X(ERR_TDE_INVALID_ARGUMENT)   /* a caller broke the addon's contract (TS should prevent it) */ \
  X(ERR_TDE_CIPHER_UNAVAILABLE) /* OpenSSL has no such cipher in the addon's library context */  \
  X(ERR_TDE_KEY_LENGTH)         /* the cipher refused the key length */                          \
  X(ERR_TDE_CIPHER_DESTROYED)   /* destroy() was called; the key is gone */                      \
  X(ERR_TDE_CHUNK_LENGTH)       /* ciphertext shorter than its IV or not whole blocks */         \
  X(ERR_TDE_DECRYPT_FAILED)     /* padding check failed: wrong key or altered chunk */           \
  X(ERR_TDE_INTEGRITY)          /* GCM tag check failed: altered, moved or swapped chunk */      \
  X(ERR_TDE_CORRUPT_CHUNK)      /* a chunk does not decompress to its expected length */         \
  X(ERR_TDE_CRYPTO_INTERNAL)    /* an EVP or codec library call failed for a reason it names */    \
  X(ERR_TDE_IO)                 /* a read failed, or the file ended before the bytes asked for */

namespace tde {

// A result passed from worker threads back to the JS thread as data. `code` is one of the names
// above, or nullptr for success. `index` is the position of the failing buffer within a batch.
struct Status {
  const char* code = nullptr;
  std::string message;
  int64_t index = -1;

  bool ok() const { return code == nullptr; }

  static Status Ok() { return Status(); }
  static Status Error(const char* code, std::string message) {
    Status s;
    s.code = code;
    s.message = std::move(message);
    return s;
  }
};

// Appends OpenSSL's reason for the most recent failure on this thread, then clears the queue so
// a later call does not report a stale reason.
std::string OpenSslReason();

}  // namespace tde
