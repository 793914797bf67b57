// Node-API glue: the only file that knows about JavaScript. Everything it exposes is declared
// for TypeScript in src/native.ts, the addon's one door.

#include <napi.h>
#include <uv.h>
#include <v8.h>

#include <fcntl.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <unordered_set>
#include <vector>

#include "aes_ni.h"
#include "checksum.h"
#include "chunk_cipher.h"
#include "cipher_suite.h"
#include "codec.h"
#include "pipeline.h"
#include "read_check.h"
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

// A resizable ArrayBuffer is another matter: shrinking it (ab.resize) takes its pages away in
// place, held or not, and a pool thread writing there would crash the process. Such buffers
// are refused; the caller can copy the bytes into a plain Buffer first.
Hold HoldMemory(Napi::Env env, Napi::Value view, const char* what) {
  v8::Local<v8::Value> v;
  static_assert(sizeof(v) == sizeof(napi_value), "napi_value is a v8::Local<v8::Value>");
  napi_value raw = view;
  std::memcpy(static_cast<void*>(&v), &raw, sizeof(raw));
  if (!v->IsArrayBufferView()) return nullptr;
  Hold hold = v.As<v8::ArrayBufferView>()->Buffer()->GetBackingStore();
  if (hold && hold->IsResizableByUserJavaScript()) {
    ThrowContract(env, std::string(what) +
                           " lies in a resizable ArrayBuffer, which could shrink "
                           "under the batch: copy it into a Buffer first (Buffer.from(view))");
  }
  return hold;
}

// Work in flight on the pool whose promise is settled on the JS thread that started it.
struct PoolTask {
  virtual ~PoolTask() = default;
  // JS thread, once: resolves or rejects the task's promise. Must not throw.
  virtual void Settle(Napi::Env env) = 0;
};

// Settles the promises of the tasks the pool finishes, on the thread of the JS environment
// that started them (the main thread or a worker's): pool threads hand each finished batch over
// through a uv_async handle, so no thread of its own waits on a batch. One per environment. Once
// the environment is torn down, a batch that finishes later is never settled and deliberately
// leaked: its references belong to an environment that no longer exists.
class Completions {
 public:
  static std::shared_ptr<Completions> For(Napi::Env env);

  ~Completions() = default;

  // JS thread: a batch starts; the event loop stays alive until it is settled.
  void Started();

  // Any thread: the task is done (or stopped at a failure) and may be settled.
  void Finished(PoolTask* task);

 private:
  explicit Completions(napi_env env) : env_(env) {}
  static void OnAsync(uv_async_t* handle);
  static void Cleanup(void* arg);

  napi_env env_;
  uv_async_t* async_ = nullptr;
  napi_async_context context_ = nullptr;
  std::mutex mutex_;
  std::vector<PoolTask*> finished_;
  bool closed_ = false;
  size_t outstanding_ = 0;  // JS thread only
};

// A batch in flight: its job, the JS objects and memory it uses, and the promise it settles.
struct ChunkBatch : PoolTask {
  ChunkBatch(Napi::Env env, ChunkJob j, Napi::Array keep, std::vector<Hold> h,
             std::shared_ptr<Completions> c)
      : job(std::move(j)),
        holds(std::move(h)),
        deferred(Napi::Promise::Deferred::New(env)),
        keep_alive(Napi::Persistent(keep.As<Napi::Object>())),
        completions(std::move(c)) {}

  // Settles the promise with a Uint32Array: bytes written per chunk, then (when asked for) each
  // chunk's checksum; or rejects it with the first chunk's failure.
  void Settle(Napi::Env env) override {
    // Nothing may escape: an exception here, for example while a worker thread is being
    // terminated, would abort the whole process.
    try {
      if (!job.status.ok()) {
        deferred.Reject(MakeError(env, job.status).Value());
        return;
      }
      size_t n = job.written.size();
      Napi::Uint32Array out = Napi::Uint32Array::New(env, n + job.sums.size());
      for (size_t i = 0; i < n; i++) out[i] = job.written[i];
      for (size_t i = 0; i < job.sums.size(); i++) out[n + i] = job.sums[i];
      deferred.Resolve(out);
    } catch (const Napi::Error&) {
      // The environment is going away; there is no one left to tell.
    }
  }

