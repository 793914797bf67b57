#include "gcm_ni.h"

#include <openssl/crypto.h>

#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define TDE_GCMNI 1
#include <immintrin.h>
#else
#define TDE_GCMNI 0
#endif

namespace tde {
namespace gcmni {

#if TDE_GCMNI

namespace {

// VAES and VPCLMULQDQ (Intel since Ice Lake, AMD since Zen 3) take two blocks per instruction in
// 256-bit registers, for AES and GHASH alike; the 128-bit helpers serve the odd blocks.
#define TDE_TARGET_GCM __attribute__((target("aes,pclmul,ssse3,sse4.1,avx,avx2,vaes,vpclmulqdq")))
#define TDE_INLINE inline __attribute__((always_inline))

// Needs VAES and VPCLMULQDQ: with only the 128-bit instructions, OpenSSL's own stitched GCM (what
// EVP runs) is as fast as this code would be. SSTABLE_TDE_VAES=0 turns it off.
bool CpuHasVaes() {
  __builtin_cpu_init();
  return aesni::WideAllowed() && __builtin_cpu_supports("pclmul") &&
         __builtin_cpu_supports("ssse3") && __builtin_cpu_supports("sse4.1") &&
         __builtin_cpu_supports("avx2") && __builtin_cpu_supports("vaes") &&
         __builtin_cpu_supports("vpclmulqdq");
}

TDE_TARGET_GCM TDE_INLINE __m128i ByteSwap(__m128i x) {
  const __m128i reverse = _mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  return _mm_shuffle_epi8(x, reverse);
}

TDE_TARGET_GCM TDE_INLINE __m128i Load(const uint8_t* p) {
  return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
}

// An unreduced product, as three 128-bit parts: lo + mid * x^64 + hi * x^128. Products are summed
// in this form and reduced once (Reduce), which is what makes eight-block aggregation cheap.
struct Wide {
  __m128i lo;
  __m128i mid;
  __m128i hi;
};

TDE_TARGET_GCM TDE_INLINE Wide Zero() {
  return Wide{_mm_setzero_si128(), _mm_setzero_si128(), _mm_setzero_si128()};
}

// acc += a * b (schoolbook: four carry-less 64x64 multiplications).
TDE_TARGET_GCM TDE_INLINE void MulAdd(__m128i a, __m128i b, Wide* acc) {
  acc->lo = _mm_xor_si128(acc->lo, _mm_clmulepi64_si128(a, b, 0x00));
  acc->hi = _mm_xor_si128(acc->hi, _mm_clmulepi64_si128(a, b, 0x11));
  acc->mid = _mm_xor_si128(acc->mid, _mm_clmulepi64_si128(a, b, 0x01));
  acc->mid = _mm_xor_si128(acc->mid, _mm_clmulepi64_si128(a, b, 0x10));
}

// The 256-bit product reduced to a field element: shifted left one bit (the operands are
// bit-reflected), then reduced modulo x^128 + x^7 + x^2 + x + 1 in two folding steps.
TDE_TARGET_GCM TDE_INLINE __m128i Reduce(const Wide& w) {
  __m128i lo = _mm_xor_si128(w.lo, _mm_slli_si128(w.mid, 8));
  __m128i hi = _mm_xor_si128(w.hi, _mm_srli_si128(w.mid, 8));

  // [hi:lo] <<= 1, carrying between the 32-bit lanes and from lo into hi.
  __m128i lo_carry = _mm_srli_epi32(lo, 31);
  __m128i hi_carry = _mm_srli_epi32(hi, 31);
  lo = _mm_slli_epi32(lo, 1);
  hi = _mm_slli_epi32(hi, 1);
  __m128i across = _mm_srli_si128(lo_carry, 12);
  lo = _mm_or_si128(lo, _mm_slli_si128(lo_carry, 4));
  hi = _mm_or_si128(hi, _mm_slli_si128(hi_carry, 4));
  hi = _mm_or_si128(hi, across);

  // First step: the low half's multiples of x^127, x^126 and x^121 (left shifts 31, 30, 25).
  __m128i a = _mm_xor_si128(_mm_xor_si128(_mm_slli_epi32(lo, 31), _mm_slli_epi32(lo, 30)),
                            _mm_slli_epi32(lo, 25));
  __m128i spill = _mm_srli_si128(a, 4);
  lo = _mm_xor_si128(lo, _mm_slli_si128(a, 12));

  // Second step: right shifts 1, 2 and 7, plus what the first step spilled over.
  __m128i b = _mm_xor_si128(_mm_xor_si128(_mm_srli_epi32(lo, 1), _mm_srli_epi32(lo, 2)),
                            _mm_srli_epi32(lo, 7));
  b = _mm_xor_si128(b, spill);
  lo = _mm_xor_si128(lo, b);
  return _mm_xor_si128(hi, lo);
}

TDE_TARGET_GCM TDE_INLINE __m128i Mul(__m128i a, __m128i b) {
  Wide w = Zero();
  MulAdd(a, b, &w);
  return Reduce(w);
}

// y = GHASH over n whole blocks from p, continuing from y; eight blocks per reduction.
TDE_TARGET_GCM TDE_INLINE __m128i HashBlocks(const __m128i* h, __m128i y, const uint8_t* p,
                                             size_t n) {
  for (; n >= 8; p += 128, n -= 8) {
    Wide w = Zero();
    for (int k = 0; k < 8; k++) {
      __m128i x = ByteSwap(Load(p + 16 * k));
      if (k == 0) x = _mm_xor_si128(x, y);
      MulAdd(x, h[7 - k], &w);
    }
    y = Reduce(w);
  }
  for (; n > 0; p += 16, n--) y = Mul(_mm_xor_si128(y, ByteSwap(Load(p))), h[0]);
  return y;
}

// GHASH over `len` bytes, the last block padded with zeros.
TDE_TARGET_GCM TDE_INLINE __m128i HashBytes(const __m128i* h, __m128i y, const uint8_t* p,
                                            size_t len) {
  y = HashBlocks(h, y, p, len / 16);
  size_t rest = len % 16;
  if (rest > 0) {
    alignas(16) uint8_t block[16] = {0};
    std::memcpy(block, p + len - rest, rest);
    y = HashBlocks(h, y, block, 1);
    OPENSSL_cleanse(block, sizeof block);
  }
  return y;
}

TDE_TARGET_GCM TDE_INLINE __m128i Counter(__m128i base, uint32_t ctr) {
  return _mm_insert_epi32(base, static_cast<int>(__builtin_bswap32(ctr)), 3);
}

TDE_TARGET_GCM TDE_INLINE __m128i EncryptBlock(const __m128i* rk, int rounds, __m128i x) {
  x = _mm_xor_si128(x, rk[0]);
  for (int r = 1; r < rounds; r++) x = _mm_aesenc_si128(x, rk[r]);
  return _mm_aesenclast_si128(x, rk[rounds]);
}

TDE_TARGET_GCM TDE_INLINE void MulAdd2(__m256i a, __m256i b, __m256i* lo, __m256i* mid,
                                       __m256i* hi) {
  *lo = _mm256_xor_si256(*lo, _mm256_clmulepi64_epi128(a, b, 0x00));
  *hi = _mm256_xor_si256(*hi, _mm256_clmulepi64_epi128(a, b, 0x11));
  *mid = _mm256_xor_si256(*mid, _mm256_clmulepi64_epi128(a, b, 0x01));
  *mid = _mm256_xor_si256(*mid, _mm256_clmulepi64_epi128(a, b, 0x10));
}

TDE_TARGET_GCM TDE_INLINE __m128i Fold(__m256i x) {
  return _mm_xor_si128(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1));
}

// Counter mode over eight blocks from `in` to `out`, two per 256-bit register, while GHASH takes
// in the eight blocks at `hashed` (when not null), two per multiplication: each of the first four
// rounds is followed by one pair's multiplication, so the AES unit and the multiplier work side by
// side, and the two lanes' sums are added before the one reduction. Decryption hashes the blocks
// it decrypts (all read before `out` is written, so `out` may be `in`); encryption hashes the
// eight before.
TDE_TARGET_GCM TDE_INLINE void Eight(const __m128i* rk, int rounds, const __m256i* pairs,
                                     __m128i base, uint32_t* ctr, const uint8_t* in, uint8_t* out,
                                     const uint8_t* hashed, __m128i* y) {
  const __m256i reverse = _mm256_broadcastsi128_si256(
      _mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
  __m256i x[4];
  const __m256i first = _mm256_broadcastsi128_si256(rk[0]);
  for (int k = 0; k < 4; k++) {
    __m256i c = _mm256_set_m128i(Counter(base, *ctr + 2 * k + 1), Counter(base, *ctr + 2 * k));
    x[k] = _mm256_xor_si256(c, first);
  }
  *ctr += 8;

  __m256i lo = _mm256_setzero_si256();
  __m256i mid = _mm256_setzero_si256();
  __m256i hi = _mm256_setzero_si256();
  int r = 1;
  if (hashed != nullptr) {
    // Rounds 1 to 4 each have a pair of blocks to multiply.
    for (; r <= 4; r++) {
      const __m256i key = _mm256_broadcastsi128_si256(rk[r]);
      for (int k = 0; k < 4; k++) x[k] = _mm256_aesenc_epi128(x[k], key);
      __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(hashed + 32 * (r - 1)));
      b = _mm256_shuffle_epi8(b, reverse);
      if (r == 1) b = _mm256_xor_si256(b, _mm256_set_m128i(_mm_setzero_si128(), *y));
      MulAdd2(b, pairs[r - 1], &lo, &mid, &hi);
    }
  }
  for (; r < rounds; r++) {
    const __m256i key = _mm256_broadcastsi128_si256(rk[r]);
    for (int k = 0; k < 4; k++) x[k] = _mm256_aesenc_epi128(x[k], key);
  }
  const __m256i last = _mm256_broadcastsi128_si256(rk[rounds]);
  for (int k = 0; k < 4; k++) {
    __m256i p = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(in + 32 * k));
    __m256i c = _mm256_xor_si256(p, _mm256_aesenclast_epi128(x[k], last));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 32 * k), c);
  }
  if (hashed != nullptr) *y = Reduce(Wide{Fold(lo), Fold(mid), Fold(hi)});
}

