#include "codec.h"

#include <dlfcn.h>
#include <zlib.h>

#include <climits>
#include <cstring>
#include <mutex>

namespace tde {

namespace {

// The few functions of each library this uses, with the signatures their public headers
// declare; looked up once, on first use.
struct Lz4Api {
  int (*compress_default)(const char* src, char* dst, int src_size, int dst_capacity);
  int (*decompress_safe)(const char* src, char* dst, int compressed_size, int dst_capacity);
  int (*compress_bound)(int input_size);
};

// zlib's, from the system's libz (the zlib Java's Deflater uses, so Deflate chunks come out as
// Cassandra writes them; the zlib built into Node compresses differently). Only z_stream's
// layout comes from the header, and it is zlib's stable ABI.
struct ZApi {
  int (*deflate_init)(z_streamp strm, int level, const char* version, int stream_size);
  int (*deflate)(z_streamp strm, int flush);
  int (*deflate_reset)(z_streamp strm);
  int (*deflate_end)(z_streamp strm);
  int (*inflate_init)(z_streamp strm, const char* version, int stream_size);
  int (*inflate)(z_streamp strm, int flush);
  int (*inflate_reset)(z_streamp strm);
  int (*inflate_end)(z_streamp strm);
  uLong (*compress_bound)(uLong source_len);
};

struct SnappyApi {
  // snappy-c.h: 0 is SNAPPY_OK.
  int (*compress)(const char* input, size_t input_length, char* compressed,
                  size_t* compressed_length);
  int (*uncompress)(const char* compressed, size_t compressed_length, char* uncompressed,
                    size_t* uncompressed_length);
  size_t (*max_compressed_length)(size_t source_length);
  int (*uncompressed_length)(const char* compressed, size_t compressed_length, size_t* result);
};

template <typename Fn>
bool Bind(void* lib, const char* name, Fn* fn) {
  *fn = reinterpret_cast<Fn>(dlsym(lib, name));
  return *fn != nullptr;
}

// RTLD_DEEPBIND: a library's calls to its own functions must reach its own, not the like-named
// ones Node exports (Node carries a zlib of its own).
void* Open(const char* name) { return dlopen(name, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND); }

const Lz4Api* Lz4() {
  static const Lz4Api* api = []() -> const Lz4Api* {
    void* lib = Open("liblz4.so.1");
    if (lib == nullptr) return nullptr;
    static Lz4Api a;
    bool ok = Bind(lib, "LZ4_compress_default", &a.compress_default) &&
              Bind(lib, "LZ4_decompress_safe", &a.decompress_safe) &&
              Bind(lib, "LZ4_compressBound", &a.compress_bound);
    return ok ? &a : nullptr;
  }();
  return api;
}

const SnappyApi* Snappy() {
  static const SnappyApi* api = []() -> const SnappyApi* {
    void* lib = Open("libsnappy.so.1");
    if (lib == nullptr) return nullptr;
    static SnappyApi a;
    bool ok = Bind(lib, "snappy_compress", &a.compress) &&
              Bind(lib, "snappy_uncompress", &a.uncompress) &&
              Bind(lib, "snappy_max_compressed_length", &a.max_compressed_length) &&
              Bind(lib, "snappy_uncompressed_length", &a.uncompressed_length);
    return ok ? &a : nullptr;
  }();
  return api;
}

const ZApi* Zlib() {
  static const ZApi* api = []() -> const ZApi* {
    void* lib = Open("libz.so.1");
    if (lib == nullptr) return nullptr;
    static ZApi a;
    bool ok =
        Bind(lib, "deflateInit_", &a.deflate_init) && Bind(lib, "deflate", &a.deflate) &&
        Bind(lib, "deflateReset", &a.deflate_reset) && Bind(lib, "deflateEnd", &a.deflate_end) &&
        Bind(lib, "inflateInit_", &a.inflate_init) && Bind(lib, "inflate", &a.inflate) &&
        Bind(lib, "inflateReset", &a.inflate_reset) && Bind(lib, "inflateEnd", &a.inflate_end) &&
        Bind(lib, "compressBound", &a.compress_bound);
    return ok ? &a : nullptr;
  }();
  return api;
}

Status Corrupt(std::string message) {
  return Status::Error("ERR_TDE_CORRUPT_CHUNK", std::move(message));
}

Status Failed(const char* what) {
  return Status::Error("ERR_TDE_CRYPTO_INTERNAL", std::string(what) + " failed");
}

// One zlib stream per thread for each direction, reset between chunks: setting one up costs
// more than deflating a small chunk.
struct ZStreams {
  z_stream deflater{};
  z_stream inflater{};
  bool deflate_ready = false;
  bool inflate_ready = false;
  ~ZStreams() {
    if (deflate_ready) Zlib()->deflate_end(&deflater);
    if (inflate_ready) Zlib()->inflate_end(&inflater);
  }
};

ZStreams& Streams() {
  thread_local ZStreams streams;
  return streams;
}

Status Deflate(const uint8_t* in, size_t len, uint8_t* out, size_t cap, size_t* written) {
  ZStreams& z = Streams();
  const ZApi* zl = Zlib();
  if (!z.deflate_ready) {
    if (zl->deflate_init(&z.deflater, Z_DEFAULT_COMPRESSION, ZLIB_VERSION,
                         static_cast<int>(sizeof(z_stream))) != Z_OK) {
      return Failed("deflateInit");
    }
    z.deflate_ready = true;
  } else if (zl->deflate_reset(&z.deflater) != Z_OK) {
    return Failed("deflateReset");
  }
  z.deflater.next_in = const_cast<Bytef*>(in);
  z.deflater.avail_in = static_cast<uInt>(len);
  z.deflater.next_out = out;
  z.deflater.avail_out = static_cast<uInt>(cap > UINT_MAX ? UINT_MAX : cap);
  if (zl->deflate(&z.deflater, Z_FINISH) != Z_STREAM_END) return Failed("deflate");
  *written = z.deflater.total_out;
  return Status::Ok();
}

Status Inflate(const uint8_t* in, size_t len, uint8_t* out, size_t expected) {
  ZStreams& z = Streams();
  const ZApi* zl = Zlib();
  if (!z.inflate_ready) {
    if (zl->inflate_init(&z.inflater, ZLIB_VERSION, static_cast<int>(sizeof(z_stream))) != Z_OK) {
      return Failed("inflateInit");
    }
    z.inflate_ready = true;
  } else if (zl->inflate_reset(&z.inflater) != Z_OK) {
    return Failed("inflateReset");
  }
  // zlib refuses a null next_out even with no room asked for, and an empty Buffer may have no
  // memory: an empty chunk would then read as corrupt.
  Bytef none = 0;
  z.inflater.next_in = const_cast<Bytef*>(in);
  z.inflater.avail_in = static_cast<uInt>(len);
  z.inflater.next_out = out != nullptr ? out : &none;
  z.inflater.avail_out = out != nullptr ? static_cast<uInt>(expected) : 0;
  int ret = zl->inflate(&z.inflater, Z_FINISH);
  if (ret == Z_STREAM_END) {
    if (z.inflater.total_out != expected) {
      return Corrupt("zlib stream decodes to " + std::to_string(z.inflater.total_out) +
                     " bytes, not " + std::to_string(expected));
    }
    return Status::Ok();
  }
  if (ret == Z_BUF_ERROR && z.inflater.avail_out == 0) {
    return Corrupt("zlib stream decodes to more than " + std::to_string(expected) + " bytes");
  }
  const char* why = ret == Z_BUF_ERROR          ? "unexpected end of stream"
                    : z.inflater.msg != nullptr ? z.inflater.msg
                                                : "invalid stream";
  return Corrupt(std::string("zlib stream does not decode (") + why + ")");
}

}  // namespace

bool ParseCodec(const std::string& name, CodecId* out) {
  if (name == "None")
    *out = CodecId::kNone;
  else if (name == "LZ4")
    *out = CodecId::kLz4;
  else if (name == "Deflate")
    *out = CodecId::kDeflate;
  else if (name == "Snappy")
    *out = CodecId::kSnappy;
  else
    return false;
  return true;
}

bool CodecAvailable(CodecId codec) {
  switch (codec) {
    case CodecId::kLz4:
      return Lz4() != nullptr;
    case CodecId::kDeflate:
      return Zlib() != nullptr;
    case CodecId::kSnappy:
      return Snappy() != nullptr;
    default:
      return true;
  }
}

size_t CompressBound(CodecId codec, size_t len) {
  switch (codec) {
    case CodecId::kLz4:
      return 4 + static_cast<size_t>(Lz4()->compress_bound(static_cast<int>(len)));
    case CodecId::kDeflate:
      return Zlib()->compress_bound(static_cast<uLong>(len));
    case CodecId::kSnappy:
      return Snappy()->max_compressed_length(len);
    default:
      return len;
  }
}

Status Compress(CodecId codec, const uint8_t* in, size_t len, uint8_t* out, size_t cap,
                size_t* written) {
  if (len > 0x7E000000 || cap < CompressBound(codec, len)) {
    return Status::Error("ERR_TDE_INVALID_ARGUMENT", "chunk too large, or its output too small");
  }
  switch (codec) {
    case CodecId::kLz4: {
      uint32_t n = static_cast<uint32_t>(len);
      const uint8_t prefix[4] = {static_cast<uint8_t>(n), static_cast<uint8_t>(n >> 8),
                                 static_cast<uint8_t>(n >> 16), static_cast<uint8_t>(n >> 24)};
      std::memcpy(out, prefix, 4);
      int body = Lz4()->compress_default(reinterpret_cast<const char*>(in),
                                         reinterpret_cast<char*>(out + 4), static_cast<int>(len),
                                         static_cast<int>(cap - 4));
      if (body <= 0) return Failed("LZ4_compress_default");
      *written = 4 + static_cast<size_t>(body);
      return Status::Ok();
    }
    case CodecId::kDeflate:
      return Deflate(in, len, out, cap, written);
    case CodecId::kSnappy: {
      size_t n = cap;
      if (Snappy()->compress(reinterpret_cast<const char*>(in), len, reinterpret_cast<char*>(out),
                             &n) != 0) {
        return Failed("snappy_compress");
      }
      *written = n;
      return Status::Ok();
    }
    default:
      if (len > 0) std::memcpy(out, in, len);  // an empty Buffer may have no memory at all
      *written = len;
      return Status::Ok();
  }
}

Status Uncompress(CodecId codec, const uint8_t* in, size_t len, uint8_t* out, size_t expected) {
  switch (codec) {
    case CodecId::kLz4: {
      if (len < 4)
        return Corrupt("LZ4 chunk of " + std::to_string(len) + " bytes has no length prefix");
      uint32_t claimed = static_cast<uint32_t>(in[0]) | static_cast<uint32_t>(in[1]) << 8 |
                         static_cast<uint32_t>(in[2]) << 16 | static_cast<uint32_t>(in[3]) << 24;
      if (claimed != expected) {
        return Corrupt("LZ4 chunk claims " + std::to_string(claimed) +
                       " uncompressed bytes where " + std::to_string(expected) + " were expected");
      }
      if (len - 4 > INT_MAX || expected > INT_MAX) return Corrupt("LZ4 chunk too large");
      int n = Lz4()->decompress_safe(reinterpret_cast<const char*>(in + 4),
                                     reinterpret_cast<char*>(out), static_cast<int>(len - 4),
                                     static_cast<int>(expected));
      if (n < 0) return Corrupt("LZ4 block does not decode");
      if (static_cast<size_t>(n) != expected) {
        return Corrupt("LZ4 block decodes to " + std::to_string(n) + " bytes, not " +
                       std::to_string(expected));
      }
      return Status::Ok();
    }
    case CodecId::kDeflate:
      if (len > UINT_MAX || expected > UINT_MAX) return Corrupt("zlib stream too large");
      return Inflate(in, len, out, expected);
    case CodecId::kSnappy: {
      size_t claimed = 0;
      if (Snappy()->uncompressed_length(reinterpret_cast<const char*>(in), len, &claimed) != 0) {
        return Corrupt("Snappy chunk has no valid length preamble");
      }
      if (claimed != expected) {
        return Corrupt("Snappy chunk claims " + std::to_string(claimed) +
                       " uncompressed bytes where " + std::to_string(expected) + " were expected");
      }
      size_t n = expected;
      if (Snappy()->uncompress(reinterpret_cast<const char*>(in), len, reinterpret_cast<char*>(out),
                               &n) != 0) {
        return Corrupt("Snappy block does not decode");
      }
      if (n != expected) {
        return Corrupt("Snappy block decodes to " + std::to_string(n) + " bytes, not " +
                       std::to_string(expected));
      }
      return Status::Ok();
    }
    default:
      if (len != expected) {
        return Corrupt("chunk holds " + std::to_string(len) + " bytes where " +
                       std::to_string(expected) + " were expected");
      }
      if (len > 0) std::memcpy(out, in, len);
      return Status::Ok();
  }
}

}  // namespace tde
