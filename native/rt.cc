// quantface runtime (integer inference): kernel tables and threaded drivers
// of the elementwise kernels (rt.h), their N-API exports rtAdd / rtAffine /
// rtLut (+Async), and the program executor: rtProgram() validates a list of
// operations (int8 / fp32 convolutions, adds, affines, lookups) over one
// arena of activations once, rtRun[Async]() runs all of them in one call
// (one worker thread for the async form; the kernels use the native pool).
#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "conv.h"
#include "napi_util.h"
#include "packed_weights_napi.h"
#include "rt.h"
#include "sgemm.h"

namespace qf {
namespace rt {

QF_KERNEL(rt_add_kernel, AddFn, "rt_add",
          {
              QF_X86({"rt_add_avx512", Isa::Avx512, rt_add_avx512},)
              QF_X86({"rt_add_avx2", Isa::Avx2, rt_add_avx2},)
              {"rt_add_ref", Isa::Scalar, rt_add_ref},
          })

QF_KERNEL(rt_affine_kernel, AffineFn, "rt_affine",
          {
              QF_X86({"rt_affine_avx512", Isa::Avx512, rt_affine_avx512},)
              QF_X86({"rt_affine_avx2", Isa::Avx2, rt_affine_avx2},)
              {"rt_affine_ref", Isa::Scalar, rt_affine_ref},
          })

QF_KERNEL(rt_conv_input_kernel, ConvInputFn, "rt_conv_input",
          {
              QF_X86({"rt_conv_input_avx512", Isa::Avx512, rt_conv_input_avx512},)
              QF_X86({"rt_conv_input_avx2", Isa::Avx2, rt_conv_input_avx2},)
              {"rt_conv_input_ref", Isa::Scalar, rt_conv_input_ref},
          })

QF_KERNEL(rt_lut_kernel, LutFn, "rt_lut",
          {
              {"rt_lut_ref", Isa::Scalar, rt_lut_ref},
          })

void rt_add_run(AddFn fn, const AddArgs& args, int64_t count) {
  if (count <= 0) return;
  // Chunks of whole 64-element groups so every variant sees aligned-ish blocks.
  const int64_t grain = 16384;
  if (count <= grain || num_threads() == 1) {
    fn(args, 0, count);
    return;
  }
  const int64_t blocks = (count + 63) / 64;
  parallel_for(blocks, grain / 64, [&](int64_t b0, int64_t b1) { fn(args, b0 * 64, std::min(count, b1 * 64)); });
}

void rt_affine_run(AffineFn fn, const AffineArgs& args, int64_t rows) {
  if (rows <= 0) return;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, args.channels));
  if (rows <= grain || num_threads() == 1) {
    fn(args, 0, rows);
    return;
  }
  parallel_for(rows, grain, [&](int64_t r0, int64_t r1) { fn(args, r0, r1); });
}

void rt_lut_run(LutFn fn, const LutArgs& args, int64_t rows) {
  if (rows <= 0) return;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, args.channels));
  if (rows <= grain || num_threads() == 1) {
    fn(args, 0, rows);
    return;
  }
  parallel_for(rows, grain, [&](int64_t r0, int64_t r1) { fn(args, r0, r1); });
}

void rt_conv_input_run(ConvInputFn fn, const ConvInputArgs& args) {
  const ConvGeom& g = args.g;
  const int64_t rows = g.n * g.oh;
  if (rows <= 0) return;
  const int64_t work = std::max<int64_t>(1, g.ow * args.cpad * g.kh * g.kw * g.c);
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 20) / work);
  if (rows <= grain || num_threads() == 1) {
    fn(args, 0, rows);
    return;
  }
  parallel_for(rows, grain, [&](int64_t r0, int64_t r1) { fn(args, r0, r1); });
}

}  // namespace rt