  ChunkJob job;
  std::vector<Hold> holds;
  Napi::Promise::Deferred deferred;
  // Holds the input and output buffers alive while pool threads use their memory.
  Napi::ObjectReference keep_alive;
  std::shared_ptr<Completions> completions;
};

// The environment's own reference to its Completions, dropped when the environment goes.
struct EnvState {
  std::shared_ptr<Completions> completions;
};

std::shared_ptr<Completions> Completions::For(Napi::Env env) {
  EnvState* state = env.GetInstanceData<EnvState>();
  if (state != nullptr) return state->completions;

  std::shared_ptr<Completions> c(new Completions(env));
  uv_loop_t* loop = nullptr;
  napi_value name;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok ||
      napi_create_string_utf8(env, "sstable-tde:chunks", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, nullptr, name, &c->context_) != napi_ok) {
    throw Napi::Error::New(env, "sstable-tde: cannot set up batch completion on this thread");
  }
  c->async_ = new uv_async_t;
  uv_async_init(loop, c->async_, OnAsync);
  c->async_->data = c.get();
  // Idle, the handle must not keep the process alive; Started() refs it while batches run.
  uv_unref(reinterpret_cast<uv_handle_t*>(c->async_));
  napi_add_env_cleanup_hook(env, Cleanup, c.get());
  env.SetInstanceData(new EnvState{c});
  return c;
}

void Completions::Started() {
  if (outstanding_++ == 0) uv_ref(reinterpret_cast<uv_handle_t*>(async_));
}

void Completions::Finished(PoolTask* task) {
  // The lock keeps Cleanup from closing the handle between the check and the send.
  std::lock_guard<std::mutex> lock(mutex_);
  if (closed_) return;
  finished_.push_back(task);
  uv_async_send(async_);
}

void Completions::OnAsync(uv_async_t* handle) {
  auto* self = static_cast<Completions*>(handle->data);
  std::vector<PoolTask*> batches;
  {
    std::lock_guard<std::mutex> lock(self->mutex_);
    batches.swap(self->finished_);
  }
  if (batches.empty()) return;

  // A callback scope, as libuv callbacks into JS need: closing it runs the promise reactions.
  Napi::Env env(self->env_);
  Napi::HandleScope scope(env);
  napi_value resource;
  napi_callback_scope callback_scope = nullptr;
  bool scoped = napi_create_object(env, &resource) == napi_ok &&
                napi_open_callback_scope(env, resource, self->context_, &callback_scope) == napi_ok;
  for (PoolTask* batch : batches) {
    batch->Settle(env);
    delete batch;
  }
  if (scoped) napi_close_callback_scope(env, callback_scope);

  self->outstanding_ -= batches.size();
  if (self->outstanding_ == 0) uv_unref(reinterpret_cast<uv_handle_t*>(self->async_));
}

void Completions::Cleanup(void* arg) {
  auto* self = static_cast<Completions*>(arg);
  {
    std::lock_guard<std::mutex> lock(self->mutex_);
    self->closed_ = true;
    // Batches finished but not yet settled stay unsettled (see the class comment).
    self->finished_.clear();
  }
  // No close callback, and the handle's memory is never freed: libuv finishes closing it after
  // the cleanup hooks, when a worker's copy of this addon may already be unloaded, and a
  // callback into it would jump into unmapped code.
  uv_close(reinterpret_cast<uv_handle_t*>(self->async_), nullptr);
  napi_async_destroy(self->env_, self->context_);
}

CodecId CodecOf(Napi::Env env, Napi::Value v) {
  CodecId codec;
  if (!v.IsString() || !ParseCodec(v.As<Napi::String>().Utf8Value(), &codec)) {
    ThrowContract(env, "codec must be \"None\", \"LZ4\", \"Deflate\" or \"Snappy\"");
  }
  if (!CodecAvailable(codec)) ThrowContract(env, "this codec's library is not available here");
  return codec;
}

