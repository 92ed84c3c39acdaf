// u8 x s8 -> s32 GEMM: weight packing, the blocked/threaded driver, the
// reference epilogue, the variant table and the N-API bindings
// (packWeights, gemmU8S8S32[Async]). Baseline x86-64 code: the ISA
// microkernels live in gemm_u8s8_<isa>.cc.
#include "gemm_u8s8.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "napi_util.h"
#include "packed_weights_napi.h"

namespace qf {

// ------------------------------------------------------------------ packing
size_t PackedS8::bytes() const { return static_cast<size_t>(n_pad * k_pad); }

std::unique_ptr<PackedS8> pack_s8(const int8_t* w, int64_t n, int64_t k, int64_t ldw) {
  auto p = std::make_unique<PackedS8>();
  p->n = n;
  p->k = k;
  p->n_pad = (n + 15) / 16 * 16;
  p->k_pad = (k + 3) / 4 * 4;
  const size_t bytes = static_cast<size_t>(p->n_pad * p->k_pad);
  p->panels.resize(bytes);
  p->colsum.resize(static_cast<size_t>(p->n_pad));
  std::memset(p->panels.data(), 0, bytes);
  int8_t* dst = p->panels.data();
  const int64_t pstride = p->k_pad * 16;
  for (int64_t j = 0; j < p->n_pad; j++) {
    int32_t s = 0;
    if (j < n) {
      const int8_t* src = w + j * ldw;
      int8_t* pd = dst + (j / 16) * pstride + (j % 16) * 4;
      for (int64_t kk = 0; kk < k; kk++) {
        pd[(kk / 4) * 64 + (kk % 4)] = src[kk];
        s += src[kk];
      }
    }
    p->colsum.data()[j] = s;
  }
  return p;
}

// ------------------------------------------------------------------ epilogue
void epilogue_ref(const Epilogue& ep, int64_t j, int32_t acc, void* out, int64_t index) {
  if (ep.type == OutType::S32) {
    static_cast<int32_t*>(out)[index] = acc;
    return;
  }
  float y = static_cast<float>(acc);
  if (ep.scale) y = y * ep.scale[j];
  y = y + (ep.bias ? ep.bias[j] : 0.f);
  if (ep.act == Act::Relu) {
    y = y > 0.f ? y : 0.f;
  } else if (ep.act == Act::Prelu) {
    if (y < 0.f) y = y * ep.slope[j];
  }
  if (ep.type == OutType::F32) {
    static_cast<float*>(out)[index] = y;
    return;
  }
  float t = std::nearbyint(y / ep.out_scale);
  t = t + static_cast<float>(ep.out_zp);
  const float lo = static_cast<float>(ep.clamp_min), hi = static_cast<float>(ep.clamp_max);
  if (!(t >= lo)) t = lo;
  if (t > hi) t = hi;
  const int32_t q = static_cast<int32_t>(t);
  if (ep.type == OutType::U8)
    static_cast<uint8_t*>(out)[index] = static_cast<uint8_t>(q);
  else
    static_cast<int8_t*>(out)[index] = static_cast<int8_t>(q);
}

// ------------------------------------------------------------------ driver
namespace gemm8 {
namespace {

// Optional override of the cache budgets, for tuning only:
// QUANTFACE_GEMM8_BLOCK="kc_max,b_budget,a_budget" (bytes; 0 keeps the default).
void block_override(int64_t* kc_max, int64_t* b_budget, int64_t* a_budget) {
  static const int64_t* ov = []() {
    static int64_t v[3] = {0, 0, 0};
    const char* e = std::getenv("QUANTFACE_GEMM8_BLOCK");
    if (e && *e) {
      char* end = nullptr;
      for (int i = 0; i < 3 && *e; i++) {
        v[i] = std::strtoll(e, &end, 10);
        if (end == e) break;
        e = end;
        if (*e == ',') e++;
      }
    }
    return v;
  }();
  if (ov[0] > 0) *kc_max = ov[0];
  if (ov[1] > 0) *b_budget = ov[1];
  if (ov[2] > 0) *a_budget = ov[2];
}

size_t out_elem_size(OutType t) {
  return (t == OutType::S32 || t == OutType::F32) ? 4 : 1;
}

struct Plan {
  int64_t kq_total;
  int tail;
  int64_t kcq, nk;  // k groups per k block, number of k blocks
  int64_t nc, mc;   // columns per B block (multiple of 16*np), rows per A block
  int64_t tile_cols;
};

}  // namespace

void drive(const GemmU8S8Args& g, const Micro& mk) {
  const PackedS8& W = *g.w;
  const int64_t m = g.m, n = W.n, k = W.k;
  if (m <= 0 || n <= 0) return;
  const Epilogue& ep = g.ep;

  Plan P;
  P.kq_total = W.k_pad / 4;
  P.tail = static_cast<int>(k % 4);
  P.tile_cols = 16 * mk.np;
  int64_t kc_max = mk.kc_max, b_budget = mk.b_budget, a_budget = mk.a_budget;
  block_override(&kc_max, &b_budget, &a_budget);
  const int64_t kcq_max = std::max<int64_t>(16, kc_max / 4);
  P.nk = (P.kq_total + kcq_max - 1) / kcq_max;
  P.kcq = (P.kq_total + P.nk - 1) / P.nk;
  const int64_t kc_bytes = P.kcq * 4;
  P.nc = std::max<int64_t>(1, b_budget / (kc_bytes * P.tile_cols)) * P.tile_cols;
  P.mc = std::max<int64_t>(1, a_budget / (kc_bytes * mk.mr)) * mk.mr;
  if (P.nk > 1) P.mc = std::min<int64_t>(P.mc, 16 * mk.mr);  // bounds the partial-sum scratch

  // Per-column epilogue inputs, padded to n_pad so tiles load whole panels.
  const int64_t n_pad = W.n_pad;
  bool has_wzp = false;
  if (g.w_zp)
    for (int64_t j = 0; j < n; j++)
      if (g.w_zp[j] != 0) { has_wzp = true; break; }
  AlignedBuf<int32_t> corr(n_pad), wzp(has_wzp ? n_pad : 0);
  {
    const uint32_t kk = static_cast<uint32_t>(k), az = static_cast<uint32_t>(g.a_zp);
    for (int64_t j = 0; j < n_pad; j++) {
      const uint32_t wz = (g.w_zp && j < n) ? static_cast<uint32_t>(g.w_zp[j]) : 0u;
      const uint32_t cs = static_cast<uint32_t>(W.colsum.data()[j]);
      corr.data()[j] = static_cast<int32_t>(kk * az * wz - az * cs);
      if (has_wzp) wzp.data()[j] = static_cast<int32_t>(wz);
    }
  }
  const bool floaty = ep.type != OutType::S32;
  AlignedBuf<float> fbuf(floaty ? 3 * n_pad : 0);
  float *scale = nullptr, *bias = nullptr, *slope = nullptr;
  if (floaty) {
    if (ep.bias) {
      bias = fbuf.data();
      for (int64_t j = 0; j < n_pad; j++) bias[j] = j < n ? ep.bias[j] : 0.f;
    }
    if (ep.scale) {
      scale = fbuf.data() + n_pad;
      for (int64_t j = 0; j < n_pad; j++) scale[j] = j < n ? ep.scale[j] : 1.f;
    }
    if (ep.act == Act::Prelu) {
      slope = fbuf.data() + 2 * n_pad;
      for (int64_t j = 0; j < n_pad; j++) slope[j] = j < n ? ep.slope[j] : 0.f;
    }
  }

  // Thread split: rows when there are enough row tiles, else columns.
  int T = num_threads();
  const double macs = static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  if (macs < 4.0e6) T = 1;
  const int64_t row_tiles = (m + mk.mr - 1) / mk.mr;
  const int64_t col_tiles = (n + P.tile_cols - 1) / P.tile_cols;
  bool split_rows = true;
  if (T > 1) {
    if (row_tiles >= 4 * T || row_tiles >= col_tiles) split_rows = true;
    else split_rows = false;
    const int64_t units = split_rows ? row_tiles : col_tiles;
    if (units < T) T = static_cast<int>(std::max<int64_t>(1, units));
  }

  // Scratch, allocated here (pool tasks must not throw).
  // Partial sums (k split): the full width, whatever share of the columns a
  // thread gets (nested calls run inline with all of them).
  const int64_t ldp_max = P.nk > 1 ? col_tiles * P.tile_cols : 0;
  const int64_t rs_len = has_wzp ? P.mc : 0;
  const int64_t per_thread = P.mc * ldp_max + rs_len + 16;
  AlignedBuf<int32_t> scratch(static_cast<size_t>(per_thread * T + 16));

  const size_t esz = out_elem_size(ep.type);
  const float lo = static_cast<float>(ep.clamp_min), hi = static_cast<float>(ep.clamp_max);

  auto run_block = [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1, int32_t* scr) {
    if (r0 >= r1 || c0 >= c1) return;
    const int64_t ldp = (c1 - c0 + P.tile_cols - 1) / P.tile_cols * P.tile_cols;
    int32_t* part = scr;
    int32_t* rs = scr + P.mc * ldp_max;
    Tile t;
    t.lda = g.lda;
    t.bstride = W.k_pad * 16;
    t.ldp = ldp;
    t.type = ep.type;
    t.act = ep.act;
    t.out_scale = ep.out_scale;
    t.out_zp = static_cast<float>(ep.out_zp);
    t.lo = lo;
    t.hi = hi;
    t.out_recip = (ep.out_scale >= 0x1p-125f && ep.out_scale <= 0x1p125f) ? 1.f / ep.out_scale : 0.f;
    t.ldo = g.ldo;
    for (int64_t mc0 = r0; mc0 < r1; mc0 += P.mc) {
      const int64_t mc1 = std::min(r1, mc0 + P.mc), rows = mc1 - mc0;
      // Row sums: for the whole A block when k is split; else per row tile,
      // just before its first column tile (its rows were prefetched by then).
      if (has_wzp && P.nk > 1) mk.rowsum(g.a + mc0 * g.lda, g.lda, rows, k, rs);
      const int64_t nrt = (rows + mk.mr - 1) / mk.mr;
      for (int64_t kb = 0; kb < P.nk; kb++) {
        const int64_t q0 = kb * P.kcq;
        const int64_t qn = std::min(P.kcq, P.kq_total - q0);
        const bool last = kb == P.nk - 1;
        t.kq = qn;
        t.tail = last ? P.tail : 0;
        t.load_part = kb > 0;
        t.final = last;
        for (int64_t nc0 = c0; nc0 < c1; nc0 += P.nc) {
          const int64_t nc1 = std::min(c1, nc0 + P.nc);
          for (int64_t it = 0; it < nrt; it++) {
            const int64_t i0 = mc0 + rows * it / nrt, i1 = mc0 + rows * (it + 1) / nrt;
            t.rows = static_cast<int>(i1 - i0);
            t.a = g.a + i0 * g.lda + q0 * 4;
            t.rowsum = has_wzp ? rs + (i0 - mc0) : nullptr;
            if (has_wzp && P.nk == 1 && nc0 == c0) mk.rowsum(g.a + i0 * g.lda, g.lda, i1 - i0, k, rs + (i0 - mc0));
            // One strip: the row tile times the B block's columns.
            const int64_t j = nc0;
            t.cols = static_cast<int>(nc1 - nc0);
            t.b = W.panels.data() + (j / 16) * t.bstride + q0 * 64;
            t.part = part + (i0 - mc0) * ldp + (j - c0);
            // While its first register tile runs, prefetch the next row tile's A.
            t.pf = nullptr;
            if (it + 1 < nrt) {
              const int64_t i2 = mc0 + rows * (it + 2) / nrt;
              t.pf = g.a + i1 * g.lda + q0 * 4;
              t.pf_rows = static_cast<int>(i2 - i1);
            } else if (mc1 < r1 && P.nk == 1) {
              const int64_t rows2 = std::min(r1, mc1 + P.mc) - mc1;
              const int64_t nrt2 = (rows2 + mk.mr - 1) / mk.mr;
              t.pf = g.a + mc1 * g.lda;
              t.pf_rows = static_cast<int>(rows2 / nrt2);
            }
            t.corr = corr.data() + j;
            t.wzp = has_wzp ? wzp.data() + j : nullptr;
            if (last) {
              t.scale = scale ? scale + j : nullptr;
              t.bias = bias ? bias + j : nullptr;
              t.slope = slope ? slope + j : nullptr;
              t.out = static_cast<char*>(g.out) + (i0 * g.ldo + j) * static_cast<int64_t>(esz);
            }
            mk.tile(t);
          }
        }
      }
    }
  };

  if (T <= 1) {
    run_block(0, m, 0, n, scratch.data());
    return;
  }
  parallel_run(T, [&](int t, int nt) {
    int32_t* scr = scratch.data() + per_thread * t;
    if (split_rows) {
      // Split on row-tile boundaries.
      const int64_t a0 = row_tiles * t / nt, a1 = row_tiles * (t + 1) / nt;
      run_block(std::min(m, a0 * mk.mr), std::min(m, a1 * mk.mr), 0, n, scr);
    } else {
      const int64_t a0 = col_tiles * t / nt, a1 = col_tiles * (t + 1) / nt;
      run_block(0, m, std::min(n, a0 * P.tile_cols), std::min(n, a1 * P.tile_cols), scr);
    }
  });
}

void for_each_panel(const Tile& t, void (*fn)(const Tile& piece)) {
  Tile p = t;
  const int64_t esz = static_cast<int64_t>(out_elem_size(t.type));
  for (int c0 = 0; c0 < t.cols; c0 += 16) {
    p.cols = std::min(16, t.cols - c0);
    p.b = t.b + (c0 / 16) * t.bstride;
    p.pf = c0 == 0 ? t.pf : nullptr;
    p.part = t.part ? t.part + c0 : nullptr;
    p.corr = t.corr + c0;
    p.wzp = t.wzp ? t.wzp + c0 : nullptr;
    if (t.final) {
      p.scale = t.scale ? t.scale + c0 : nullptr;
      p.bias = t.bias ? t.bias + c0 : nullptr;
      p.slope = t.slope ? t.slope + c0 : nullptr;
      p.out = static_cast<char*>(t.out) + c0 * esz;
    }
    fn(p);
  }
}

}  // namespace gemm8

QF_KERNEL(gemm_u8s8s32_kernel, GemmU8S8Fn, "gemm_u8s8s32",
          {QF_X86({"gemm_u8s8s32_avx512vnni", Isa::Avx512Vnni, gemm_u8s8s32_avx512vnni},)
           QF_X86({"gemm_u8s8s32_avxvnni", Isa::AvxVnni, gemm_u8s8s32_avxvnni},)
           QF_X86({"gemm_u8s8s32_avx2", Isa::Avx2, gemm_u8s8s32_avx2},)
           QF_ARM64({"gemm_u8s8s32_neondot", Isa::NeonDot, gemm_u8s8s32_neondot},)
           QF_ARM64({"gemm_u8s8s32_neon", Isa::Neon, gemm_u8s8s32_neon},)
           {"gemm_u8s8s32_ref", Isa::Scalar, gemm_u8s8s32_ref}})

// ------------------------------------------------------------------ N-API
namespace napi {
namespace {

const napi_type_tag kPackedWeightsTag = {0x7166a3c1d24b4e57ULL, 0x9e0b5d2f61c8a413ULL};

class PackedWeightsWrap : public Napi::ObjectWrap<PackedWeightsWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "PackedWeights",
                       {InstanceAccessor<&PackedWeightsWrap::GetN>("n", napi_enumerable),
                        InstanceAccessor<&PackedWeightsWrap::GetK>("k", napi_enumerable),
                        InstanceAccessor<&PackedWeightsWrap::GetBytes>("bytes", napi_enumerable)});
  }
  explicit PackedWeightsWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<PackedWeightsWrap>(info) {
    Napi::Env env = info.Env();
    if (info.Length() != 1 || !info[0].IsExternal())
      throw_type(env, "PackedWeights: not constructible; use packWeights()");
    auto* holder = info[0].As<Napi::External<std::unique_ptr<PackedS8>>>().Data();
    if (!holder || !*holder) throw_type(env, "PackedWeights: not constructible; use packWeights()");
    w_ = std::move(*holder);
    napi_type_tag_object(env, info.This(), &kPackedWeightsTag);
    adjusted_ = static_cast<int64_t>(w_->bytes() + w_->colsum.n * sizeof(int32_t));
    Napi::MemoryManagement::AdjustExternalMemory(env, adjusted_);
  }
  void Finalize(Napi::Env env) override {
    if (adjusted_) Napi::MemoryManagement::AdjustExternalMemory(env, -adjusted_);
    adjusted_ = 0;
  }
  const PackedS8* get() const { return w_.get(); }