// ====================================================================== N-API
namespace napi {
namespace {

using rt::AffAct;
using rt::VType;

constexpr int64_t kMax = int64_t(1) << 40;

// Options-object reader for objects that are not the first call argument
// (program operations); the same messages as Args.
class Obj {
 public:
  Obj(Napi::Env env, Napi::Object o, std::string where) : env_(env), o_(o), where_(std::move(where)) {}
  Napi::Env env() const { return env_; }
  std::string at(const char* key) const { return where_ + ": " + key; }
  Napi::Value get(const char* key) const { return o_.Get(key); }
  bool has(const char* key) const {
    Napi::Value v = o_.Get(key);
    return !v.IsUndefined() && !v.IsNull();
  }
  int64_t integer(const char* key, int64_t lo, int64_t hi) const {
    Napi::Value v = o_.Get(key);
    if (v.IsUndefined() || v.IsNull()) throw_type(env_, at(key) + " is required (an integer)");
    return to_int(v, key, lo, hi);
  }
  int64_t integer(const char* key, int64_t lo, int64_t hi, int64_t def) const {
    Napi::Value v = o_.Get(key);
    if (v.IsUndefined() || v.IsNull()) return def;
    return to_int(v, key, lo, hi);
  }
  double number(const char* key, double def) const {
    Napi::Value v = o_.Get(key);
    if (v.IsUndefined() || v.IsNull()) return def;
    if (!v.IsNumber()) throw_type(env_, at(key) + " must be a number (got " + describe(v) + ")");
    const double d = v.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d)) throw_range(env_, at(key) + " must be finite");
    return d;
  }
  int choice(const char* key, const std::vector<std::string>& choices, int def) const {
    Napi::Value v = o_.Get(key);
    if (v.IsUndefined() || v.IsNull()) {
      if (def >= 0) return def;
      std::string all;
      for (auto& c : choices) all += (all.empty() ? "" : ", ") + ("'" + c + "'");
      throw_type(env_, at(key) + " is required (one of " + all + ")");
    }
    if (!v.IsString()) throw_type(env_, at(key) + " must be a string (got " + describe(v) + ")");
    const std::string s = v.As<Napi::String>().Utf8Value();
    for (size_t i = 0; i < choices.size(); i++)
      if (choices[i] == s) return static_cast<int>(i);
    std::string all;
    for (auto& c : choices) all += (all.empty() ? "" : ", ") + ("'" + c + "'");
    throw_range(env_, at(key) + " must be one of " + all + " (got '" + s + "')");
  }
  std::string string(const char* key, const std::string& def) const {
    Napi::Value v = o_.Get(key);
    if (v.IsUndefined() || v.IsNull()) return def;
    if (!v.IsString()) throw_type(env_, at(key) + " must be a string (got " + describe(v) + ")");
    return v.As<Napi::String>().Utf8Value();
  }
  // Typed array of T; exact_len >= 0 requires that length, else at least min_len.
  template <class T>
  Span<T> array(const char* key, int64_t min_len, int64_t exact_len, bool required) const {
    Napi::Value v = o_.Get(key);
    if (v.IsUndefined() || v.IsNull()) {
      if (required) throw_type(env_, at(key) + " is required (a " + TypedArrayKind<T>::name + ")");
      return Span<T>{};
    }
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != TypedArrayKind<T>::type)
      throw_type(env_, at(key) + " must be a " + TypedArrayKind<T>::name + " (got " + describe(v) + ")");
    napi_value ab;
    napi_typedarray_type type;
    size_t len = 0, off = 0;
    void* data = nullptr;
    if (napi_get_typedarray_info(env_, v, &type, &len, &data, &ab, &off) != napi_ok)
      throw_type(env_, at(key) + " could not be read");
    bool detached = false;
    napi_is_detached_arraybuffer(env_, ab, &detached);
    if (detached) throw_type(env_, at(key) + " is backed by a detached ArrayBuffer");
    if (exact_len >= 0 && static_cast<int64_t>(len) != exact_len)
      throw_range(env_, at(key) + " has " + std::to_string(len) + " elements; needs exactly " + std::to_string(exact_len));
    if (static_cast<int64_t>(len) < min_len)
      throw_range(env_, at(key) + " has " + std::to_string(len) + " elements; needs at least " + std::to_string(min_len));
    if (len > 0 && data == nullptr) throw_type(env_, at(key) + " has no data");
    if (data != nullptr && (reinterpret_cast<uintptr_t>(data) % alignof(T)) != 0)
      throw_range(env_, at(key) + " is not aligned to " + std::to_string(alignof(T)) + " bytes");
    Span<T> s;
    s.data = static_cast<T*>(data);
    s.length = len;
    s.value = v;
    return s;
  }
  bool is_array_of(const char* key, napi_typedarray_type t) const {
    Napi::Value v = o_.Get(key);
    return v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == t;
  }

 private:
  int64_t to_int(Napi::Value v, const char* key, int64_t lo, int64_t hi) const {
    if (!v.IsNumber()) throw_type(env_, at(key) + " must be an integer (got " + describe(v) + ")");
    const double d = v.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d) || d != std::floor(d))
      throw_range(env_, at(key) + " must be an integer (got " + std::to_string(d) + ")");
    if (d < static_cast<double>(lo) || d > static_cast<double>(hi))
      throw_range(env_, at(key) + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "] (got " +
                            std::to_string(static_cast<long long>(d)) + ")");
    return static_cast<int64_t>(d);
  }
  Napi::Env env_;
  Napi::Object o_;
  std::string where_;
};

// Copies a typed array into native memory owned by an operation.
template <class T>
const T* own(AlignedBuf<T>& buf, const Span<T>& s) {
  if (!s.present()) return nullptr;
  buf.resize(std::max<size_t>(1, s.length));
  if (s.length) std::memcpy(buf.data(), s.data, s.length * sizeof(T));
  return buf.data();
}

// ------------------------------------------------------------------ quantization parameters
// u8 operand: scale > 0 finite (default 1), zero point 0..255 (default 0).
// f32 operands must not carry them (RangeError: they would be ignored).
void read_operand_q(const Obj& o, const char* scale_key, const char* zp_key, VType t, float* scale, int32_t* zp) {
  if (t == VType::F32) {
    if (o.has(scale_key) || o.has(zp_key))
      throw_range(o.env(), o.at(scale_key) + " / " + zp_key + " apply to u8 operands only (the operand is f32)");
    *scale = 1.f;
    *zp = 0;
    return;
  }
  const double s = o.number(scale_key, 1.0);
  const float sf = static_cast<float>(s);
  if (!(sf > 0.f) || !std::isfinite(sf)) throw_range(o.env(), o.at(scale_key) + " must be > 0 and finite as a float32");
  *scale = sf;
  *zp = static_cast<int32_t>(o.integer(zp_key, 0, 255, 0));
}

void read_output_q(const Obj& o, VType t, rt::Output* out) {
  out->type = t;
  if (t == VType::F32) {
    for (const char* k : {"outScale", "outZeroPoint", "clampMin", "clampMax"})
      if (o.has(k)) throw_range(o.env(), o.at(k) + " applies to u8 outputs only (out is f32)");
    return;
  }
  const float s = static_cast<float>(o.number("outScale", 1.0));
  if (!(s > 0.f) || !std::isfinite(s)) throw_range(o.env(), o.at("outScale") + " must be > 0 and finite as a float32");
  out->scale = s;
  out->zp = static_cast<int32_t>(o.integer("outZeroPoint", 0, 255, 0));
  out->lo = static_cast<int32_t>(o.integer("clampMin", 0, 255, 0));
  out->hi = static_cast<int32_t>(o.integer("clampMax", 0, 255, 255));
  if (out->lo > out->hi) throw_range(o.env(), o.at("clampMin") + " must be <= clampMax");
}

struct AffineParams {
  AlignedBuf<float> a, b, slope;
  rt::AffineArgs args;
};

