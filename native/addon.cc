// Node-API glue: the only file that knows about JavaScript. Everything it exposes is declared
// for TypeScript in src/native.ts, the addon's one door.

#include <napi.h>
#include <v8.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>
#include <mutex>
#include <unordered_set>

#include "aes_cbc_mb.h"
#include "batch.h"
#include "checksum.h"
#include "chunk_cipher.h"
#include "cipher_suite.h"
#include "stream_bench.h"
#include "thread_pool.h"

namespace tde {

namespace {

// Every live cipher core, so their keys can be wiped when the process exits even if JavaScript
// never called destroy(): process.exit() skips garbage collection and finalizers.
std::mutex g_live_mutex;
std::unordered_set<ChunkCipherCore*>& LiveCores() {
  static auto* set = new std::unordered_set<ChunkCipherCore*>();
  return *set;
}

void WipeAllAtExit() {
  std::lock_guard<std::mutex> lock(g_live_mutex);
  for (ChunkCipherCore* core : LiveCores()) core->Wipe();
}

std::shared_ptr<ChunkCipherCore> Track(std::shared_ptr<ChunkCipherCore> core) {
  static std::once_flag once;
  std::call_once(once, [] { std::atexit(WipeAllAtExit); });
  {
    std::lock_guard<std::mutex> lock(g_live_mutex);
    LiveCores().insert(core.get());
  }
  // Unregister when the last owner (the JS object or an in-flight batch) lets go.
  ChunkCipherCore* raw = core.get();
  return std::shared_ptr<ChunkCipherCore>(raw, [core](ChunkCipherCore*) mutable {
    {
      std::lock_guard<std::mutex> lock(g_live_mutex);
      LiveCores().erase(core.get());
    }
    core.reset();
  });
}

Napi::Error MakeError(Napi::Env env, const Status& st) {
  Napi::Error err = Napi::Error::New(env, st.message);
  err.Set("code", Napi::String::New(env, st.code));
  if (st.index >= 0) err.Set("index", Napi::Number::New(env, static_cast<double>(st.index)));
  return err;
}

[[noreturn]] void ThrowContract(Napi::Env env, const std::string& message) {
  throw MakeError(env, Status::Error("ERR_TDE_INVALID_ARGUMENT", message));
}

// A JS Buffer or other ArrayBufferView, seen as bytes.
struct Bytes {
  uint8_t* data;
  size_t size;
};

// One Node-API call per buffer: on batches of small chunks these lookups are a real share of the
// time spent on the JS thread.
Bytes ViewOf(Napi::Env env, Napi::Value v, const char* what) {
  napi_typedarray_type type;
  size_t length = 0;
  void* data = nullptr;
  napi_status st = napi_get_typedarray_info(env, v, &type, &length, &data, nullptr, nullptr);
  if (st != napi_ok || type != napi_uint8_array) {
    // A failed query may leave an exception pending; it is replaced by our own.
    napi_value ignored;
    napi_get_and_clear_last_exception(env, &ignored);
    ThrowContract(env, std::string(what) + " must be a Buffer");
  }
  return Bytes{static_cast<uint8_t*>(data), length};
}

// Pool threads read and write the memory of a batch's buffers. JavaScript may transfer one of
// them meanwhile (postMessage, or structuredClone with a transfer list), which detaches it from
// its ArrayBuffer; holding the buffer's V8 BackingStore keeps that memory alive and in place
// until the batch is done, wherever the buffer went. Node-API has no such call, so this is the
// one place the addon reaches into V8 directly (it is built against this Node's own headers).
using Hold = std::shared_ptr<v8::BackingStore>;

Hold HoldMemory(Napi::Value view) {
  v8::Local<v8::Value> v;
  static_assert(sizeof(v) == sizeof(napi_value), "napi_value is a v8::Local<v8::Value>");
  napi_value raw = view;
  std::memcpy(static_cast<void*>(&v), &raw, sizeof(raw));
  if (!v->IsArrayBufferView()) return nullptr;
  return v.As<v8::ArrayBufferView>()->Buffer()->GetBackingStore();
}

// Runs a BatchJob on a libuv thread (which fans it out over the pool) and settles a promise.
class BatchWorker : public Napi::AsyncWorker {
 public:
  BatchWorker(Napi::Env env, BatchJob job, Napi::Array keep_alive, std::vector<Hold> holds)
      : Napi::AsyncWorker(env, "sstable-tde:batch"),
        job_(std::move(job)),
        holds_(std::move(holds)),
        deferred_(Napi::Promise::Deferred::New(env)),
        keep_alive_(Napi::Persistent(keep_alive.As<Napi::Object>())) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override { job_.Run(); }

