// Argument validation and async helpers for the N-API surface.
// Only for the binding files (never include from *_avx2.cc / *_avx512*.cc).
#pragma once
#include <napi.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

namespace qf {
namespace napi {

[[noreturn]] inline void throw_type(Napi::Env env, const std::string& msg) { throw Napi::TypeError::New(env, msg); }
[[noreturn]] inline void throw_range(Napi::Env env, const std::string& msg) { throw Napi::RangeError::New(env, msg); }

template <class T> struct TypedArrayKind;
template <> struct TypedArrayKind<float> { static constexpr napi_typedarray_type type = napi_float32_array; static constexpr const char* name = "Float32Array"; };
template <> struct TypedArrayKind<double> { static constexpr napi_typedarray_type type = napi_float64_array; static constexpr const char* name = "Float64Array"; };
template <> struct TypedArrayKind<int8_t> { static constexpr napi_typedarray_type type = napi_int8_array; static constexpr const char* name = "Int8Array"; };
template <> struct TypedArrayKind<uint8_t> { static constexpr napi_typedarray_type type = napi_uint8_array; static constexpr const char* name = "Uint8Array"; };
template <> struct TypedArrayKind<int16_t> { static constexpr napi_typedarray_type type = napi_int16_array; static constexpr const char* name = "Int16Array"; };
template <> struct TypedArrayKind<int32_t> { static constexpr napi_typedarray_type type = napi_int32_array; static constexpr const char* name = "Int32Array"; };
template <> struct TypedArrayKind<uint32_t> { static constexpr napi_typedarray_type type = napi_uint32_array; static constexpr const char* name = "Uint32Array"; };

inline const char* typed_array_name(napi_typedarray_type t) {
  switch (t) {
    case napi_int8_array: return "Int8Array";
    case napi_uint8_array: return "Uint8Array";
    case napi_uint8_clamped_array: return "Uint8ClampedArray";
    case napi_int16_array: return "Int16Array";
    case napi_uint16_array: return "Uint16Array";
    case napi_int32_array: return "Int32Array";
    case napi_uint32_array: return "Uint32Array";
    case napi_float32_array: return "Float32Array";
    case napi_float64_array: return "Float64Array";
    case napi_bigint64_array: return "BigInt64Array";
    case napi_biguint64_array: return "BigUint64Array";
    default: return "TypedArray";
  }
}

inline std::string describe(Napi::Value v) {
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsTypedArray()) return typed_array_name(v.As<Napi::TypedArray>().TypedArrayType());
  if (v.IsArrayBuffer()) return "ArrayBuffer";
  if (v.IsArray()) return "Array";
  if (v.IsNumber()) return "number";
  if (v.IsString()) return "string";
  if (v.IsBoolean()) return "boolean";
  if (v.IsFunction()) return "function";
  if (v.IsBigInt()) return "bigint";
  if (v.IsSymbol()) return "symbol";
  return "object";
}

// A validated view of a typed array argument.
template <class T>
struct Span {
  T* data = nullptr;
  size_t length = 0;
  Napi::Value value;  // keep for async (reference it while the work runs)
  bool present() const { return !value.IsEmpty() && !value.IsUndefined(); }
};

// Checked size arithmetic: sizes must stay below 2^53 (exact in JS) and the
// product must fit.
inline int64_t checked_mul(Napi::Env env, const char* fn, int64_t a, int64_t b, const char* what) {
  const int64_t lim = (int64_t(1) << 53);
  if (a < 0 || b < 0 || (a != 0 && b > lim / a)) throw_range(env, std::string(fn) + ": " + what + " is too large");
  return a * b;
}

// Options-object reader: every accessor throws TypeError/RangeError naming
// the function and the key.
class Args {
 public:
  Args(const Napi::CallbackInfo& info, const char* fn) : env_(info.Env()), fn_(fn) {
    if (info.Length() < 1 || !info[0].IsObject() || info[0].IsArray() || info[0].IsTypedArray() || info[0].IsFunction())
      throw_type(env_, std::string(fn) + ": expected an options object as the first argument (got " +
                           (info.Length() < 1 ? std::string("nothing") : describe(info[0])) + ")");
    o_ = info[0].As<Napi::Object>();
  }
  Napi::Env env() const { return env_; }
  const char* fn() const { return fn_; }
  Napi::Object object() const { return o_; }

  Napi::Value get(const char* key) const { return o_.Get(key); }
  bool has(const char* key) const {
    Napi::Value v = o_.Get(key);
    return !v.IsUndefined() && !v.IsNull();
  }
  std::string where(const char* key) const { return std::string(fn_) + ": " + key; }