// Reads channels, scale, bias, activation, slope, lo, hi (not the operands).
void read_affine_params(const Obj& o, int64_t channels, AffineParams* p) {
  rt::AffineArgs& g = p->args;
  g.channels = channels;
  g.a = own(p->a, o.array<float>("scale", 0, channels, false));
  g.b = own(p->b, o.array<float>("bias", 0, channels, false));
  g.act = static_cast<AffAct>(o.choice("activation", {"none", "relu", "prelu", "clamp"}, 0));
  Span<float> sl = o.array<float>("slope", 0, channels, g.act == AffAct::Prelu);
  if (g.act != AffAct::Prelu && sl.present()) throw_range(o.env(), o.at("slope") + " applies to activation 'prelu' only");
  g.slope = own(p->slope, sl);
  if (g.act == AffAct::Clamp) {
    if (!o.has("lo") || !o.has("hi")) throw_type(o.env(), o.at("lo") + " and hi are required with activation 'clamp'");
    g.lo = static_cast<float>(o.number("lo", 0));
    g.hi = static_cast<float>(o.number("hi", 0));
    if (!(g.lo <= g.hi)) throw_range(o.env(), o.at("lo") + " must be <= hi");
  } else if (o.has("lo") || o.has("hi")) {
    throw_range(o.env(), o.at("lo") + " / hi apply to activation 'clamp' only");
  }
}

// Elementwise in/out may be the same memory (in place) or disjoint.
void check_alias(Napi::Env env, const std::string& where, const void* in, size_t in_bytes, const void* out,
                 size_t out_bytes) {
  const char* i0 = static_cast<const char*>(in);
  const char* o0 = static_cast<const char*>(out);
  if (!in || !out || in_bytes == 0 || out_bytes == 0) return;
  if (i0 == o0 && in_bytes == out_bytes) return;
  if (o0 < i0 + in_bytes && i0 < o0 + out_bytes)
    throw_range(env, where + " must be the same memory as its input (in place, same type) or not overlap it");
}

// ------------------------------------------------------------------ standalone kernels
VType operand_type(Napi::Env env, const std::string& where, Napi::Value v) {
  if (v.IsTypedArray()) {
    auto t = v.As<Napi::TypedArray>().TypedArrayType();
    if (t == napi_uint8_array) return VType::U8;
    if (t == napi_float32_array) return VType::F32;
  }
  throw_type(env, where + " must be a Uint8Array or a Float32Array (got " + describe(v) + ")");
}

struct ArrOperand {
  VType type;
  void* data;
  size_t length;
  Napi::Value value;
};

ArrOperand read_arr(const Obj& o, const char* key) {
  if (!o.has(key)) throw_type(o.env(), o.at(key) + " is required (a Uint8Array or a Float32Array)");
  const VType t = operand_type(o.env(), o.at(key), o.get(key));
  ArrOperand r;
  r.type = t;
  if (t == VType::U8) {
    Span<uint8_t> s = o.array<uint8_t>(key, 0, -1, true);
    r.data = s.data;
    r.length = s.length;
  } else {
    Span<float> s = o.array<float>(key, 0, -1, true);
    r.data = s.data;
    r.length = s.length;
  }
  r.value = o.get(key);
  return r;
}

size_t esize(VType t) { return t == VType::U8 ? 1 : 4; }

Prepared prepare_rt_add(const Napi::CallbackInfo& info) {
  Args args(info, "rtAdd");
  Napi::Env env = info.Env();
  Obj o(env, args.object(), "rtAdd");
  ArrOperand a = read_arr(o, "a"), b = read_arr(o, "b"), out = read_arr(o, "out");
  const int64_t count = o.integer("count", 0, kMax, static_cast<int64_t>(out.length));
  for (auto* p : {&a, &b, &out})
    if (static_cast<int64_t>(p->length) < count)
      throw_range(env, o.at(p == &a ? "a" : p == &b ? "b" : "out") + " has " + std::to_string(p->length) +
                           " elements; needs at least count = " + std::to_string(count));
  auto g = std::make_shared<rt::AddArgs>();
  g->a.type = a.type;
  g->a.data = a.data;
  read_operand_q(o, "aScale", "aZeroPoint", a.type, &g->a.scale, &g->a.zp);
  g->b.type = b.type;
  g->b.data = b.data;
  read_operand_q(o, "bScale", "bZeroPoint", b.type, &g->b.scale, &g->b.zp);
  read_output_q(o, out.type, &g->out);
  g->out.data = out.data;
  check_alias(env, o.at("out"), a.data, count * esize(a.type), out.data, count * esize(out.type));
  check_alias(env, o.at("out"), b.data, count * esize(b.type), out.data, count * esize(out.type));
  const std::string want = o.string("variant", "");
  const auto* v = rt::rt_add_kernel().find(want);
  if (!v) throw_range(env, o.at("variant") + " '" + want + "' is unknown or not supported on this CPU");
  rt::AddFn fn = v->fn;
  Prepared p;
  p.keep = {a.value, b.value, out.value};
  p.run = [fn, g, count]() { rt::rt_add_run(fn, *g, count); };
  return p;
}

Prepared prepare_rt_affine(const Napi::CallbackInfo& info) {
  Args args(info, "rtAffine");
  Napi::Env env = info.Env();
  Obj o(env, args.object(), "rtAffine");
  ArrOperand x = read_arr(o, "x"), out = read_arr(o, "out");
  const int64_t channels = o.integer("channels", 1, kMax, 1);
  const int64_t count = o.integer("count", 0, kMax, static_cast<int64_t>(x.length));
  if (count % channels) throw_range(env, o.at("count") + " (" + std::to_string(count) + ") must be a multiple of channels");
  if (static_cast<int64_t>(x.length) < count) throw_range(env, o.at("x") + " has fewer than count elements");
  if (static_cast<int64_t>(out.length) < count) throw_range(env, o.at("out") + " has " + std::to_string(out.length) +
                                                                   " elements; needs at least count = " + std::to_string(count));
  auto p = std::make_shared<AffineParams>();
  read_affine_params(o, channels, p.get());
  p->args.x.type = x.type;
  p->args.x.data = x.data;
  read_operand_q(o, "xScale", "xZeroPoint", x.type, &p->args.x.scale, &p->args.x.zp);
  read_output_q(o, out.type, &p->args.out);
  p->args.out.data = out.data;
  check_alias(env, o.at("out"), x.data, count * esize(x.type), out.data, count * esize(out.type));
  const std::string want = o.string("variant", "");
  const auto* v = rt::rt_affine_kernel().find(want);
  if (!v) throw_range(env, o.at("variant") + " '" + want + "' is unknown or not supported on this CPU");
  rt::AffineFn fn = v->fn;
  Prepared pr;
  pr.keep = {x.value, out.value};
  const int64_t rows = count / channels;
  pr.run = [fn, p, rows]() { rt::rt_affine_run(fn, p->args, rows); };
  return pr;
}

