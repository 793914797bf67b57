#include "checksum.h"

namespace tde {

uint32_t Adler32(uint32_t adler, const uint8_t* data, size_t len) {
  constexpr uint32_t kMod = 65521;
  // The largest n for which 255n(n+1)/2 + (n+1)(kMod-1) fits in 32 bits: the sums may run this
  // many bytes before they must be reduced.
  constexpr size_t kMaxRun = 5552;

  uint32_t a = adler & 0xffff;
  uint32_t b = adler >> 16;
  while (len > 0) {
    size_t run = len < kMaxRun ? len : kMaxRun;
    len -= run;
    for (size_t i = 0; i < run; i++) {
      a += data[i];
      b += a;
    }
    data += run;
    a %= kMod;
    b %= kMod;
  }
  return (b << 16) | a;
}

}  // namespace tde