  int64_t integer(const char* key, int64_t lo, int64_t hi) const {
    Napi::Value v = o_.Get(key);
    if (v.IsUndefined()) throw_type(env_, where(key) + " is required (an integer)");
    return to_int(v, key, lo, hi);
  }
  int64_t integer(const char* key, int64_t lo, int64_t hi, int64_t def) const {
    Napi::Value v = o_.Get(key);
    if (v.IsUndefined() || v.IsNull()) return def;
    return to_int(v, key, lo, hi);
  }
  double number(const char* key) const {
    Napi::Value v = o_.Get(key);
    if (v.IsUndefined()) throw_type(env_, where(key) + " is required (a number)");
    return to_num(v, key);
  }
  double number(const char* key, double def) const {
    Napi::Value v = o_.Get(key);
    if (v.IsUndefined() || v.IsNull()) return def;
    return to_num(v, key);
  }
  bool boolean(const char* key, bool def) const {
    Napi::Value v = o_.Get(key);
    if (v.IsUndefined() || v.IsNull()) return def;
    if (!v.IsBoolean()) throw_type(env_, where(key) + " must be a boolean (got " + describe(v) + ")");
    return v.As<Napi::Boolean>().Value();
  }
  std::string string(const char* key, const std::string& def) const {
    Napi::Value v = o_.Get(key);
    if (v.IsUndefined() || v.IsNull()) return def;
    if (!v.IsString()) throw_type(env_, where(key) + " must be a string (got " + describe(v) + ")");
    return v.As<Napi::String>().Utf8Value();
  }
  // One of `choices`; returns its index.
  int choice(const char* key, const std::vector<std::string>& choices, int def) const {
    Napi::Value v = o_.Get(key);
    if (v.IsUndefined() || v.IsNull()) return def;
    if (!v.IsString()) throw_type(env_, where(key) + " must be a string (got " + describe(v) + ")");
    std::string s = v.As<Napi::String>().Utf8Value();
    for (size_t i = 0; i < choices.size(); i++)
      if (choices[i] == s) return static_cast<int>(i);
    std::string all;
    for (auto& c : choices) all += (all.empty() ? "" : ", ") + ("'" + c + "'");
    throw_range(env_, where(key) + " must be one of " + all + " (got '" + s + "')");
  }

  // Typed array of element type T with at least min_len elements.
  template <class T>
  Span<T> array(const char* key, int64_t min_len, const char* need_desc = nullptr) const {
    Napi::Value v = o_.Get(key);
    if (v.IsUndefined() || v.IsNull())
      throw_type(env_, where(key) + " is required (a " + TypedArrayKind<T>::name + ")");
    return to_span<T>(v, key, min_len, need_desc);
  }
  template <class T>
  Span<T> optional_array(const char* key, int64_t min_len, const char* need_desc = nullptr) const {
    Napi::Value v = o_.Get(key);
    if (v.IsUndefined() || v.IsNull()) return Span<T>{};
    return to_span<T>(v, key, min_len, need_desc);
  }

  template <class T>
  Span<T> to_span(Napi::Value v, const char* key, int64_t min_len, const char* need_desc) const {
    if (!v.IsTypedArray())
      throw_type(env_, where(key) + " must be a " + TypedArrayKind<T>::name + " (got " + describe(v) + ")");
    Napi::TypedArray ta = v.As<Napi::TypedArray>();
    if (ta.TypedArrayType() != TypedArrayKind<T>::type)
      throw_type(env_, where(key) + " must be a " + TypedArrayKind<T>::name + " (got " +
                           typed_array_name(ta.TypedArrayType()) + ")");
    napi_value ab;
    napi_typedarray_type type;
    size_t len = 0, off = 0;
    void* data = nullptr;
    if (napi_get_typedarray_info(env_, v, &type, &len, &data, &ab, &off) != napi_ok)
      throw_type(env_, where(key) + " could not be read");
    bool detached = false;
    napi_is_detached_arraybuffer(env_, ab, &detached);
    if (detached) throw_type(env_, where(key) + " is backed by a detached ArrayBuffer");
    if (static_cast<int64_t>(len) < min_len)
      throw_range(env_, where(key) + " has " + std::to_string(len) + " elements; needs at least " +
                            std::to_string(min_len) + (need_desc ? std::string(" (") + need_desc + ")" : ""));
    if (len > 0 && data == nullptr) throw_type(env_, where(key) + " has no data");
    if (data != nullptr && (reinterpret_cast<uintptr_t>(data) % alignof(T)) != 0)
      throw_range(env_, where(key) + " is not aligned to " + std::to_string(alignof(T)) + " bytes");
    Span<T> s;
    s.data = static_cast<T*>(data);
    s.length = len;
    s.value = v;
    return s;
  }