Prepared prepare_rt_lut(const Napi::CallbackInfo& info) {
  Args args(info, "rtLut");
  Napi::Env env = info.Env();
  Obj o(env, args.object(), "rtLut");
  Span<uint8_t> x = o.array<uint8_t>("x", 0, -1, true);
  const int64_t channels = o.integer("channels", 1, int64_t(1) << 24, 1);
  const int64_t count = o.integer("count", 0, kMax, static_cast<int64_t>(x.length));
  if (count % channels) throw_range(env, o.at("count") + " (" + std::to_string(count) + ") must be a multiple of channels");
  if (static_cast<int64_t>(x.length) < count) throw_range(env, o.at("x") + " has fewer than count elements");
  if (!o.has("table")) throw_type(env, o.at("table") + " is required (a Uint8Array or a Float32Array of channels * 256)");
  const VType tt = operand_type(env, o.at("table"), o.get("table"));
  ArrOperand out = read_arr(o, "out");
  if (out.type != tt) throw_type(env, o.at("out") + " must have the table's type");
  if (static_cast<int64_t>(out.length) < count) throw_range(env, o.at("out") + " has " + std::to_string(out.length) +
                                                                   " elements; needs at least count = " + std::to_string(count));
  auto g = std::make_shared<rt::LutArgs>();
  Napi::Value tv = o.get("table");
  if (tt == VType::U8) g->table = o.array<uint8_t>("table", 0, channels * 256, true).data;
  else g->table = o.array<float>("table", 0, channels * 256, true).data;
  check_alias(env, o.at("out"), x.data, count, out.data, count * esize(out.type));
  g->channels = channels;
  g->x = x.data;
  g->out = out.data;
  g->out_type = tt;
  const std::string want = o.string("variant", "");
  const auto* v = rt::rt_lut_kernel().find(want);
  if (!v) throw_range(env, o.at("variant") + " '" + want + "' is unknown or not supported on this CPU");
  rt::LutFn fn = v->fn;
  Prepared p;
  p.keep = {x.value, tv, out.value};
  const int64_t rows = count / channels;
  p.run = [fn, g, rows]() { rt::rt_lut_run(fn, *g, rows); };
  return p;
}

// Reads the conv_input parameters shared by rtConvInput and the program op:
// geometry (groups must be 1), table, weight (OHWI, repacked), conv bias and
// the affine epilogue. Operand pointers are filled by the caller.
struct ConvInputParams {
  AlignedBuf<float> table, wt, cbias;
  AffineParams ep;
  rt::ConvInputArgs args;
};

ConvGeom read_geom(const Obj& o);

void read_conv_input(const Obj& o, ConvInputParams* P) {
  Napi::Env env = o.env();
  ConvGeom g = read_geom(o);
  if (g.groups != 1) throw_range(env, o.at("groups") + " must be 1 for conv_input");
  if (g.c > 64) throw_range(env, o.at("c") + " must be at most 64 for conv_input (a first layer)");
  Span<float> table = o.array<float>("table", 0, g.c * 256, true);
  own(P->table, table);
  const int64_t cpad = (g.cout + 15) / 16 * 16;
  Span<float> w = o.array<float>("weight", 0, g.cout * g.kh * g.kw * g.c, true);
  const int64_t taps = g.kh * g.kw * g.c;
  P->wt.resize(static_cast<size_t>(taps * cpad));
  std::fill(P->wt.data(), P->wt.data() + taps * cpad, 0.f);
  for (int64_t j = 0; j < g.cout; j++)
    for (int64_t t = 0; t < taps; t++) P->wt.data()[t * cpad + j] = w.data[j * taps + t];
  Span<float> cb = o.array<float>("convBias", 0, g.cout, false);
  own(P->cbias, cb);
  read_affine_params(o, g.cout, &P->ep);
  rt::ConvInputArgs& A = P->args;
  A.g = g;
  A.table = P->table.data();
  A.wt = P->wt.data();
  A.cpad = cpad;
  A.cbias = cb.present() ? P->cbias.data() : nullptr;
  A.a = P->ep.args.a;
  A.b = P->ep.args.b;
  A.act = P->ep.args.act;
  A.slope = P->ep.args.slope;
  A.lo = P->ep.args.lo;
  A.hi = P->ep.args.hi;
}

Prepared prepare_rt_conv_input(const Napi::CallbackInfo& info) {
  Args args(info, "rtConvInput");
  Napi::Env env = info.Env();
  Obj o(env, args.object(), "rtConvInput");
  auto P = std::make_shared<ConvInputParams>();
  read_conv_input(o, P.get());
  const ConvGeom& g = P->args.g;
  Span<uint8_t> x = o.array<uint8_t>("x", g.n * g.h * g.w * g.c, -1, true);
  ArrOperand out = read_arr(o, "out");
  const int64_t need = g.n * g.oh * g.ow * g.cout;
  if (static_cast<int64_t>(out.length) < need)
    throw_range(env, o.at("out") + " has " + std::to_string(out.length) + " elements; needs at least " + std::to_string(need) + " (n*oh*ow*cout)");
  read_output_q(o, out.type, &P->args.out);
  P->args.out.data = out.data;
  P->args.x = x.data;
  {
    const char* x0 = reinterpret_cast<const char*>(x.data);
    const char* o0 = static_cast<const char*>(out.data);
    const int64_t xb = g.n * g.h * g.w * g.c, ob = need * static_cast<int64_t>(esize(out.type));
    if (xb > 0 && ob > 0 && o0 < x0 + xb && x0 < o0 + ob) throw_range(env, o.at("out") + " must not overlap x");
  }
  const std::string want = o.string("variant", "");
  const auto* v = rt::rt_conv_input_kernel().find(want);
  if (!v) throw_range(env, o.at("variant") + " '" + want + "' is unknown or not supported on this CPU");
  rt::ConvInputFn fn = v->fn;
  Prepared p;
  p.keep = {x.value, out.value};
  p.run = [fn, P]() { rt::rt_conv_input_run(fn, P->args); };
  return p;
}

// ====================================================================== programs
struct Extent {
  int64_t off = 0, bytes = 0;
};