// A typed array's elements, read in place.
template <typename T>
const T* ElementsOf(Napi::Env env, Napi::Value v, napi_typedarray_type want, size_t* count,
                    const char* what) {
  napi_typedarray_type type;
  void* data = nullptr;
  if (!v.IsTypedArray() ||
      napi_get_typedarray_info(env, v, &type, count, &data, nullptr, nullptr) != napi_ok ||
      type != want) {
    ThrowContract(env, std::string(what) + " has the wrong type");
  }
  return static_cast<const T*>(data);
}

// One side of a batch (inputs or outputs): an array of buffers, or { data, offsets, lengths }
// (one buffer, a Float64Array of where each chunk starts in it and a Uint32Array of their
// lengths), which spares a Node-API round trip per chunk on batches of small chunks. Appends
// each chunk's memory and length, and holds on to the memory (see HoldMemory).
void Gather(Napi::Env env, Napi::Value side, const char* what, std::vector<uint8_t*>* ptrs,
            std::vector<size_t>* lens, std::vector<Hold>* holds) {
  if (side.IsArray()) {
    Napi::Array array = side.As<Napi::Array>();
    uint32_t n = array.Length();
    ptrs->reserve(n);
    lens->reserve(n);
    for (uint32_t i = 0; i < n; i++) {
      Napi::Value v = array.Get(i);
      Bytes b = ViewOf(env, v, what);
      holds->push_back(HoldMemory(env, v, what));
      ptrs->push_back(b.data);
      lens->push_back(b.size);
    }
    return;
  }
  if (!side.IsObject())
    ThrowContract(env, std::string(what) + ": expected buffers[] or { data, offsets, lengths }");
  Napi::Object o = side.As<Napi::Object>();
  // Every property is fetched before any memory is looked at: a getter runs JavaScript, which
  // could detach or transfer what an earlier one returned while its elements are being read.
  Napi::Value data_v = o.Get("data");
  Napi::Value offsets_v = o.Get("offsets");
  Napi::Value lengths_v = o.Get("lengths");
  Bytes data = ViewOf(env, data_v, what);
  holds->push_back(HoldMemory(env, data_v, what));
  size_t n = 0;
  size_t n_lengths = 0;
  const double* offsets = ElementsOf<double>(env, offsets_v, napi_float64_array, &n, "offsets");
  const uint32_t* lengths =
      ElementsOf<uint32_t>(env, lengths_v, napi_uint32_array, &n_lengths, "lengths");
  if (n != n_lengths) ThrowContract(env, "offsets and lengths differ in length");
  ptrs->reserve(n);
  lens->reserve(n);
  for (size_t i = 0; i < n; i++) {
    // Checked as a double before any conversion (NaN, negatives, fractions, infinities and
    // offsets past the end fail here; the buffer's size is exact as a double), then the length
    // against what lies after the offset, which cannot overflow as offset + length could.
    double at = offsets[i];
    bool inside = at >= 0 && at <= static_cast<double>(data.size) && at == std::floor(at) &&
                  lengths[i] <= data.size - static_cast<size_t>(at);
    if (!inside) ThrowContract(env, std::string(what) + ": a chunk lies outside its buffer");
    ptrs->push_back(data.data + static_cast<size_t>(at));
    lens->push_back(lengths[i]);
  }
}

// Fills a job's buffers from the JS sides and queues it. Contract (src/native.ts): the caller
// leaves the arrays and buffers unchanged until the promise settles; they are held alive until
// then, and each buffer's memory stays in place even if it is transferred meanwhile.
Napi::Value QueueJob(Napi::Env env, ChunkJob job, Napi::Value inputs_v, Napi::Value outputs_v,
                     Napi::Value aads_v) {
  std::vector<Hold> holds;
  std::vector<uint8_t*> in;
  Gather(env, inputs_v, "each input", &in, &job.in_len, &holds);
  Gather(env, outputs_v, "each output", &job.out, &job.out_cap, &holds);
  job.in.assign(in.begin(), in.end());
  size_t n = job.in.size();
  if (job.out.size() != n) ThrowContract(env, "inputs and outputs differ in length");
  if (!job.expected.empty() && job.expected.size() != n)
    ThrowContract(env, "inputs and lengths differ in length");
  bool with_aad = !aads_v.IsUndefined() && !aads_v.IsNull();
  if (with_aad) {
    std::vector<uint8_t*> aad;
    std::vector<size_t> aad_len;
    Gather(env, aads_v, "each aad", &aad, &aad_len, &holds);
    if (aad.size() != n) ThrowContract(env, "inputs and aads differ in length");
    for (size_t i = 0; i < n; i++) job.aad.push_back(Span{aad[i], aad_len[i]});
  }

  Napi::Array keep = Napi::Array::New(env, 3);
  keep.Set(0u, inputs_v);
  keep.Set(1u, outputs_v);
  if (with_aad) keep.Set(2u, aads_v);
  std::shared_ptr<Completions> completions = Completions::For(env);
  auto* batch = new ChunkBatch(env, std::move(job), keep, std::move(holds), completions);
  Napi::Promise promise = batch->deferred.Promise();
  completions->Started();
  batch->job.Start([batch] { batch->completions->Finished(batch); });
  return promise;
}