 private:
  int64_t to_int(Napi::Value v, const char* key, int64_t lo, int64_t hi) const {
    if (!v.IsNumber()) throw_type(env_, where(key) + " must be an integer (got " + describe(v) + ")");
    double d = v.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d) || d != std::floor(d))
      throw_range(env_, where(key) + " must be an integer (got " + std::to_string(d) + ")");
    if (d < static_cast<double>(lo) || d > static_cast<double>(hi))
      throw_range(env_, where(key) + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "] (got " +
                            std::to_string(static_cast<long long>(d)) + ")");
    return static_cast<int64_t>(d);
  }
  double to_num(Napi::Value v, const char* key) const {
    if (!v.IsNumber()) throw_type(env_, where(key) + " must be a number (got " + describe(v) + ")");
    double d = v.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d)) throw_range(env_, where(key) + " must be finite");
    return d;
  }
  Napi::Env env_;
  const char* fn_;
  Napi::Object o_;
};

// Work prepared on the JS thread (arguments validated, pointers taken); run
// either now (sync form) or on the libuv pool (async form, Promise).
struct Prepared {
  std::function<void()> run;                      // must not touch JS values
  std::vector<Napi::Value> keep;                  // kept referenced while async work runs
  std::function<Napi::Value(Napi::Env)> result;   // builds the JS result; may be empty
};
using PrepareFn = Prepared (*)(const Napi::CallbackInfo&);

class PreparedWorker : public Napi::AsyncWorker {
 public:
  PreparedWorker(Napi::Env env, Prepared p)
      : Napi::AsyncWorker(env, "quantface"), p_(std::move(p)), deferred_(Napi::Promise::Deferred::New(env)) {
    for (auto& v : p_.keep)
      if (!v.IsEmpty() && !v.IsUndefined() && !v.IsNull() && v.IsObject())
        refs_.push_back(Napi::Persistent(v.As<Napi::Object>()));
    p_.keep.clear();
  }
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override {
    try {
      p_.run();
    } catch (const std::exception& e) {
      SetError(e.what());
    } catch (...) {
      SetError("quantface: native kernel failed");
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    try {
      deferred_.Resolve(p_.result ? p_.result(env) : env.Undefined());
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Prepared p_;
  Napi::Promise::Deferred deferred_;
  std::vector<Napi::ObjectReference> refs_;
};

// Exports `name` (sync) and `name + "Async"` (Promise) built from one prepare function.
template <PrepareFn F>
Napi::Value sync_entry(const Napi::CallbackInfo& info) {
  Prepared p = F(info);
  try {
    p.run();
  } catch (const std::bad_alloc&) {
    throw Napi::RangeError::New(info.Env(), "quantface: out of memory");
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), e.what());
  }
  return p.result ? p.result(info.Env()) : info.Env().Undefined();
}
template <PrepareFn F>
Napi::Value async_entry(const Napi::CallbackInfo& info) {
  Prepared p = F(info);
  auto* w = new PreparedWorker(info.Env(), std::move(p));
  Napi::Promise promise = w->promise();
  w->Queue();
  return promise;
}
#define QF_EXPORT_SYNC_ASYNC(exports, env, name, prepare)                                   \
  do {                                                                                      \
    (exports).Set(name, Napi::Function::New(env, ::qf::napi::sync_entry<prepare>, name));   \
    (exports).Set(name "Async", Napi::Function::New(env, ::qf::napi::async_entry<prepare>, name "Async")); \
  } while (0)

// Registry of module initialisers: each binding file adds its exports with
//   static void init_sgemm(Napi::Env env, Napi::Object exports) { ... }
//   QF_REGISTER_EXPORTS(init_sgemm)
using InitFn = void (*)(Napi::Env, Napi::Object);
std::vector<std::pair<std::string, InitFn>>& export_registry();
struct ExportRegistrar {
  ExportRegistrar(const char* name, InitFn f) { export_registry().emplace_back(name, f); }
};
#define QF_REGISTER_EXPORTS(fn) static ::qf::napi::ExportRegistrar fn##_registrar_(#fn, fn);

// Hook for the CUDA module to describe itself in info().
std::function<Napi::Value(Napi::Env)>& cuda_info_hook();

}  // namespace napi
}  // namespace qf