struct Op {
  std::string name;
  virtual ~Op() = default;
  virtual void run(uint8_t* arena) const = 0;
  virtual void extents(std::vector<Extent>* in, Extent* out) const = 0;
};

Extent read_extent(const Obj& o, const char* key, int64_t elems, size_t elem, int64_t arena_bytes) {
  const int64_t off = o.integer(key, 0, kMax);
  if (elem > 1 && off % static_cast<int64_t>(elem))
    throw_range(o.env(), o.at(key) + " (arena offset " + std::to_string(off) + ") must be a multiple of " +
                             std::to_string(elem));
  const int64_t bytes = elems * static_cast<int64_t>(elem);
  if (off + bytes > arena_bytes)
    throw_range(o.env(), o.at(key) + ": " + std::to_string(bytes) + " bytes at offset " + std::to_string(off) +
                             " run past the arena (" + std::to_string(arena_bytes) + " bytes)");
  return Extent{off, bytes};
}

VType read_vtype(const Obj& o, const char* key) { return static_cast<VType>(o.choice(key, {"u8", "f32"}, -1)); }

ConvGeom read_geom(const Obj& o) {
  ConvGeom g;
  g.n = o.integer("n", 1, kMax);
  g.h = o.integer("h", 1, kMax);
  g.w = o.integer("w", 1, kMax);
  g.c = o.integer("c", 1, kMax);
  g.cout = o.integer("cout", 1, kMax);
  g.kh = o.integer("kh", 1, 1 << 16);
  g.kw = o.integer("kw", 1, 1 << 16);
  g.sh = o.integer("strideH", 1, 1 << 16, 1);
  g.sw = o.integer("strideW", 1, 1 << 16, 1);
  g.pt = o.integer("padTop", 0, 1 << 16, 0);
  g.pl = o.integer("padLeft", 0, 1 << 16, 0);
  g.pb = o.integer("padBottom", 0, 1 << 16, 0);
  g.pr = o.integer("padRight", 0, 1 << 16, 0);
  g.dh = o.integer("dilationH", 1, 1 << 16, 1);
  g.dw = o.integer("dilationW", 1, 1 << 16, 1);
  g.groups = o.integer("groups", 1, kMax, 1);
  if (g.c % g.groups || g.cout % g.groups) throw_range(o.env(), o.at("groups") + " must divide c and cout");
  g.oh = conv_out_size(g.h, g.kh, g.sh, g.pt, g.pb, g.dh);
  g.ow = conv_out_size(g.w, g.kw, g.sw, g.pl, g.pr, g.dw);
  if (g.oh < 1 || g.ow < 1) throw_range(o.env(), o.at("kh") + ": the kernel does not fit the padded input");
  return g;
}

bool overlaps(const Extent& a, const Extent& b) { return a.bytes > 0 && b.bytes > 0 && a.off < b.off + b.bytes && b.off < a.off + a.bytes; }

struct ConvU8Op : Op {
  ConvGeom g;
  Extent x, out;
  int32_t xzp = 0;
  bool dw = false;
  const PackedS8* packed = nullptr;
  GemmU8S8Fn gemm = nullptr;
  DwU8S8Fn dwfn = nullptr;
  DwU8Prep prep;
  AlignedBuf<int8_t> wraw;
  AlignedBuf<int16_t> wpair;
  AlignedBuf<uint8_t> zbuf;
  AlignedBuf<int32_t> wzp;
  AlignedBuf<float> scale, bias, slope;
  Epilogue ep;
  void run(uint8_t* arena) const override {
    const uint8_t* xp = arena + x.off;
    void* op = arena + out.off;
    if (!dw) {
      conv2d_u8s8_gemm(gemm, g, xp, xzp, packed, wzp.n ? wzp.data() : nullptr, ep, op);
      return;
    }
    const int64_t work = std::max<int64_t>(1, g.ow * g.c * g.kh * g.kw);
    const DwU8S8Fn f = dwfn;
    const DwU8Prep& p = prep;
    const Epilogue& e = ep;
    const ConvGeom& gg = g;
    parallel_for(g.n * g.oh, std::max<int64_t>(1, 65536 / work),
                 [&](int64_t r0, int64_t r1) { f(gg, xp, p, e, op, r0, r1); });
  }
  void extents(std::vector<Extent>* in, Extent* o) const override {
    in->push_back(x);
    *o = out;
  }
};

struct ConvF32Op : Op {
  ConvGeom g;
  Extent x, out;
  AlignedBuf<float> w, bias;
  bool has_bias = false, dw = false;
  void run(uint8_t* arena) const override {
    const float* xp = reinterpret_cast<const float*>(arena + x.off);
    float* op = reinterpret_cast<float*>(arena + out.off);
    const float* bp = has_bias ? bias.data() : nullptr;
    if (dw)
      conv2d_depthwise_f32_run(conv2d_depthwise_f32_kernel().chosen().fn, g, xp, w.data(), bp, op);
    else
      conv2d_f32_gemm_with(sgemm_kernel().chosen().fn, g, xp, w.data(), bp, op, false);
  }
  void extents(std::vector<Extent>* in, Extent* o) const override {
    in->push_back(x);
    *o = out;
  }
};

struct AddOp : Op {
  rt::AddArgs args;
  Extent a, b, out;
  int64_t count = 0;
  rt::AddFn fn = nullptr;
  void run(uint8_t* arena) const override {
    rt::AddArgs g = args;
    g.a.data = arena + a.off;
    g.b.data = arena + b.off;
    g.out.data = arena + out.off;
    rt::rt_add_run(fn, g, count);
  }
  void extents(std::vector<Extent>* in, Extent* o) const override {
    in->push_back(a);
    in->push_back(b);
    *o = out;
  }
};

struct AffineOp : Op {
  AffineParams p;
  Extent x, out;
  int64_t rows = 0;
  rt::AffineFn fn = nullptr;
  void run(uint8_t* arena) const override {
    rt::AffineArgs g = p.args;
    g.x.data = arena + x.off;
    g.out.data = arena + out.off;
    rt::rt_affine_run(fn, g, rows);
  }
  void extents(std::vector<Extent>* in, Extent* o) const override {
    in->push_back(x);
    *o = out;
  }
};