std::vector<size_t> LengthsOf(Napi::Env env, Napi::Value v) {
  if (v.IsTypedArray()) {
    size_t n = 0;
    const uint32_t* lengths = ElementsOf<uint32_t>(env, v, napi_uint32_array, &n, "lengths");
    return std::vector<size_t>(lengths, lengths + n);
  }
  if (!v.IsArray()) ThrowContract(env, "expected lengths[]");
  Napi::Object o = v.As<Napi::Object>();
  uint32_t n = o.Get("length").As<Napi::Number>().Uint32Value();
  std::vector<size_t> out(n);
  for (uint32_t i = 0; i < n; i++) {
    double d = o.Get(i).As<Napi::Number>().DoubleValue();
    if (!(d >= 0 && d <= 2147483647.0))
      ThrowContract(env, "each length must be from 0 to 2^31 - 1");
    out[i] = static_cast<size_t>(d);
  }
  return out;
}

// Sets job.want_sums and job.sum_kind from a checksum kind name, or none for null/undefined.
void SumsOf(Napi::Env env, Napi::Value v, ChunkJob* job) {
  if (v.IsNull() || v.IsUndefined()) return;
  std::string name = v.IsString() ? v.As<Napi::String>().Utf8Value() : std::string();
  if (name != "crc32" && name != "adler32")
    ThrowContract(env, "checksum kind must be \"crc32\" or \"adler32\"");
  job->want_sums = true;
  job->sum_kind = name == "crc32" ? ChecksumKind::kCrc32 : ChecksumKind::kAdler32;
}

