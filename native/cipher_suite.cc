#include "cipher_suite.h"

#include <openssl/err.h>
#include <openssl/provider.h>
#include <openssl/rand.h>

#include <mutex>
#include <unordered_map>

namespace tde {

std::string OpenSslReason() {
  unsigned long err = ERR_get_error();
  std::string reason;
  if (err != 0) {
    char buf[256];
    ERR_error_string_n(err, buf, sizeof(buf));
    reason = buf;
  }
  ERR_clear_error();
  return reason;
}

OSSL_LIB_CTX* LibraryContext() {
  // Created once and kept for the life of the process: ciphers fetched from it are cached below
  // and may be in use on pool threads at any time.
  static OSSL_LIB_CTX* ctx = [] {
    OSSL_LIB_CTX* c = OSSL_LIB_CTX_new();
    if (c != nullptr) {
      OSSL_PROVIDER_load(c, "default");
      OSSL_PROVIDER_load(c, "legacy");
      ERR_clear_error();
    }
    return c;
  }();
  return ctx;
}

const EVP_CIPHER* FetchCipher(const std::string& name, Status* status) {
  static std::mutex mutex;
  static std::unordered_map<std::string, EVP_CIPHER*> cache;

  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(name);
  if (it != cache.end()) return it->second;

  OSSL_LIB_CTX* ctx = LibraryContext();
  EVP_CIPHER* cipher = ctx == nullptr ? nullptr : EVP_CIPHER_fetch(ctx, name.c_str(), nullptr);
  if (cipher == nullptr) {
    std::string reason = OpenSslReason();
    *status = Status::Error("ERR_TDE_CIPHER_UNAVAILABLE",
                            "OpenSSL cannot provide cipher " + name +
                                (reason.empty() ? std::string() : " (" + reason + ")"));
    return nullptr;
  }
  cache.emplace(name, cipher);
  return cipher;
}

bool RandomBytes(unsigned char* out, size_t len) {
  if (len == 0) return true;
  bool ok = RAND_bytes_ex(LibraryContext(), out, len, 0) == 1;
  if (!ok) ERR_clear_error();
  return ok;
}

}  // namespace tde
