#include "aes_ni.h"

#include <openssl/crypto.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define TDE_AESNI 1
#include <immintrin.h>
#else
#define TDE_AESNI 0
#endif

namespace tde {
namespace aesni {

namespace {

bool EnabledByEnvironment() {
  const char* env = std::getenv("SSTABLE_TDE_MULTIBUFFER");
  return env == nullptr || std::strcmp(env, "0") != 0;
}

std::atomic<bool> g_enabled{EnabledByEnvironment()};

#if TDE_AESNI

// Only these functions need AES-NI; the rest of the addon runs on any x86-64, and Available()
// keeps these from being called where the instructions are missing.
#define TDE_TARGET_AES __attribute__((target("aes,sse2")))

bool CpuHasAesNi() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("aes");
}

// FIPS-197's SubWord (the S-box on each byte), from AESKEYGENASSIST, which applies it to the
// second 32-bit lane among others.
TDE_TARGET_AES uint32_t SubWord(uint32_t w) {
  __m128i x = _mm_set_epi32(0, 0, static_cast<int>(w), 0);
  x = _mm_aeskeygenassist_si128(x, 0);
  return static_cast<uint32_t>(_mm_cvtsi128_si32(x));
}

// Encrypts `blocks` blocks of each of N chunks, one block of every chunk per step. `chain` holds
// each chunk's previous ciphertext block (its IV at the start) and is updated. The N states stay
// in registers, so the N AESENC instructions of a round are independent and overlap in the unit.
template <int N>
TDE_TARGET_AES void Interleaved(const __m128i* rk, int rounds, const uint8_t* const* in,
                                uint8_t* const* out, __m128i* chain, size_t blocks) {
  __m128i c[N];
  for (int k = 0; k < N; k++) c[k] = chain[k];

  for (size_t b = 0; b < blocks; b++) {
    const size_t at = b * 16;
    __m128i x[N];
    for (int k = 0; k < N; k++) {
      __m128i p = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in[k] + at));
      x[k] = _mm_xor_si128(_mm_xor_si128(p, c[k]), rk[0]);
    }
    for (int r = 1; r < rounds; r++) {
      const __m128i key = _mm_load_si128(rk + r);
      for (int k = 0; k < N; k++) x[k] = _mm_aesenc_si128(x[k], key);
    }
    const __m128i last = _mm_load_si128(rk + rounds);
    for (int k = 0; k < N; k++) {
      c[k] = _mm_aesenclast_si128(x[k], last);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out[k] + at), c[k]);
    }
  }

  for (int k = 0; k < N; k++) chain[k] = c[k];
}

// The padded last block of a chunk: its remaining len % 16 bytes, then PKCS5 padding bytes.
TDE_TARGET_AES void EncryptLastBlock(const __m128i* rk, int rounds, __m128i chain,
                                     const uint8_t* rest, size_t rest_len, uint8_t* out) {
  alignas(16) uint8_t block[16];
  if (rest_len > 0) std::memcpy(block, rest, rest_len);  // an empty chunk may have no memory
  std::memset(block + rest_len, static_cast<int>(16 - rest_len), 16 - rest_len);
  __m128i x = _mm_xor_si128(_mm_load_si128(reinterpret_cast<const __m128i*>(block)), chain);
  x = _mm_xor_si128(x, rk[0]);
  for (int r = 1; r < rounds; r++) x = _mm_aesenc_si128(x, rk[r]);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm_aesenclast_si128(x, rk[rounds]));
  OPENSSL_cleanse(block, sizeof block);
}

constexpr int kLanes = 8;

struct Lane {
  Job job;
  const uint8_t* in;
  uint8_t* out;
  size_t left;  // whole blocks still to encrypt
};

TDE_TARGET_AES void Step(const __m128i* rk, int rounds, Lane* lanes, __m128i* chain, int active,
                         size_t blocks) {
  const uint8_t* in[kLanes];
  uint8_t* out[kLanes];
  for (int k = 0; k < active; k++) {
    in[k] = lanes[k].in;
    out[k] = lanes[k].out;
  }
  switch (active) {
    case 1:
      Interleaved<1>(rk, rounds, in, out, chain, blocks);
      break;
    case 2:
      Interleaved<2>(rk, rounds, in, out, chain, blocks);
      break;
    case 3:
      Interleaved<3>(rk, rounds, in, out, chain, blocks);
      break;
    case 4:
      Interleaved<4>(rk, rounds, in, out, chain, blocks);
      break;
    case 5:
      Interleaved<5>(rk, rounds, in, out, chain, blocks);
      break;
    case 6:
      Interleaved<6>(rk, rounds, in, out, chain, blocks);
      break;
    case 7:
      Interleaved<7>(rk, rounds, in, out, chain, blocks);
      break;
    default:
      Interleaved<8>(rk, rounds, in, out, chain, blocks);
      break;
  }
  for (int k = 0; k < active; k++) {
    lanes[k].in += blocks * 16;
    lanes[k].out += blocks * 16;
    lanes[k].left -= blocks;
  }
}