class JsChunkCipher : public Napi::ObjectWrap<JsChunkCipher> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "ChunkCipher",
                       {
                           InstanceMethod<&JsChunkCipher::EncryptInto>("encryptInto"),
                           InstanceMethod<&JsChunkCipher::DecryptInto>("decryptInto"),
                           InstanceMethod<&JsChunkCipher::EncodeInto>("encodeInto"),
                           InstanceMethod<&JsChunkCipher::DecodeInto>("decodeInto"),
                           InstanceMethod<&JsChunkCipher::EncodedLength>("encodedLength"),
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
    ChunkJob job;
    job.core = Live(env);
    job.encode = encrypt;
    return QueueJob(env, std::move(job), info[0], info[1], info[2]);
  }

  // encodeInto(codec, inputs, outputs, aads | null, checksumKind | null): compresses then
  // encrypts each chunk. Promise<Uint32Array>: bytes written per chunk, then each stored chunk's
  // checksum when a kind is given.
  Napi::Value EncodeInto(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ChunkJob job;
    job.core = Live(env);
    job.codec = CodecOf(env, info[0]);
    job.encode = true;
    SumsOf(env, info[4], &job);
    return QueueJob(env, std::move(job), info[1], info[2], info[3]);
  }

  // decodeInto(codec, inputs, plainLengths, outputs, aads | null, crc: boolean): decrypts then
  // decompresses each chunk, which must come to its plain length. Promise<Uint32Array>: bytes
  // written, then each plain chunk's CRC32 when asked for.
  Napi::Value DecodeInto(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ChunkJob job;
    job.core = Live(env);
    job.codec = CodecOf(env, info[0]);
    job.encode = false;
    job.expected = LengthsOf(env, info[2]);
    job.want_sums = info[5].ToBoolean().Value();
    return QueueJob(env, std::move(job), info[1], info[3], info[4]);
  }

  // encodedLength(codec, plainLength): the most bytes encodeInto may write for a chunk.
  Napi::Value EncodedLength(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    CodecId codec = CodecOf(env, info[0]);
    size_t n = static_cast<size_t>(info[1].As<Napi::Number>().Int64Value());
    return Napi::Number::New(
        env, static_cast<double>(Live(env)->EncryptedLength(CompressBound(codec, n))));
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
    ScrubStack();
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

ChecksumKind KindOf(Napi::Env env, Napi::Value v) {
  std::string name = v.IsString() ? v.As<Napi::String>().Utf8Value() : std::string();
  if (name == "crc32") return ChecksumKind::kCrc32;
  if (name == "adler32") return ChecksumKind::kAdler32;
  ThrowContract(env, "checksum kind must be \"crc32\" or \"adler32\"");
}

// adler32(data, previous = 1): Adler-32 continuing from `previous`.
Napi::Value JsAdler32(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Bytes data = ViewOf(env, info[0], "data");
  uint32_t init = info.Length() > 1 ? info[1].As<Napi::Number>().Uint32Value() : 1;
  return Napi::Number::New(env, Checksum(ChecksumKind::kAdler32, init, data.data, data.size));
}

// checksumCombine(kind, a, b, lengthOfB): the checksum of A then B.
Napi::Value JsChecksumCombine(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ChecksumKind kind = KindOf(env, info[0]);
  uint32_t a = info[1].As<Napi::Number>().Uint32Value();
  uint32_t b = info[2].As<Napi::Number>().Uint32Value();
  int64_t len = info[3].As<Napi::Number>().Int64Value();
  if (len < 0) ThrowContract(env, "length must not be negative");
  return Napi::Number::New(env, Combine(kind, a, b, static_cast<uint64_t>(len)));
}

// Runs a ChecksumJob on a libuv thread (which fans it out over the pool).
class ChecksumWorker : public Napi::AsyncWorker {
 public:
  ChecksumWorker(Napi::Env env, ChecksumJob job, Napi::Array keep_alive, std::vector<Hold> holds)
      : Napi::AsyncWorker(env, "sstable-tde:checksum"),
        job_(std::move(job)),
        holds_(std::move(holds)),
        deferred_(Napi::Promise::Deferred::New(env)),
        keep_alive_(Napi::Persistent(keep_alive.As<Napi::Object>())) {}

  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override { job_.Run(); }

  void OnOK() override {
    try {
      Napi::Env env = Env();
      Napi::Uint32Array out = Napi::Uint32Array::New(env, job_.sums.size() + 1);
      for (size_t i = 0; i < job_.sums.size(); i++) out[i] = job_.sums[i];
      out[job_.sums.size()] = job_.combined;
      deferred_.Resolve(out);
    } catch (const Napi::Error&) {
      // The environment is going away (a worker thread terminating); no one is left to tell.
    }
  }

  void OnError(const Napi::Error&) override {}

 private:
  ChecksumJob job_;
  std::vector<Hold> holds_;
  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference keep_alive_;
};

// checksumBatch(kind, buffers[], initial, framed?): Promise<Uint32Array> holding each buffer's
// checksum, then the checksum of them all end to end continuing from `initial` (with `framed`,
// each buffer followed by its checksum as 4 big-endian bytes, as Data.db stores chunks).
Napi::Value JsChecksumBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3) ThrowContract(env, "expected (kind, buffers, initial)");
  ChecksumJob job;
  job.kind = KindOf(env, info[0]);
  job.initial = info[2].As<Napi::Number>().Uint32Value();
  job.framed = info.Length() > 3 && info[3].ToBoolean().Value();
  std::vector<Hold> holds;
  std::vector<uint8_t*> in;
  Gather(env, info[1], "each buffer", &in, &job.len, &holds);
  job.in.assign(in.begin(), in.end());
  Napi::Array keep = Napi::Array::New(env, 1);
  keep.Set(0u, info[1]);
  auto* worker = new ChecksumWorker(env, std::move(job), keep, std::move(holds));
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