struct ConvInputOp : Op {
  ConvInputParams p;
  Extent x, out;
  rt::ConvInputFn fn = nullptr;
  void run(uint8_t* arena) const override {
    rt::ConvInputArgs a = p.args;
    a.x = arena + x.off;
    a.out.data = arena + out.off;
    rt::rt_conv_input_run(fn, a);
  }
  void extents(std::vector<Extent>* in, Extent* o) const override {
    in->push_back(x);
    *o = out;
  }
};

struct LutOp : Op {
  AlignedBuf<uint8_t> t8;
  AlignedBuf<float> t32;
  rt::LutArgs args;
  Extent x, out;
  int64_t rows = 0;
  rt::LutFn fn = nullptr;
  void run(uint8_t* arena) const override {
    rt::LutArgs g = args;
    g.x = arena + x.off;
    g.out = arena + out.off;
    rt::rt_lut_run(fn, g, rows);
  }
  void extents(std::vector<Extent>* in, Extent* o) const override {
    in->push_back(x);
    *o = out;
  }
};

std::unique_ptr<Op> parse_conv_u8(const Obj& o, int64_t arena, std::vector<Napi::Reference<Napi::Value>>* refs) {
  Napi::Env env = o.env();
  auto op = std::make_unique<ConvU8Op>();
  ConvGeom& g = op->g;
  g = read_geom(o);
  op->dw = conv_is_depthwise(g) && g.groups > 1;
  if (g.groups != 1 && !op->dw) throw_range(env, o.at("groups") + " must be 1 or c = cout (depthwise) for conv_u8");
  op->x = read_extent(o, "x", g.n * g.h * g.w * g.c, 1, arena);
  op->xzp = static_cast<int32_t>(o.integer("xZeroPoint", 0, 255, 0));
  Span<int32_t> wzp = o.array<int32_t>("wZeroPoint", 0, g.cout, false);
  own(op->wzp, wzp);
  if (!wzp.present()) op->wzp.n = 0;
  Epilogue& ep = op->ep;
  const int t = o.choice("outType", {"u8", "f32"}, -1);
  ep.type = t == 0 ? OutType::U8 : OutType::F32;
  ep.scale = own(op->scale, o.array<float>("scale", 0, g.cout, false));
  ep.bias = own(op->bias, o.array<float>("bias", 0, g.cout, false));
  ep.act = static_cast<Act>(o.choice("activation", {"none", "relu", "prelu"}, 0));
  Span<float> sl = o.array<float>("slope", 0, g.cout, ep.act == Act::Prelu);
  if (ep.act != Act::Prelu && sl.present()) throw_range(env, o.at("slope") + " applies to activation 'prelu' only");
  ep.slope = own(op->slope, sl);
  rt::Output q;
  read_output_q(o, ep.type == OutType::U8 ? VType::U8 : VType::F32, &q);
  ep.out_scale = q.scale;
  ep.out_zp = q.zp;
  ep.clamp_min = q.lo;
  ep.clamp_max = q.hi;
  const int64_t out_elems = g.n * g.oh * g.ow * g.cout;
  op->out = read_extent(o, "out", out_elems, ep.type == OutType::U8 ? 1 : 4, arena);
  if (overlaps(op->x, op->out)) throw_range(env, o.at("out") + " must not overlap x");
  const std::string want = o.string("variant", "");
  if (!op->dw) {
    if (!o.has("weight")) throw_type(env, o.at("weight") + " is required (a PackedWeights)");
    Napi::Value wv = o.get("weight");
    op->packed = unwrap_packed_weights(wv, "rtProgram", "weight");
    const int64_t K = g.kh * g.kw * g.c;
    if (op->packed->n != g.cout || op->packed->k != K)
      throw_range(env, o.at("weight") + " is packed as n = " + std::to_string(op->packed->n) + ", k = " +
                           std::to_string(op->packed->k) + "; needs n = cout = " + std::to_string(g.cout) +
                           ", k = kh*kw*c = " + std::to_string(K));
    refs->push_back(Napi::Persistent(wv));
    const auto* v = gemm_u8s8s32_kernel().find(want);
    if (!v) throw_range(env, o.at("variant") + " '" + want + "' is unknown or not supported on this CPU");
    op->gemm = v->fn;
  } else {
    const int64_t C = g.c, T = g.kh * g.kw;
    Span<int8_t> w = o.array<int8_t>("weight", 0, C * T, true);
    own(op->wraw, w);
    const auto* v = conv2d_u8s8_depthwise_kernel().find(want);
    if (!v) throw_range(env, o.at("variant") + " '" + want + "' is unknown or not supported on this CPU");
    op->dwfn = v->fn;
    DwU8Prep& p = op->prep;
    p.xzp = op->xzp;
    p.w = op->wraw.data();
    p.wzp = op->wzp.n ? op->wzp.data() : nullptr;
    p.npairs = (T + 1) / 2;
    p.cpad = (C + 15) / 16 * 16;
    op->wpair.resize(static_cast<size_t>(p.npairs * p.cpad * 2));
    std::fill(op->wpair.data(), op->wpair.data() + p.npairs * p.cpad * 2, int16_t(0));
    bool fits = true;
    for (int64_t ch = 0; ch < C && fits; ch++) {
      const int64_t wz = p.wzp ? p.wzp[ch] : 0;
      for (int64_t tt = 0; tt < T; tt++) {
        const int64_t val = static_cast<int64_t>(p.w[ch * T + tt]) - wz;
        if (val < -32768 || val > 32767) {
          fits = false;
          break;
        }
        op->wpair.data()[((tt / 2) * p.cpad + ch) * 2 + (tt & 1)] = static_cast<int16_t>(val);
      }
    }
    if (!fits) op->dwfn = dw_u8s8_ref;
    p.wpair = op->wpair.data();
    p.zbuf_len = 8 * g.sw * C + p.cpad + 64;
    op->zbuf.resize(static_cast<size_t>(p.zbuf_len));
    std::memset(op->zbuf.data(), op->xzp, static_cast<size_t>(p.zbuf_len));
    p.zbuf = op->zbuf.data();
  }
  return op;
}