TDE_TARGET_AES void Run(const RoundKeys& keys, JobSource* source) {
  const __m128i* rk = reinterpret_cast<const __m128i*>(keys.bytes);
  Lane lanes[kLanes];
  __m128i chain[kLanes];
  int active = 0;
  bool more = true;

  // A chunk's whole blocks are done: add its padding block, if any, and hand it back.
  auto finish = [&](const Lane& lane, __m128i last) {
    const Job& job = lane.job;
    size_t whole = job.len / 16 * 16;
    if (job.padding)
      EncryptLastBlock(rk, keys.rounds, last, job.in + whole, job.len - whole, job.out + whole);
    source->Done(job);
  };

  auto fill = [&] {
    while (more && active < kLanes) {
      Lane& lane = lanes[active];
      if (!source->Next(&lane.job)) {
        more = false;
        break;
      }
      lane.in = lane.job.in;
      lane.out = lane.job.out;
      lane.left = lane.job.len / 16;
      chain[active] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(lane.job.iv));
      if (lane.left == 0) {
        finish(lane, chain[active]);
      } else {
        active++;
      }
    }
  };

  fill();
  while (active > 0) {
    // Run every lane as far as the shortest one goes, then replace the ones that are done.
    size_t blocks = lanes[0].left;
    for (int k = 1; k < active; k++) blocks = lanes[k].left < blocks ? lanes[k].left : blocks;
    Step(rk, keys.rounds, lanes, chain, active, blocks);

    for (int k = active - 1; k >= 0; k--) {
      if (lanes[k].left != 0) continue;
      finish(lanes[k], chain[k]);
      active--;
      lanes[k] = lanes[active];
      chain[k] = chain[active];
    }
    fill();
  }
  OPENSSL_cleanse(chain, sizeof chain);
}

// The counter block for `hi:lo` (a 128-bit big-endian number), as AESENC takes it.
inline __m128i CounterBlock(uint64_t hi, uint64_t lo) {
  return _mm_set_epi64x(static_cast<long long>(__builtin_bswap64(lo)),
                        static_cast<long long>(__builtin_bswap64(hi)));
}

template <int N>
TDE_TARGET_AES void CtrBlocks(const __m128i* rk, int rounds, uint64_t* hi, uint64_t* lo,
                              const uint8_t* in, uint8_t* out) {
  __m128i x[N];
  for (int k = 0; k < N; k++) {
    x[k] = _mm_xor_si128(CounterBlock(*hi, *lo), rk[0]);
    if (++*lo == 0) ++*hi;
  }
  for (int r = 1; r < rounds; r++) {
    const __m128i key = _mm_load_si128(rk + r);
    for (int k = 0; k < N; k++) x[k] = _mm_aesenc_si128(x[k], key);
  }
  const __m128i last = _mm_load_si128(rk + rounds);
  for (int k = 0; k < N; k++) {
    __m128i p = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 16 * k));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 16 * k),
                     _mm_xor_si128(p, _mm_aesenclast_si128(x[k], last)));
  }
}

// The IV as a 128-bit big-endian counter, hi:lo.
inline void CounterOf(const uint8_t* iv, uint64_t* hi, uint64_t* lo) {
  *hi = 0;
  *lo = 0;
  for (int i = 0; i < 8; i++) {
    *hi = *hi << 8 | iv[i];
    *lo = *lo << 8 | iv[8 + i];
  }
}

// Counter mode over `len` bytes from the counter hi:lo.
TDE_TARGET_AES void CtrFrom(const __m128i* rk, int rounds, uint64_t hi, uint64_t lo,
                            const uint8_t* in, uint8_t* out, size_t len) {
  for (; len >= 128; in += 128, out += 128, len -= 128)
    CtrBlocks<8>(rk, rounds, &hi, &lo, in, out);
  for (; len >= 16; in += 16, out += 16, len -= 16) CtrBlocks<1>(rk, rounds, &hi, &lo, in, out);
  if (len > 0) {
    // The last, partial block: through a block of scratch so nothing past `len` is touched.
    alignas(16) uint8_t block[16] = {0};
    std::memcpy(block, in, len);
    CtrBlocks<1>(rk, rounds, &hi, &lo, block, block);
    std::memcpy(out, block, len);
    OPENSSL_cleanse(block, sizeof block);
  }
}