 private:
  Napi::Value GetN(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(w_->n)); }
  Napi::Value GetK(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(w_->k)); }
  Napi::Value GetBytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(w_->bytes()));
  }
  std::unique_ptr<PackedS8> w_;
  int64_t adjusted_ = 0;
};

constexpr int64_t kMaxDim = int64_t(1) << 40;

Napi::Value PackWeights(const Napi::CallbackInfo& info) {
  const char* fn = "packWeights";
  Args args(info, fn);
  Napi::Env env = info.Env();
  const int64_t n = args.integer("n", 1, kMaxDim);
  const int64_t k = args.integer("k", 1, kMaxDim);
  const int64_t ldw = args.integer("ldw", k, kMaxDim, k);
  const int64_t need = checked_mul(env, fn, n - 1, ldw, "n * ldw") + k;
  checked_mul(env, fn, (n + 15) / 16 * 16, (k + 3) / 4 * 4, "the packed size");
  Span<int8_t> w = args.array<int8_t>("w", need, "(n - 1) * ldw + k");
  std::unique_ptr<PackedS8> p = pack_s8(w.data, n, k, ldw);
  auto* ctor = static_cast<Napi::FunctionReference*>(info.Data());
  Napi::Object o = ctor->New({Napi::External<std::unique_ptr<PackedS8>>::New(env, &p)});
  return o;
}