// A ReadCheckJob in flight: settles with [each span's checksum..., the region's checksum], or
// rejects with ERR_TDE_IO, `index` the file offset where reading failed and `errno` the system
// error (0 when the file ended first).
struct ReadCheckTask : PoolTask {
  ReadCheckTask(Napi::Env env, ReadCheckJob j, Napi::Value into, Hold h,
                std::shared_ptr<Completions> c)
      : job(std::move(j)),
        hold(std::move(h)),
        deferred(Napi::Promise::Deferred::New(env)),
        keep_alive(Napi::Persistent(into.As<Napi::Object>())),
        completions(std::move(c)) {}

  void Settle(Napi::Env env) override {
    try {
      if (!job.status.ok()) {
        Napi::Error err = MakeError(env, job.status);
        err.Set("errno", Napi::Number::New(env, job.error_number));
        deferred.Reject(err.Value());
        return;
      }
      size_t n = job.sums.size();
      Napi::Uint32Array out = Napi::Uint32Array::New(env, n + 1);
      for (size_t i = 0; i < n; i++) out[i] = job.sums[i];
      out[n] = job.region_sum;
      deferred.Resolve(out);
    } catch (const Napi::Error&) {
      // The environment is going away; there is no one left to tell.
    }
  }

  ReadCheckJob job;
  Hold hold;
  Napi::Promise::Deferred deferred;
  // The buffer read into stays alive while pool threads write to it.
  Napi::ObjectReference keep_alive;
  std::shared_ptr<Completions> completions;
};

// A whole number from 0 to `max`, or a contract error naming it.
double WholeArg(Napi::Env env, Napi::Value v, double max, const char* what) {
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
  if (!std::isfinite(d) || std::trunc(d) != d || d < 0 || d > max)
    ThrowContract(env, std::string(what) + " must be a whole number from 0 to " +
                           std::to_string(static_cast<int64_t>(max)));
  return d;
}

// readChecked(fd, position, length, into, offsets, lengths, kind): reads `length` bytes of the
// file at `position` into `into` on the pool and checksums the spans given by `offsets`
// (Float64Array) and `lengths` (Uint32Array), which must lie in the region in ascending order
// without overlapping. See ReadCheckTask for what the promise gives. The file descriptor must
// be open when called; it may be closed before the promise settles.
Napi::Value JsReadChecked(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 7)
    ThrowContract(env, "expected (fd, position, length, into, offsets, lengths, kind)");
  constexpr double kMaxSafe = 9007199254740992.0;  // 2^53
  ReadCheckJob job;
  int fd = static_cast<int>(WholeArg(env, info[0], INT32_MAX, "fd"));
  job.position = static_cast<int64_t>(WholeArg(env, info[1], kMaxSafe, "position"));
  job.length = static_cast<size_t>(WholeArg(env, info[2], kMaxSafe, "length"));
  Bytes into = ViewOf(env, info[3], "into");
  if (into.size < job.length) ThrowContract(env, "into is shorter than length");
  Hold hold = HoldMemory(env, info[3], "into");
  job.out = into.data;
  size_t n = 0;
  size_t n_lengths = 0;
  const double* offsets = ElementsOf<double>(env, info[4], napi_float64_array, &n, "offsets");
  const uint32_t* lengths =
      ElementsOf<uint32_t>(env, info[5], napi_uint32_array, &n_lengths, "lengths");
  if (n != n_lengths) ThrowContract(env, "offsets and lengths differ in length");
  job.kind = KindOf(env, info[6]);
  job.span_offset.reserve(n);
  job.span_length.reserve(n);
  double end = 0;
  for (size_t i = 0; i < n; i++) {
    double at = offsets[i];
    if (!(at >= end) || std::trunc(at) != at || at + lengths[i] > static_cast<double>(job.length))
      ThrowContract(env, "spans must lie within the region, in order, without overlapping");
    job.span_offset.push_back(static_cast<size_t>(at));
    job.span_length.push_back(lengths[i]);
    end = at + lengths[i];
  }
  std::shared_ptr<Completions> completions = Completions::For(env);

  // The job reads through a duplicate, closed when it ends, as Node's FileHandle keeps a
  // descriptor open until its operations end: the caller closing its own meanwhile cannot have
  // the number reused for another file and read from.
  job.fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (job.fd < 0) {
    int error_number = errno;
    Status st = Status::Error("ERR_TDE_IO", std::strerror(error_number));
    st.index = job.position;
    Napi::Error err = MakeError(env, st);
    err.Set("errno", Napi::Number::New(env, error_number));
    throw err;
  }
  auto* task = new ReadCheckTask(env, std::move(job), info[3], std::move(hold), completions);
  Napi::Promise promise = task->deferred.Promise();
  completions->Started();
  task->job.Start([task] { task->completions->Finished(task); });
  return promise;
}