// Counter mode over the last `len` (< 128) bytes, block by block, the last one partial.
TDE_TARGET_GCM TDE_INLINE void Tail(const __m128i* rk, int rounds, __m128i base, uint32_t ctr,
                                    const uint8_t* in, uint8_t* out, size_t len) {
  for (; len > 0; ctr++) {
    size_t n = len < 16 ? len : 16;
    alignas(16) uint8_t block[16] = {0};
    std::memcpy(block, in, n);
    __m128i ks = EncryptBlock(rk, rounds, Counter(base, ctr));
    _mm_store_si128(reinterpret_cast<__m128i*>(block),
                    _mm_xor_si128(_mm_load_si128(reinterpret_cast<const __m128i*>(block)), ks));
    std::memcpy(out, block, n);
    OPENSSL_cleanse(block, sizeof block);
    in += n;
    out += n;
    len -= n;
  }
}

// What a chunk's GCM run carries from its start, through its groups of eight blocks, to its end.
struct Chunk {
  const __m128i* rk;
  int rounds;
  const __m128i* h;  // H^1 .. H^8
  __m128i base;      // J0 = IV || 1; the data's counter blocks start at J0 + 1
  uint32_t ctr;
  __m128i y;  // GHASH so far
};

TDE_TARGET_GCM TDE_INLINE Chunk Start(const aesni::RoundKeys& keys, const HashKey& hash,
                                      const uint8_t* iv, const uint8_t* aad, size_t aad_len) {
  Chunk c;
  c.rk = reinterpret_cast<const __m128i*>(keys.bytes);
  c.rounds = keys.rounds;
  c.h = reinterpret_cast<const __m128i*>(hash.powers);
  alignas(16) uint8_t j0[16] = {0};
  std::memcpy(j0, iv, 12);
  j0[15] = 1;
  c.base = _mm_load_si128(reinterpret_cast<const __m128i*>(j0));
  c.ctr = 2;
  c.y = HashBytes(c.h, _mm_setzero_si128(), aad, aad_len);
  return c;
}