std::unique_ptr<Op> parse_conv_f32(const Obj& o, int64_t arena) {
  Napi::Env env = o.env();
  auto op = std::make_unique<ConvF32Op>();
  ConvGeom& g = op->g;
  g = read_geom(o);
  op->dw = conv_is_depthwise(g) && g.groups > 1;
  op->x = read_extent(o, "x", g.n * g.h * g.w * g.c, 4, arena);
  op->out = read_extent(o, "out", g.n * g.oh * g.ow * g.cout, 4, arena);
  if (overlaps(op->x, op->out)) throw_range(env, o.at("out") + " must not overlap x");
  own(op->w, o.array<float>("weight", 0, g.cout * g.kh * g.kw * (g.c / g.groups), true));
  Span<float> b = o.array<float>("bias", 0, g.cout, false);
  op->has_bias = b.present();
  own(op->bias, b);
  return op;
}

std::unique_ptr<Op> parse_add(const Obj& o, int64_t arena) {
  auto op = std::make_unique<AddOp>();
  op->count = o.integer("count", 0, kMax);
  const VType at = read_vtype(o, "aType"), bt = read_vtype(o, "bType"), ot = read_vtype(o, "outType");
  op->a = read_extent(o, "a", op->count, esize(at), arena);
  op->b = read_extent(o, "b", op->count, esize(bt), arena);
  op->out = read_extent(o, "out", op->count, esize(ot), arena);
  op->args.a.type = at;
  op->args.b.type = bt;
  read_operand_q(o, "aScale", "aZeroPoint", at, &op->args.a.scale, &op->args.a.zp);
  read_operand_q(o, "bScale", "bZeroPoint", bt, &op->args.b.scale, &op->args.b.zp);
  read_output_q(o, ot, &op->args.out);
  for (const Extent* e : {&op->a, &op->b})
    if (overlaps(*e, op->out) && !(e->off == op->out.off && e->bytes == op->out.bytes))
      throw_range(o.env(), o.at("out") + " must be the same memory as an input (in place, same type) or not overlap it");
  const std::string want = o.string("variant", "");
  const auto* v = rt::rt_add_kernel().find(want);
  if (!v) throw_range(o.env(), o.at("variant") + " '" + want + "' is unknown or not supported on this CPU");
  op->fn = v->fn;
  return op;
}

std::unique_ptr<Op> parse_affine(const Obj& o, int64_t arena) {
  auto op = std::make_unique<AffineOp>();
  const int64_t count = o.integer("count", 0, kMax);
  const int64_t channels = o.integer("channels", 1, kMax, 1);
  if (count % channels) throw_range(o.env(), o.at("count") + " must be a multiple of channels");
  op->rows = count / channels;
  read_affine_params(o, channels, &op->p);
  const VType xt = read_vtype(o, "xType"), ot = read_vtype(o, "outType");
  op->x = read_extent(o, "x", count, esize(xt), arena);
  op->out = read_extent(o, "out", count, esize(ot), arena);
  if (overlaps(op->x, op->out) && !(op->x.off == op->out.off && op->x.bytes == op->out.bytes))
    throw_range(o.env(), o.at("out") + " must be the same memory as x (in place, same type) or not overlap it");
  op->p.args.x.type = xt;
  read_operand_q(o, "xScale", "xZeroPoint", xt, &op->p.args.x.scale, &op->p.args.x.zp);
  read_output_q(o, ot, &op->p.args.out);
  const std::string want = o.string("variant", "");
  const auto* v = rt::rt_affine_kernel().find(want);
  if (!v) throw_range(o.env(), o.at("variant") + " '" + want + "' is unknown or not supported on this CPU");
  op->fn = v->fn;
  return op;
}

std::unique_ptr<Op> parse_conv_input(const Obj& o, int64_t arena) {
  auto op = std::make_unique<ConvInputOp>();
  read_conv_input(o, &op->p);
  const ConvGeom& g = op->p.args.g;
  op->x = read_extent(o, "x", g.n * g.h * g.w * g.c, 1, arena);
  const VType ot = read_vtype(o, "outType");
  op->out = read_extent(o, "out", g.n * g.oh * g.ow * g.cout, esize(ot), arena);
  if (overlaps(op->x, op->out)) throw_range(o.env(), o.at("out") + " must not overlap x");
  read_output_q(o, ot, &op->p.args.out);
  const std::string want = o.string("variant", "");
  const auto* v = rt::rt_conv_input_kernel().find(want);
  if (!v) throw_range(o.env(), o.at("variant") + " '" + want + "' is unknown or not supported on this CPU");
  op->fn = v->fn;
  return op;
}

std::unique_ptr<Op> parse_lut(const Obj& o, int64_t arena) {
  auto op = std::make_unique<LutOp>();
  const int64_t count = o.integer("count", 0, kMax);
  const int64_t channels = o.integer("channels", 1, int64_t(1) << 24, 1);
  if (count % channels) throw_range(o.env(), o.at("count") + " must be a multiple of channels");
  op->rows = count / channels;
  if (!o.has("table")) throw_type(o.env(), o.at("table") + " is required (a Uint8Array or a Float32Array of channels * 256)");
  const VType tt = operand_type(o.env(), o.at("table"), o.get("table"));
  if (tt == VType::U8) op->args.table = own(op->t8, o.array<uint8_t>("table", 0, channels * 256, true));
  else op->args.table = own(op->t32, o.array<float>("table", 0, channels * 256, true));
  op->args.channels = channels;
  op->args.out_type = tt;
  op->x = read_extent(o, "x", count, 1, arena);
  op->out = read_extent(o, "out", count, esize(tt), arena);
  if (overlaps(op->x, op->out) && !(op->x.off == op->out.off && op->x.bytes == op->out.bytes))
    throw_range(o.env(), o.at("out") + " must be the same memory as x (in place, u8 table) or not overlap it");
  const std::string want = o.string("variant", "");
  const auto* v = rt::rt_lut_kernel().find(want);
  if (!v) throw_range(o.env(), o.at("variant") + " '" + want + "' is unknown or not supported on this CPU");
  op->fn = v->fn;
  return op;
}

const napi_type_tag kProgramTag = {0x5f1c2a7e93b04d61ULL, 0xa2d84c1b7e3f9056ULL};