// Starts the kernel writing a file range to disk without waiting for it (Linux
// sync_file_range with SYNC_FILE_RANGE_WRITE), on a libuv thread: submitting the pages can block
// while the device's queue is full. Advisory: it resolves false where the call is not available
// or the file system refuses it, and the caller's fsync still makes the data durable.
class WritebackWorker : public Napi::AsyncWorker {
 public:
  WritebackWorker(Napi::Env env, int fd, int64_t offset, int64_t length)
      : Napi::AsyncWorker(env, "sstable-tde:writeback"),
        fd_(fd),
        offset_(offset),
        length_(length),
        deferred_(Napi::Promise::Deferred::New(env)) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
#if defined(__linux__)
    started_ = sync_file_range(fd_, offset_, length_, SYNC_FILE_RANGE_WRITE) == 0;
#endif
  }

  void OnOK() override {
    try {
      deferred_.Resolve(Napi::Boolean::New(Env(), started_));
    } catch (const Napi::Error&) {
      // The environment is going away; no one is left to tell.
    }
  }

 private:
  int fd_;
  int64_t offset_;
  int64_t length_;
  bool started_ = false;
  Napi::Promise::Deferred deferred_;
};

// startWriteback(fd, offset, length): Promise<boolean>, see WritebackWorker. The arguments must
// be whole numbers: fd from 0 to 2^31 - 1, offset and length from 0 to 2^53 (length 0 means "to
// the end of the file", as for sync_file_range).
Napi::Value JsStartWriteback(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  constexpr double kMaxSafe = 9007199254740992.0;  // 2^53
  double args[3];
  for (size_t i = 0; i < 3; i++) {
    if (info.Length() <= i || !info[i].IsNumber())
      ThrowContract(env, "expected (fd, offset, length), three numbers");
    args[i] = info[i].As<Napi::Number>().DoubleValue();
    if (!std::isfinite(args[i]) || std::trunc(args[i]) != args[i] || args[i] < 0 ||
        args[i] > (i == 0 ? static_cast<double>(INT32_MAX) : kMaxSafe))
      ThrowContract(env, "fd, offset and length must be whole numbers, 0 or more, fd below 2^31");
  }
  auto* worker = new WritebackWorker(env, static_cast<int>(args[0]), static_cast<int64_t>(args[1]),
                                     static_cast<int64_t>(args[2]));
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value JsCipherAvailable(const Napi::CallbackInfo& info) {
  Status st;
  bool ok = FetchCipher(info[0].As<Napi::String>().Utf8Value(), &st) != nullptr;
  return Napi::Boolean::New(info.Env(), ok);
}

// A whole number in [lo, hi] from a JS value, or a contract error naming `what`.
double WholeIn(Napi::Env env, Napi::Value v, double lo, double hi, const char* what) {
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : std::nan("");
  if (!(d >= lo && d <= hi) || d != std::floor(d)) {
    ThrowContract(env, std::string(what) + " must be a whole number from " +
                           std::to_string(static_cast<long long>(lo)) + " to " +
                           std::to_string(static_cast<long long>(hi)));
  }
  return d;
}

Napi::Value JsSetParallelism(const Napi::CallbackInfo& info) {
  SetParallelism(static_cast<size_t>(WholeIn(info.Env(), info[0], 1, 1024, "parallelism")));
  return info.Env().Undefined();
}

Napi::Value JsParallelism(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(Parallelism()));
}

// codecAvailable(name): whether the codec runs natively here (its system library was found).
Napi::Value JsCodecAvailable(const Napi::CallbackInfo& info) {
  CodecId codec;
  bool known = info[0].IsString() && ParseCodec(info[0].As<Napi::String>().Utf8Value(), &codec);
  return Napi::Boolean::New(info.Env(), known && CodecAvailable(codec));
}