  void OnOK() override {
    // Nothing may escape this callback: an exception here, for example while a worker thread is
    // being terminated, would abort the whole process.
    try {
      Napi::Env env = Env();
      if (!job_.status.ok()) {
        deferred_.Reject(MakeError(env, job_.status).Value());
        return;
      }
      Napi::Uint32Array lengths = Napi::Uint32Array::New(env, job_.written.size());
      for (size_t i = 0; i < job_.written.size(); i++) lengths[i] = job_.written[i];
      deferred_.Resolve(lengths);
    } catch (const Napi::Error&) {
      // The environment is going away; there is no one left to tell.
    }
  }

  void OnError(const Napi::Error&) override {}

 private:
  BatchJob job_;
  std::vector<Hold> holds_;
  Napi::Promise::Deferred deferred_;
  // Holds the input and output buffers alive while pool threads use their memory.
  Napi::ObjectReference keep_alive_;
};

class JsChunkCipher : public Napi::ObjectWrap<JsChunkCipher> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "ChunkCipher",
                       {
                           InstanceMethod<&JsChunkCipher::EncryptInto>("encryptInto"),
                           InstanceMethod<&JsChunkCipher::DecryptInto>("decryptInto"),
                           InstanceMethod<&JsChunkCipher::EncryptSync>("encryptSync"),
                           InstanceMethod<&JsChunkCipher::DecryptSync>("decryptSync"),
                           InstanceMethod<&JsChunkCipher::EncryptedLength>("encryptedLength"),
                           InstanceMethod<&JsChunkCipher::Destroy>("destroy"),
                       });
  }

  // new ChunkCipher({ evpName, ivLength, padding, rc2KeyBits }, key)
  explicit JsChunkCipher(const Napi::CallbackInfo& info) : Napi::ObjectWrap<JsChunkCipher>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsObject()) ThrowContract(env, "expected (spec, key)");
    Napi::Object o = info[0].As<Napi::Object>();

    CipherSpec spec;
    spec.evp_name = o.Get("evpName").As<Napi::String>().Utf8Value();
    spec.iv_length = o.Get("ivLength").As<Napi::Number>().Uint32Value();
    spec.padding = o.Get("padding").As<Napi::Boolean>().Value();
    spec.rc2_key_bits = o.Get("rc2KeyBits").As<Napi::Number>().Int32Value();
    spec.tag_length = o.Get("tagLength").As<Napi::Number>().Uint32Value();
    Napi::Value fixed = o.Get("fixedIv");
    if (fixed.IsTypedArray()) {
      Bytes iv = ViewOf(env, fixed, "fixedIv");
      spec.fixed_iv.assign(reinterpret_cast<const char*>(iv.data), iv.size);
    }
    Bytes key = ViewOf(env, info[1], "key");

    Status st;
    std::shared_ptr<ChunkCipherCore> core = ChunkCipherCore::Create(spec, key.data, key.size, &st);
    if (!core) throw MakeError(env, st);
    core_ = Track(std::move(core));
  }

 private:
  std::shared_ptr<ChunkCipherCore> Live(Napi::Env env) {
    if (!core_) {
      throw MakeError(env, Status::Error("ERR_TDE_CIPHER_DESTROYED",
                                         "the cipher was destroyed; its key is gone"));
    }
    return core_;
  }

  // encryptInto(inputs: Buffer[], outputs: Buffer[], aads?: Buffer[]):
  //   Promise<Uint32Array of bytes written>
  Napi::Value EncryptInto(const Napi::CallbackInfo& info) { return RunBatch(info, true); }
  Napi::Value DecryptInto(const Napi::CallbackInfo& info) { return RunBatch(info, false); }

  Napi::Value RunBatch(const Napi::CallbackInfo& info, bool encrypt) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsArray() || !info[1].IsArray()) {
      ThrowContract(env, "expected (inputs[], outputs[])");
    }
    Napi::Array inputs = info[0].As<Napi::Array>();
    Napi::Array outputs = info[1].As<Napi::Array>();
    uint32_t n = inputs.Length();
    if (outputs.Length() != n) ThrowContract(env, "inputs and outputs differ in length");
    bool with_aad = info.Length() > 2 && info[2].IsArray();
    Napi::Array aads = with_aad ? info[2].As<Napi::Array>() : Napi::Array();
    if (with_aad && aads.Length() != n) ThrowContract(env, "inputs and aads differ in length");

    BatchJob job;
    job.core = Live(env);
    job.encrypt = encrypt;
    job.in.reserve(n);
    job.in_len.reserve(n);
    job.out.reserve(n);
    job.out_cap.reserve(n);

    std::vector<Hold> holds;
    holds.reserve(static_cast<size_t>(n) * (with_aad ? 3 : 2));
    for (uint32_t i = 0; i < n; i++) {
      Napi::Value iv = inputs.Get(i);
      Napi::Value ov = outputs.Get(i);
      Bytes in = ViewOf(env, iv, "each input");
      Bytes out = ViewOf(env, ov, "each output");
      holds.push_back(HoldMemory(iv));
      holds.push_back(HoldMemory(ov));
      job.in.push_back(in.data);
      job.in_len.push_back(in.size);
      job.out.push_back(out.data);
      job.out_cap.push_back(out.size);
      if (with_aad) {
        Napi::Value av = aads.Get(i);
        Bytes a = ViewOf(env, av, "each aad");
        holds.push_back(HoldMemory(av));
        job.aad.push_back(Span{a.data, a.size});
      }
    }

    // Keeps the arrays, and so every buffer in them, alive while pool threads use their memory.
    // Contract (src/native.ts): the caller leaves these arrays unchanged until the promise settles.
    Napi::Array keep = Napi::Array::New(env, 3);
    keep.Set(0u, inputs);
    keep.Set(1u, outputs);
    if (with_aad) keep.Set(2u, aads);
    auto* worker = new BatchWorker(env, std::move(job), keep, std::move(holds));
    Napi::Promise promise = worker->Promise();
    worker->Queue();
    return promise;
  }

  // encryptSync(input, output): number of bytes written. For small one-off values (config
  // values, key checks) where a trip through the pool would cost more than the work.
  Napi::Value EncryptSync(const Napi::CallbackInfo& info) { return RunSync(info, true); }
  Napi::Value DecryptSync(const Napi::CallbackInfo& info) { return RunSync(info, false); }

  Napi::Value RunSync(const Napi::CallbackInfo& info, bool encrypt) {
    Napi::Env env = info.Env();
    if (info.Length() < 2) ThrowContract(env, "expected (input, output[, aad])");
    Bytes in = ViewOf(env, info[0], "input");
    Bytes out = ViewOf(env, info[1], "output");
    Span aad;
    if (info.Length() > 2 && !info[2].IsUndefined()) {
      Bytes a = ViewOf(env, info[2], "aad");
      aad = Span{a.data, a.size};
    }
    std::shared_ptr<ChunkCipherCore> core = Live(env);

    CipherContext ctx;
    size_t written = 0;
    Status st = core->Prepare(&ctx, encrypt);
    if (st.ok()) {
      st = encrypt ? core->Encrypt(&ctx, in.data, in.size, aad, out.data, out.size, &written)
                   : core->Decrypt(&ctx, in.data, in.size, aad, out.data, out.size, &written);
    }
    if (!st.ok()) throw MakeError(env, st);
    return Napi::Number::New(env, static_cast<double>(written));
  }

  Napi::Value EncryptedLength(const Napi::CallbackInfo& info) {
    size_t n = static_cast<size_t>(info[0].As<Napi::Number>().Int64Value());
    return Napi::Number::New(info.Env(), static_cast<double>(Live(info.Env())->EncryptedLength(n)));
  }

  // Wipes the key now unless a batch is still running, in which case the last batch to finish
  // wipes it. Either way no new work can start.
  Napi::Value Destroy(const Napi::CallbackInfo& info) {
    if (core_) {
      if (core_.use_count() == 1) core_->Wipe();
      core_.reset();
    }
    return info.Env().Undefined();
  }

  std::shared_ptr<ChunkCipherCore> core_;
};