class ProgramWrap : public Napi::ObjectWrap<ProgramWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "RtProgram",
                       {InstanceAccessor<&ProgramWrap::GetArena>("arenaBytes", napi_enumerable),
                        InstanceAccessor<&ProgramWrap::GetLength>("length", napi_enumerable)});
  }
  struct Parsed {
    int64_t arena = 0;
    std::vector<std::unique_ptr<Op>> ops;
    std::vector<Napi::Reference<Napi::Value>> refs;
  };
  explicit ProgramWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ProgramWrap>(info) {
    Napi::Env env = info.Env();
    if (info.Length() != 1 || !info[0].IsExternal()) throw_type(env, "RtProgram: not constructible; use rtProgram()");
    auto* holder = info[0].As<Napi::External<std::unique_ptr<Parsed>>>().Data();
    if (!holder || !*holder) throw_type(env, "RtProgram: not constructible; use rtProgram()");
    p_ = std::move(*holder);
    napi_type_tag_object(env, info.This(), &kProgramTag);
  }
  const Parsed* get() const { return p_.get(); }

 private:
  Napi::Value GetArena(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(p_->arena)); }
  Napi::Value GetLength(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(p_->ops.size()));
  }
  std::unique_ptr<Parsed> p_;
};

Napi::Value RtProgram(const Napi::CallbackInfo& info) {
  Args args(info, "rtProgram");
  Napi::Env env = info.Env();
  const int64_t arena = args.integer("arenaBytes", 0, kMax);
  Napi::Value opsv = args.get("ops");
  if (!opsv.IsArray()) throw_type(env, "rtProgram: ops must be an Array of operations (got " + describe(opsv) + ")");
  Napi::Array ops = opsv.As<Napi::Array>();
  auto parsed = std::make_unique<ProgramWrap::Parsed>();
  parsed->arena = arena;
  for (uint32_t i = 0; i < ops.Length(); i++) {
    Napi::Value v = ops.Get(i);
    const std::string where = "rtProgram: ops[" + std::to_string(i) + "]";
    if (!v.IsObject() || v.IsArray() || v.IsTypedArray())
      throw_type(env, where + " must be an operation object (got " + describe(v) + ")");
    Obj o(env, v.As<Napi::Object>(), where);
    const int kind = o.choice("op", {"conv_u8", "conv_f32", "add", "affine", "lut", "conv_input"}, -1);
    std::unique_ptr<Op> op;
    switch (kind) {
      case 0: op = parse_conv_u8(o, arena, &parsed->refs); break;
      case 1: op = parse_conv_f32(o, arena); break;
      case 2: op = parse_add(o, arena); break;
      case 3: op = parse_affine(o, arena); break;
      case 4: op = parse_lut(o, arena); break;
      default: op = parse_conv_input(o, arena); break;
    }
    op->name = o.string("name", "");
    parsed->ops.push_back(std::move(op));
  }
  auto* ctor = static_cast<Napi::FunctionReference*>(info.Data());
  return ctor->New({Napi::External<std::unique_ptr<ProgramWrap::Parsed>>::New(env, &parsed)});
}

Prepared prepare_rt_run(const Napi::CallbackInfo& info) {
  Args args(info, "rtRun");
  Napi::Env env = info.Env();
  Napi::Value pv = args.get("program");
  bool tagged = false;
  if (pv.IsObject() && !pv.IsTypedArray() && !pv.IsArray() && !pv.IsFunction())
    napi_check_object_type_tag(env, pv, &kProgramTag, &tagged);
  if (!tagged) throw_type(env, "rtRun: program must be an RtProgram from rtProgram() (got " + describe(pv) + ")");
  ProgramWrap* w = ProgramWrap::Unwrap(pv.As<Napi::Object>());
  const ProgramWrap::Parsed* P = w->get();
  Span<uint8_t> arena = args.array<uint8_t>("arena", P->arena, "program.arenaBytes");
  if (reinterpret_cast<uintptr_t>(arena.data) % 8)
    throw_range(env, "rtRun: arena must start at an 8-byte aligned address (use a fresh ArrayBuffer)");
  Span<double> prof = args.optional_array<double>("profile", static_cast<int64_t>(P->ops.size()), "one entry per operation");
  const bool single = args.boolean("singleThread", false);
  Prepared p;
  p.keep = {pv, arena.value};
  if (prof.present()) p.keep.push_back(prof.value);
  uint8_t* ap = arena.data;
  double* pp = prof.present() ? prof.data : nullptr;
  p.run = [P, ap, pp, single]() {
    auto all = [P, ap, pp]() {
      for (size_t i = 0; i < P->ops.size(); i++) {
        if (!pp) {
          P->ops[i]->run(ap);
          continue;
        }
        const auto t0 = std::chrono::steady_clock::now();
        P->ops[i]->run(ap);
        pp[i] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      }
    };
    if (!single || num_threads() == 1) {
      all();
      return;
    }
    // Inside a pool task every kernel's parallel_for runs inline on this thread:
    // one wake-up of the pool for the whole program instead of one per kernel.
    parallel_run(2, [&all](int t, int) {
      if (t == 0) all();
    });
  };
  return p;
}

void init_rt(Napi::Env env, Napi::Object exports) {
  QF_EXPORT_SYNC_ASYNC(exports, env, "rtAdd", prepare_rt_add);
  QF_EXPORT_SYNC_ASYNC(exports, env, "rtAffine", prepare_rt_affine);
  QF_EXPORT_SYNC_ASYNC(exports, env, "rtLut", prepare_rt_lut);
  QF_EXPORT_SYNC_ASYNC(exports, env, "rtConvInput", prepare_rt_conv_input);
  Napi::Function ctor = ProgramWrap::Define(env);
  auto* ref = new Napi::FunctionReference(Napi::Persistent(ctor));
  env.AddCleanupHook([ref]() { delete ref; });
  exports.Set("rtProgram", Napi::Function::New(env, RtProgram, "rtProgram", ref));
  QF_EXPORT_SYNC_ASYNC(exports, env, "rtRun", prepare_rt_run);
}

}  // namespace
QF_REGISTER_EXPORTS(init_rt)
}  // namespace napi
}  // namespace qf
