// Key bytes held in native memory: locked against swapping where the OS allows it, and wiped
// with OPENSSL_cleanse on Wipe(), on destruction, and (through the registry in addon.cc) at exit.
#pragma once

#include <openssl/crypto.h>
#include <sys/mman.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace tde {

// Wipes the stack just below the caller's frame: where the functions it called kept their frames.
// The AES-NI and GCM code keep round keys and hash-key powers in registers, but a compiler may
// spill some (the GCM code does); call this once a thread's run of chunks is done, so no key-
// derived bytes stay behind on stacks that are neither locked nor wiped.
__attribute__((noinline)) inline void ScrubStack() {
  uint8_t scrub[16384];
  OPENSSL_cleanse(scrub, sizeof scrub);
  __asm__ __volatile__("" : : "r"(scrub) : "memory");  // keeps the array where it is
}

class SecureBytes {
 public:
  SecureBytes(const uint8_t* data, size_t len) : len_(len) {
    data_ = static_cast<uint8_t*>(std::malloc(len == 0 ? 1 : len));
    if (data_ == nullptr) return;
    locked_ = mlock(data_, len_) == 0;
    std::memcpy(data_, data, len);
  }
  ~SecureBytes() {
    Wipe();
    if (data_ != nullptr) {
      if (locked_) munlock(data_, len_);
      std::free(data_);
    }
  }
  SecureBytes(const SecureBytes&) = delete;
  SecureBytes& operator=(const SecureBytes&) = delete;

  // Idempotent and safe to call from any thread; readers check wiped() first.
  void Wipe() {
    bool expected = false;
    if (data_ != nullptr && wiped_.compare_exchange_strong(expected, true)) {
      OPENSSL_cleanse(data_, len_);
    }
  }

  bool wiped() const { return wiped_.load(); }
  bool valid() const { return data_ != nullptr; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return len_; }

 private:
  uint8_t* data_ = nullptr;
  size_t len_;
  bool locked_ = false;
  std::atomic<bool> wiped_{false};
};

}  // namespace tde