Napi::Value JsAdler32(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Bytes data = ViewOf(env, info[0], "data");
  uint32_t init = info.Length() > 1 ? info[1].As<Napi::Number>().Uint32Value() : 1;
  return Napi::Number::New(env, Adler32(init, data.data, data.size));
}

Napi::Value JsCipherAvailable(const Napi::CallbackInfo& info) {
  Status st;
  bool ok = FetchCipher(info[0].As<Napi::String>().Utf8Value(), &st) != nullptr;
  return Napi::Boolean::New(info.Env(), ok);
}

Napi::Value JsSetParallelism(const Napi::CallbackInfo& info) {
  SetParallelism(info[0].As<Napi::Number>().Uint32Value());
  return info.Env().Undefined();
}

Napi::Value JsParallelism(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(Parallelism()));
}

// setMultiBuffer(on): whether AES-CBC batches encrypt several chunks at once (aes_cbc_mb.h).
// Returns whether multi-buffer encryption is now in use (false where the CPU lacks AES-NI).
Napi::Value JsSetMultiBuffer(const Napi::CallbackInfo& info) {
  aesmb::SetEnabled(info[0].ToBoolean().Value());
  return Napi::Boolean::New(info.Env(), aesmb::Available());
}

Napi::Value JsMultiBuffer(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), aesmb::Available());
}