const char* out_type_name(OutType t) {
  switch (t) {
    case OutType::S32: return "s32";
    case OutType::F32: return "f32";
    case OutType::U8: return "u8";
    case OutType::S8: return "s8";
  }
  return "?";
}

template <class T>
void* out_span(const Args& args, Napi::Value v, const char* key, OutType type, size_t* len) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != TypedArrayKind<T>::type)
    throw_type(args.env(), args.where(key) + " must be a " + TypedArrayKind<T>::name + " for outType '" +
                               out_type_name(type) + "' (got " + describe(v) + ")");
  Span<T> s = args.to_span<T>(v, key, 0, nullptr);
  *len = s.length;
  return s.data;
}

Prepared PrepareGemm(const Napi::CallbackInfo& info) {
  const char* fn = "gemmU8S8S32";
  Args args(info, fn);
  Napi::Env env = info.Env();
  Prepared p;
  if (!args.has("w")) throw_type(env, args.where("w") + " is required (a PackedWeights from packWeights())");
  Napi::Value wv = args.get("w");
  const PackedS8* W = unwrap_packed_weights(wv, fn, "w");
  const int64_t n = W->n, k = W->k;
  if (args.has("n") && args.integer("n", 1, kMaxDim) != n)
    throw_range(env, args.where("n") + " (" + std::to_string(args.integer("n", 1, kMaxDim)) + ") does not match w.n (" +
                         std::to_string(n) + ")");
  if (args.has("k") && args.integer("k", 1, kMaxDim) != k)
    throw_range(env, args.where("k") + " (" + std::to_string(args.integer("k", 1, kMaxDim)) + ") does not match w.k (" +
                         std::to_string(k) + ")");
  const int64_t m = args.integer("m", 0, kMaxDim);
  const int64_t lda = args.integer("lda", k, kMaxDim, k);
  const int64_t need_a = m > 0 ? checked_mul(env, fn, m - 1, lda, "m * lda") + k : 0;
  Span<uint8_t> a = args.array<uint8_t>("a", need_a, "(m - 1) * lda + k, k = w.k");
  const int64_t a_zp = args.integer("aZeroPoint", 0, 255, 0);
  Span<int32_t> wzp = args.optional_array<int32_t>("wZeroPoint", 0);
  if (wzp.present() && static_cast<int64_t>(wzp.length) != n)
    throw_range(env, args.where("wZeroPoint") + " has " + std::to_string(wzp.length) + " elements; needs n = " +
                         std::to_string(n) + " (w.n)");
  const int64_t ldo = args.integer("ldo", n, kMaxDim, n);
  Int8EpilogueArgs E = read_int8_epilogue(args, n, "out", &p.keep);
  const int64_t need_o = m > 0 ? checked_mul(env, fn, m - 1, ldo, "m * ldo") + n : 0;
  if (static_cast<int64_t>(E.out_len) < need_o)
    throw_range(env, args.where("out") + " has " + std::to_string(E.out_len) + " elements; needs at least " +
                         std::to_string(need_o) + " ((m - 1) * ldo + n, n = w.n)");
  const std::string variant = args.string("variant", "");
  const Variant<GemmU8S8Fn>* v = gemm_u8s8s32_kernel().find(variant);
  if (!v) throw_range(env, args.where("variant") + " '" + variant + "' is unknown or not supported on this CPU");

  GemmU8S8Args g;
  g.m = m;
  g.a = a.data;
  g.lda = lda;
  g.a_zp = static_cast<int32_t>(a_zp);
  g.w = W;
  g.w_zp = wzp.present() ? wzp.data : nullptr;
  g.out = E.out;
  g.ldo = ldo;
  g.ep = E.ep;
  GemmU8S8Fn f = v->fn;
  p.keep.push_back(a.value);
  p.keep.push_back(wv);
  if (wzp.present()) p.keep.push_back(wzp.value);
  p.run = [f, g]() { f(g); };
  return p;
}