// After the groups of eight: the encrypted group not yet hashed (`pending`, or null), the last
// `rest` (< 128) bytes, the lengths block and the tag.
TDE_TARGET_GCM TDE_INLINE void Finish(Chunk* c, const uint8_t* pending, const uint8_t* in,
                                      uint8_t* out, size_t rest, size_t aad_len, size_t len,
                                      bool decrypt, uint8_t tag[16]) {
  if (pending != nullptr) c->y = HashBlocks(c->h, c->y, pending, 8);
  if (rest > 0) {
    if (decrypt) c->y = HashBytes(c->h, c->y, in, rest);
    Tail(c->rk, c->rounds, c->base, c->ctr, in, out, rest);
    if (!decrypt) c->y = HashBytes(c->h, c->y, out, rest);
  }

  // The lengths block: bits of additional data, then bits of text, each 64-bit big-endian.
  __m128i lengths =
      _mm_set_epi64x(static_cast<long long>(aad_len) * 8, static_cast<long long>(len) * 8);
  __m128i y = Mul(_mm_xor_si128(c->y, lengths), c->h[0]);
  __m128i t = _mm_xor_si128(ByteSwap(y), EncryptBlock(c->rk, c->rounds, c->base));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(tag), t);
}

// Encryption hashes each group's ciphertext while it encrypts the next; decryption hashes the
// group it decrypts.
TDE_TARGET_GCM void Run(const aesni::RoundKeys& keys, const HashKey& hash, const uint8_t* iv,
                        const uint8_t* aad, size_t aad_len, const uint8_t* in, uint8_t* out,
                        size_t len, uint8_t tag[16], bool decrypt) {
  Chunk c = Start(keys, hash, iv, aad, aad_len);
  // The powers in pairs, as the 256-bit multiplications take them: block 2j of a group (low
  // lane) with H^(8-2j), block 2j+1 (high lane) with H^(7-2j).
  __m256i pairs[4];
  for (int j = 0; j < 4; j++) pairs[j] = _mm256_set_m128i(c.h[6 - 2 * j], c.h[7 - 2 * j]);
  const uint8_t* pending = nullptr;
  for (size_t g = len / 128; g > 0; g--, in += 128, out += 128) {
    Eight(c.rk, c.rounds, pairs, c.base, &c.ctr, in, out, decrypt ? in : pending, &c.y);
    pending = decrypt ? nullptr : out;
  }
  Finish(&c, pending, in, out, len % 128, aad_len, len, decrypt, tag);
}