TDE_TARGET_AES void Ctr(const RoundKeys& keys, const uint8_t* iv, const uint8_t* in, uint8_t* out,
                        size_t len) {
  uint64_t hi;
  uint64_t lo;
  CounterOf(iv, &hi, &lo);
  CtrFrom(reinterpret_cast<const __m128i*>(keys.bytes), keys.rounds, hi, lo, in, out, len);
}

template <int N>
TDE_TARGET_AES void CbcDecryptBlocks(const __m128i* dk, int rounds, __m128i* prev,
                                     const uint8_t* in, uint8_t* out) {
  __m128i c[N];
  __m128i x[N];
  for (int k = 0; k < N; k++) {
    c[k] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 16 * k));
    x[k] = _mm_xor_si128(c[k], dk[0]);
  }
  for (int r = 1; r < rounds; r++) {
    const __m128i key = _mm_load_si128(dk + r);
    for (int k = 0; k < N; k++) x[k] = _mm_aesdec_si128(x[k], key);
  }
  const __m128i last = _mm_load_si128(dk + rounds);
  for (int k = 0; k < N; k++) {
    __m128i p = _mm_xor_si128(_mm_aesdeclast_si128(x[k], last), k == 0 ? *prev : c[k - 1]);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 16 * k), p);
  }
  *prev = c[N - 1];
}

// CBC decryption of whole blocks, `prev` the ciphertext block (or IV) before `in`.
TDE_TARGET_AES void CbcDecryptFrom(const __m128i* dk, int rounds, __m128i prev, const uint8_t* in,
                                   uint8_t* out, size_t len) {
  for (; len >= 128; in += 128, out += 128, len -= 128)
    CbcDecryptBlocks<8>(dk, rounds, &prev, in, out);
  for (; len >= 16; in += 16, out += 16, len -= 16) CbcDecryptBlocks<1>(dk, rounds, &prev, in, out);
}

TDE_TARGET_AES void CbcDecrypt(const RoundKeys& inverse, const uint8_t* iv, const uint8_t* in,
                               uint8_t* out, size_t len) {
  CbcDecryptFrom(reinterpret_cast<const __m128i*>(inverse.bytes), inverse.rounds,
                 _mm_loadu_si128(reinterpret_cast<const __m128i*>(iv)), in, out, len);
}

// N independent blocks through the cipher (kDecrypt: the inverse cipher, with inverse keys).
template <int N, bool kDecrypt>
TDE_TARGET_AES void EcbBlocks(const __m128i* rk, int rounds, const uint8_t* in, uint8_t* out) {
  __m128i x[N];
  for (int k = 0; k < N; k++)
    x[k] = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 16 * k)), rk[0]);
  for (int r = 1; r < rounds; r++) {
    const __m128i key = _mm_load_si128(rk + r);
    for (int k = 0; k < N; k++)
      x[k] = kDecrypt ? _mm_aesdec_si128(x[k], key) : _mm_aesenc_si128(x[k], key);
  }
  const __m128i last = _mm_load_si128(rk + rounds);
  for (int k = 0; k < N; k++) {
    __m128i y = kDecrypt ? _mm_aesdeclast_si128(x[k], last) : _mm_aesenclast_si128(x[k], last);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 16 * k), y);
  }
}

template <bool kDecrypt>
TDE_TARGET_AES void Ecb(const RoundKeys& keys, const uint8_t* in, uint8_t* out, size_t len) {
  const __m128i* rk = reinterpret_cast<const __m128i*>(keys.bytes);
  for (; len >= 128; in += 128, out += 128, len -= 128)
    EcbBlocks<8, kDecrypt>(rk, keys.rounds, in, out);
  for (; len >= 16; in += 16, out += 16, len -= 16)
    EcbBlocks<1, kDecrypt>(rk, keys.rounds, in, out);
}

