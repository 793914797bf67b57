// The addon's own OpenSSL library context and the ciphers fetched from it.
#pragma once

#include <openssl/evp.h>

#include <string>

#include "errors.h"

namespace tde {

// A library context private to the addon, with OpenSSL's default and legacy providers loaded.
// DES, Blowfish and RC2 exist only in the legacy provider; loading it here rather than into the
// default context leaves the host process (Node's own crypto module) exactly as it was.
OSSL_LIB_CTX* LibraryContext();

// Fetches a cipher by its OpenSSL name ("AES-128-CBC", "BF-ECB", ...). Fetched ciphers are cached
// for the life of the process; the returned pointer must not be freed.
const EVP_CIPHER* FetchCipher(const std::string& name, Status* status);

// Fills `out` with `len` bytes from the library context's CSPRNG.
bool RandomBytes(unsigned char* out, size_t len);

}  // namespace tde