void InitGemmU8S8(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = PackedWeightsWrap::Define(env);
  auto* ref = new Napi::FunctionReference(Napi::Persistent(ctor));
  env.AddCleanupHook([ref]() { delete ref; });
  exports.Set("packWeights", Napi::Function::New(env, PackWeights, "packWeights", ref));
  QF_EXPORT_SYNC_ASYNC(exports, env, "gemmU8S8S32", PrepareGemm);
}

}  // namespace

const PackedS8* unwrap_packed_weights(Napi::Value v, const char* fn, const char* key) {
  Napi::Env env = v.Env();
  bool tagged = false;
  if (v.IsObject() && !v.IsTypedArray() && !v.IsArray() && !v.IsFunction())
    napi_check_object_type_tag(env, v, &kPackedWeightsTag, &tagged);
  if (!tagged)
    throw_type(env, std::string(fn) + ": " + key + " must be a PackedWeights from packWeights() (got " + describe(v) +
                        ")");
  PackedWeightsWrap* w = PackedWeightsWrap::Unwrap(v.As<Napi::Object>());
  if (!w || !w->get()) throw_type(env, std::string(fn) + ": " + key + " is not a usable PackedWeights");
  return w->get();
}

Int8EpilogueArgs read_int8_epilogue(const Args& args, int64_t n, const char* out_key, std::vector<Napi::Value>* keep) {
  Napi::Env env = args.env();
  Int8EpilogueArgs r;
  const int t = args.choice("outType", {"s32", "f32", "u8", "s8"}, -1);
  if (t < 0) throw_type(env, args.where("outType") + " is required ('s32', 'f32', 'u8' or 's8')");
  Epilogue& ep = r.ep;
  ep.type = static_cast<OutType>(t);
  Napi::Value ov = args.get(out_key);
  if (ov.IsUndefined() || ov.IsNull()) throw_type(env, args.where(out_key) + " is required (a typed array)");
  switch (ep.type) {
    case OutType::S32: r.out = out_span<int32_t>(args, ov, out_key, ep.type, &r.out_len); r.out_elem = 4; break;
    case OutType::F32: r.out = out_span<float>(args, ov, out_key, ep.type, &r.out_len); r.out_elem = 4; break;
    case OutType::U8: r.out = out_span<uint8_t>(args, ov, out_key, ep.type, &r.out_len); r.out_elem = 1; break;
    case OutType::S8: r.out = out_span<int8_t>(args, ov, out_key, ep.type, &r.out_len); r.out_elem = 1; break;
  }
  keep->push_back(ov);

  const bool floaty = ep.type != OutType::S32;
  const bool quant = ep.type == OutType::U8 || ep.type == OutType::S8;
  auto per_channel = [&](const char* key) -> const float* {
    Span<float> s = args.optional_array<float>(key, 0);
    if (!s.present()) return nullptr;
    if (!floaty)
      throw_range(env, args.where(key) + " does not apply to outType 's32' (out = acc); use 'f32', 'u8' or 's8'");
    if (static_cast<int64_t>(s.length) != n)
      throw_range(env, args.where(key) + " has " + std::to_string(s.length) + " elements; needs n = " +
                           std::to_string(n) + " (one per output channel)");
    keep->push_back(s.value);
    return s.data;
  };
  ep.scale = per_channel("scale");
  ep.bias = per_channel("bias");
  const int act = args.choice("activation", {"none", "relu", "prelu"}, 0);
  if (act != 0 && !floaty)
    throw_range(env, args.where("activation") + " does not apply to outType 's32' (out = acc); use 'f32', 'u8' or 's8'");
  ep.act = static_cast<Act>(act);
  const float* slope = per_channel("slope");
  if (ep.act == Act::Prelu) {
    if (!slope) throw_type(env, args.where("slope") + " is required with activation 'prelu' (a Float32Array of length n)");
    ep.slope = slope;
  }

  const int64_t tmin = ep.type == OutType::U8 ? 0 : -128, tmax = ep.type == OutType::U8 ? 255 : 127;
  for (const char* key : {"outScale", "outZeroPoint", "clampMin", "clampMax"})
    if (!quant && args.has(key))
      throw_range(env, args.where(key) + " applies only to outType 'u8' or 's8' (got '" +
                           out_type_name(ep.type) + "')");
  if (quant) {
    const double os = args.number("outScale", 1.0);
    const float osf = static_cast<float>(os);
    if (!(os > 0) || !std::isfinite(osf) || !(osf > 0))
      throw_range(env, args.where("outScale") + " must be a finite number > 0 (as float32)");
    ep.out_scale = osf;
    ep.out_zp = static_cast<int32_t>(args.integer("outZeroPoint", tmin, tmax, 0 < tmin ? tmin : 0));
    ep.clamp_min = static_cast<int32_t>(args.integer("clampMin", tmin, tmax, tmin));
    ep.clamp_max = static_cast<int32_t>(args.integer("clampMax", tmin, tmax, tmax));
    if (ep.clamp_min > ep.clamp_max)
      throw_range(env, args.where("clampMin") + " (" + std::to_string(ep.clamp_min) + ") must be <= clampMax (" +
                           std::to_string(ep.clamp_max) + ")");
  }
  return r;
}

QF_REGISTER_EXPORTS(InitGemmU8S8)

}  // namespace napi
}  // namespace qf