TDE_TARGET_AES void Inverse(const RoundKeys& keys, RoundKeys* out) {
  const __m128i* ek = reinterpret_cast<const __m128i*>(keys.bytes);
  __m128i* dk = reinterpret_cast<__m128i*>(out->bytes);
  int n = keys.rounds;
  dk[0] = ek[n];
  for (int i = 1; i < n; i++) dk[i] = _mm_aesimc_si128(ek[n - i]);
  dk[n] = ek[0];
  out->rounds = n;
}

// With VAES (Intel since Ice Lake, AMD since Zen 3) one instruction takes a round of two blocks
// in a 256-bit register. CTR, ECB and CBC decryption, whose blocks are independent, then run eight
// blocks as four pairs; what is left after the last whole eight goes through the code above.
#define TDE_TARGET_VAES __attribute__((target("aes,sse4.1,avx,avx2,vaes")))

bool CpuHasVaes() {
  __builtin_cpu_init();
  return WideAllowed() && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("vaes");
}

bool Vaes() {
  static const bool on = CpuHasVaes();
  return on;
}

TDE_TARGET_VAES inline __m256i Load2(const uint8_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

TDE_TARGET_VAES inline void Store2(uint8_t* p, __m256i x) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), x);
}

TDE_TARGET_VAES inline __m256i Broadcast(const __m128i* rk, int r) {
  return _mm256_broadcastsi128_si256(_mm_load_si128(rk + r));
}

// Four pairs of blocks through the cipher (kDecrypt: the inverse cipher, with inverse keys).
template <bool kDecrypt>
TDE_TARGET_VAES inline void Rounds2(const __m128i* rk, int rounds, __m256i* x) {
  for (int k = 0; k < 4; k++) x[k] = _mm256_xor_si256(x[k], Broadcast(rk, 0));
  for (int r = 1; r < rounds; r++) {
    const __m256i key = Broadcast(rk, r);
    for (int k = 0; k < 4; k++)
      x[k] = kDecrypt ? _mm256_aesdec_epi128(x[k], key) : _mm256_aesenc_epi128(x[k], key);
  }
  const __m256i last = Broadcast(rk, rounds);
  for (int k = 0; k < 4; k++)
    x[k] = kDecrypt ? _mm256_aesdeclast_epi128(x[k], last) : _mm256_aesenclast_epi128(x[k], last);
}

template <bool kDecrypt>
TDE_TARGET_VAES void EcbVaes(const RoundKeys& keys, const uint8_t* in, uint8_t* out, size_t len) {
  const __m128i* rk = reinterpret_cast<const __m128i*>(keys.bytes);
  for (; len >= 128; in += 128, out += 128, len -= 128) {
    __m256i x[4];
    for (int k = 0; k < 4; k++) x[k] = Load2(in + 32 * k);
    Rounds2<kDecrypt>(rk, keys.rounds, x);
    for (int k = 0; k < 4; k++) Store2(out + 32 * k, x[k]);
  }
  Ecb<kDecrypt>(keys, in, out, len);
}

TDE_TARGET_VAES void CtrVaes(const RoundKeys& keys, const uint8_t* iv, const uint8_t* in,
                             uint8_t* out, size_t len) {
  const __m128i* rk = reinterpret_cast<const __m128i*>(keys.bytes);
  uint64_t hi;
  uint64_t lo;
  CounterOf(iv, &hi, &lo);
  for (; len >= 128; in += 128, out += 128, len -= 128) {
    __m256i x[4];
    for (int k = 0; k < 4; k++) {
      __m128i first = CounterBlock(hi, lo);
      if (++lo == 0) ++hi;
      __m128i second = CounterBlock(hi, lo);
      if (++lo == 0) ++hi;
      x[k] = _mm256_set_m128i(second, first);
    }
    Rounds2<false>(rk, keys.rounds, x);
    for (int k = 0; k < 4; k++) Store2(out + 32 * k, _mm256_xor_si256(x[k], Load2(in + 32 * k)));
  }
  CtrFrom(rk, keys.rounds, hi, lo, in, out, len);
}