// codecBound(name, length): the most bytes a compressed chunk of `length` bytes can take.
Napi::Value JsCodecBound(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CodecId codec = CodecOf(env, info[0]);
  size_t n = static_cast<size_t>(WholeIn(env, info[1], 0, 2147483647.0, "length"));
  return Napi::Number::New(env, static_cast<double>(CompressBound(codec, n)));
}

// codecEncodeInto(codec, inputs, outputs, checksumKind | null) and
// codecDecodeInto(codec, inputs, plainLengths, outputs, crc): as the cipher's encodeInto and
// decodeInto, for the compressors that do not encrypt.
Napi::Value JsCodecEncodeInto(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ChunkJob job;
  job.codec = CodecOf(env, info[0]);
  job.encode = true;
  SumsOf(env, info[3], &job);
  return QueueJob(env, std::move(job), info[1], info[2], env.Undefined());
}

Napi::Value JsCodecDecodeInto(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ChunkJob job;
  job.codec = CodecOf(env, info[0]);
  job.encode = false;
  job.expected = LengthsOf(env, info[2]);
  job.want_sums = info[4].ToBoolean().Value();
  return QueueJob(env, std::move(job), info[1], info[3], env.Undefined());
}

// setMultiBuffer(on): whether AES runs in the AES-NI code of aes_ni.h and gcm_ni.h (multi-buffer
// CBC encryption, CBC decryption, CTR, ECB, GCM) rather than through EVP. Returns whether it now
// does (false where the CPU lacks AES-NI).
Napi::Value JsSetMultiBuffer(const Napi::CallbackInfo& info) {
  aesni::SetEnabled(info[0].ToBoolean().Value());
  return Napi::Boolean::New(info.Env(), aesni::Available());
}

Napi::Value JsMultiBuffer(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), aesni::Available());
}

// evpStreamSeconds(spec, key, chunkBytes, rounds, threads = 1): seconds `threads` threads take
// to encrypt chunkBytes * rounds bytes each, as one stream each. Benchmarks' OpenSSL baseline.
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
  size_t threads =
      info.Length() > 4 ? static_cast<size_t>(WholeIn(env, info[4], 1, 256, "threads")) : 1;
  // Bounded so that a benchmark's buffers (size bytes per thread) stay allocatable.
  size_t size = static_cast<size_t>(WholeIn(env, info[2], 1, 1 << 30, "size"));
  size_t rounds = static_cast<size_t>(WholeIn(env, info[3], 1, 1e6, "rounds"));
  Status st = StreamBenchParallel(spec, key.data, key.size, size, rounds, threads, &seconds);
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
  exports.Set("checksumCombine", Napi::Function::New(env, JsChecksumCombine));
  exports.Set("checksumBatch", Napi::Function::New(env, JsChecksumBatch));
  exports.Set("readChecked", Napi::Function::New(env, JsReadChecked));
  exports.Set("cipherAvailable", Napi::Function::New(env, JsCipherAvailable));
  exports.Set("startWriteback", Napi::Function::New(env, JsStartWriteback));
  exports.Set("setParallelism", Napi::Function::New(env, JsSetParallelism));
  exports.Set("parallelism", Napi::Function::New(env, JsParallelism));
  exports.Set("codecAvailable", Napi::Function::New(env, JsCodecAvailable));
  exports.Set("codecBound", Napi::Function::New(env, JsCodecBound));
  exports.Set("codecEncodeInto", Napi::Function::New(env, JsCodecEncodeInto));
  exports.Set("codecDecodeInto", Napi::Function::New(env, JsCodecDecodeInto));
  exports.Set("setMultiBuffer", Napi::Function::New(env, JsSetMultiBuffer));
  exports.Set("multiBuffer", Napi::Function::New(env, JsMultiBuffer));
  exports.Set("errorCodes", Napi::Function::New(env, JsErrorCodes));
  exports.Set("evpStreamSeconds", Napi::Function::New(env, JsEvpStreamSeconds));
  return exports;
}

}  // namespace tde

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  return tde::Init(env, exports);
}

NODE_API_MODULE(sstable_tde, InitModule)