// evpStreamSeconds(spec, key, chunkBytes, rounds): seconds one thread takes to encrypt
// chunkBytes * rounds bytes as one stream. Benchmarks' OpenSSL baseline.
Napi::Value JsEvpStreamSeconds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = info[0].As<Napi::Object>();
  CipherSpec spec;
  spec.evp_name = o.Get("evpName").As<Napi::String>().Utf8Value();
  spec.iv_length = o.Get("ivLength").As<Napi::Number>().Uint32Value();
  spec.padding = false;
  spec.rc2_key_bits = o.Get("rc2KeyBits").As<Napi::Number>().Int32Value();
  spec.tag_length = o.Get("tagLength").As<Napi::Number>().Uint32Value();
  Bytes key = ViewOf(env, info[1], "key");
  double seconds = 0;
  Status st = StreamBench(spec, key.data, key.size, info[2].As<Napi::Number>().Uint32Value(),
                          info[3].As<Napi::Number>().Uint32Value(), &seconds);
  if (!st.ok()) throw MakeError(env, st);
  return Napi::Number::New(env, seconds);
}

Napi::Value JsErrorCodes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array codes = Napi::Array::New(env);
  uint32_t i = 0;
#define TDE_PUSH_CODE(name) codes.Set(i++, Napi::String::New(env, #name));
  TDE_NATIVE_ERROR_CODES(TDE_PUSH_CODE)
#undef TDE_PUSH_CODE
  return codes;
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("ChunkCipher", JsChunkCipher::Define(env));
  exports.Set("adler32", Napi::Function::New(env, JsAdler32));
  exports.Set("cipherAvailable", Napi::Function::New(env, JsCipherAvailable));
  exports.Set("setParallelism", Napi::Function::New(env, JsSetParallelism));
  exports.Set("parallelism", Napi::Function::New(env, JsParallelism));
  exports.Set("setMultiBuffer", Napi::Function::New(env, JsSetMultiBuffer));
  exports.Set("multiBuffer", Napi::Function::New(env, JsMultiBuffer));
  exports.Set("errorCodes", Napi::Function::New(env, JsErrorCodes));
  exports.Set("evpStreamSeconds", Napi::Function::New(env, JsEvpStreamSeconds));
  return exports;
}

}  // namespace tde

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return tde::Init(env, exports); }

NODE_API_MODULE(sstable_tde, InitModule)