TDE_TARGET_GCM void Powers(const aesni::RoundKeys& keys, HashKey* out) {
  const __m128i* rk = reinterpret_cast<const __m128i*>(keys.bytes);
  __m128i* p = reinterpret_cast<__m128i*>(out->powers);
  p[0] = ByteSwap(EncryptBlock(rk, keys.rounds, _mm_setzero_si128()));
  for (int i = 1; i < 8; i++) p[i] = Mul(p[i - 1], p[0]);
}

}  // namespace

bool Available() {
  static const bool cpu = CpuHasVaes();
  return cpu && aesni::Available();
}

void Init(const aesni::RoundKeys& keys, HashKey* out) { Powers(keys, out); }

void Encrypt(const aesni::RoundKeys& keys, const HashKey& hash, const uint8_t* iv,
             const uint8_t* aad, size_t aad_len, const uint8_t* in, uint8_t* out, size_t len,
             uint8_t tag[16]) {
  Run(keys, hash, iv, aad, aad_len, in, out, len, tag, false);
}

void Decrypt(const aesni::RoundKeys& keys, const HashKey& hash, const uint8_t* iv,
             const uint8_t* aad, size_t aad_len, const uint8_t* in, uint8_t* out, size_t len,
             uint8_t tag[16]) {
  Run(keys, hash, iv, aad, aad_len, in, out, len, tag, true);
}

#else  // !TDE_GCMNI

bool Available() { return false; }
void Init(const aesni::RoundKeys&, HashKey*) {}
void Encrypt(const aesni::RoundKeys&, const HashKey&, const uint8_t*, const uint8_t*, size_t,
             const uint8_t*, uint8_t*, size_t, uint8_t*) {}
void Decrypt(const aesni::RoundKeys&, const HashKey&, const uint8_t*, const uint8_t*, size_t,
             const uint8_t*, uint8_t*, size_t, uint8_t*) {}

#endif  // TDE_GCMNI

}  // namespace gcmni
}  // namespace tde