// CBC decryption: each plaintext block is its ciphertext block decrypted, xored with the block
// before it, which for a pair is the 32 bytes starting 16 bytes earlier. Every input of a group is
// loaded before any output is stored, so `out` may be `in`.
TDE_TARGET_VAES void CbcDecryptVaes(const RoundKeys& inverse, const uint8_t* iv, const uint8_t* in,
                                    uint8_t* out, size_t len) {
  const __m128i* dk = reinterpret_cast<const __m128i*>(inverse.bytes);
  __m128i prev = _mm_loadu_si128(reinterpret_cast<const __m128i*>(iv));
  for (; len >= 128; in += 128, out += 128, len -= 128) {
    __m256i x[4];
    __m256i before[4];
    for (int k = 0; k < 4; k++) x[k] = Load2(in + 32 * k);
    before[0] = _mm256_set_m128i(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in)), prev);
    for (int k = 1; k < 4; k++) before[k] = Load2(in + 32 * k - 16);
    prev = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 112));
    Rounds2<true>(dk, inverse.rounds, x);
    for (int k = 0; k < 4; k++) Store2(out + 32 * k, _mm256_xor_si256(x[k], before[k]));
  }
  CbcDecryptFrom(dk, inverse.rounds, prev, in, out, len);
}

#endif  // TDE_AESNI

}  // namespace

bool WideAllowed() {
  static const bool allowed = [] {
    const char* env = std::getenv("SSTABLE_TDE_VAES");
    return env == nullptr || std::strcmp(env, "0") != 0;
  }();
  return allowed;
}

bool Available() {
#if TDE_AESNI
  static const bool cpu = CpuHasAesNi();
  return cpu && g_enabled.load(std::memory_order_relaxed);
#else
  return false;
#endif
}

void SetEnabled(bool on) { g_enabled.store(on, std::memory_order_relaxed); }

bool ExpandKey(const uint8_t* key, size_t key_len, RoundKeys* out) {
#if TDE_AESNI
  if (key_len != 16 && key_len != 24 && key_len != 32) return false;
  const size_t nk = key_len / 4;
  const int rounds = static_cast<int>(nk) + 6;
  const size_t words = 4 * static_cast<size_t>(rounds + 1);

  // FIPS-197 key expansion on little-endian words: a word's bytes stay in memory order, which
  // is the order AESENC expects its round key in.
  uint32_t w[60];
  std::memcpy(w, key, key_len);
  uint32_t rcon = 1;
  for (size_t i = nk; i < words; i++) {
    uint32_t t = w[i - 1];
    if (i % nk == 0) {
      t = SubWord((t >> 8) | (t << 24)) ^ rcon;
      rcon = ((rcon << 1) ^ ((rcon & 0x80) != 0 ? 0x1b : 0)) & 0xff;
    } else if (nk > 6 && i % nk == 4) {
      t = SubWord(t);
    }
    w[i] = w[i - nk] ^ t;
  }
  std::memcpy(out->bytes, w, words * 4);
  out->rounds = rounds;
  OPENSSL_cleanse(w, sizeof w);
  return true;
#else
  (void)key;
  (void)key_len;
  (void)out;
  return false;
#endif
}

void InverseKeys(const RoundKeys& keys, RoundKeys* out) {
#if TDE_AESNI
  Inverse(keys, out);
#else
  (void)keys;
  (void)out;
#endif
}

void DecryptCbc(const RoundKeys& inverse, const uint8_t* iv, const uint8_t* in, uint8_t* out,
                size_t len) {
#if TDE_AESNI
  (Vaes() ? CbcDecryptVaes : CbcDecrypt)(inverse, iv, in, out, len);
#else
  (void)inverse;
  (void)iv;
  (void)in;
  (void)out;
  (void)len;
#endif
}

void CtrXor(const RoundKeys& keys, const uint8_t* iv, const uint8_t* in, uint8_t* out, size_t len) {
#if TDE_AESNI
  (Vaes() ? CtrVaes : Ctr)(keys, iv, in, out, len);
#else
  (void)keys;
  (void)iv;
  (void)in;
  (void)out;
  (void)len;
#endif
}

void EncryptEcb(const RoundKeys& keys, const uint8_t* in, uint8_t* out, size_t len) {
#if TDE_AESNI
  (Vaes() ? EcbVaes<false> : Ecb<false>)(keys, in, out, len);
#else
  (void)keys;
  (void)in;
  (void)out;
  (void)len;
#endif
}

void DecryptEcb(const RoundKeys& inverse, const uint8_t* in, uint8_t* out, size_t len) {
#if TDE_AESNI
  (Vaes() ? EcbVaes<true> : Ecb<true>)(inverse, in, out, len);
#else
  (void)inverse;
  (void)in;
  (void)out;
  (void)len;
#endif
}

void EncryptCbc(const RoundKeys& keys, JobSource* source) {
#if TDE_AESNI
  Run(keys, source);
#else
  (void)keys;
  (void)source;
#endif
}

}  // namespace aesni
}  // namespace tde
