// Int8 NHWC convolution: u8 activations x s8 weights with the Int8Epilogue.
// groups = 1: im2col (padding reads the activation zero point) + the int8
// GEMM (1x1 stride-1 unpadded convolutions read x directly); depthwise: the
// direct kernels conv2d_u8s8_depthwise_*. N-API export conv2dU8S8[Async].
#include <algorithm>
#include <cstring>
#include <string>

#include "conv.h"
#include "napi_util.h"
#include "packed_weights_napi.h"

namespace qf {

QF_KERNEL(conv2d_u8s8_depthwise_kernel, DwU8S8Fn, "conv2d_u8s8_depthwise",
          {
              QF_X86({"conv2d_u8s8_depthwise_avx512vnni", Isa::Avx512Vnni, dw_u8s8_avx512vnni},)
              QF_X86({"conv2d_u8s8_depthwise_avx512", Isa::Avx512, dw_u8s8_avx512},)
              QF_X86({"conv2d_u8s8_depthwise_avx2", Isa::Avx2, dw_u8s8_avx2},)
              QF_ARM64({"conv2d_u8s8_depthwise_neondot", Isa::NeonDot, dw_u8s8_neondot},)
              QF_ARM64({"conv2d_u8s8_depthwise_neon", Isa::Neon, dw_u8s8_neon},)
              {"conv2d_u8s8_depthwise_ref", Isa::Scalar, dw_u8s8_ref},
          })

namespace {
template <class T>
T* tls_scratch8(size_t count) {
  thread_local AlignedBuf<T> buf;
  buf.resize(count);
  return buf.data();
}
size_t out_elem_size(OutType t) { return (t == OutType::S32 || t == OutType::F32) ? 4 : 1; }
}  // namespace

void conv2d_u8s8_gemm(GemmU8S8Fn fn, const ConvGeom& g, const uint8_t* x, int32_t xzp, const PackedS8* w,
                      const int32_t* wzp, const Epilogue& ep, void* out) {
  const int64_t K = g.kh * g.kw * g.c, P = g.n * g.oh * g.ow;
  const size_t esz = out_elem_size(ep.type);
  GemmU8S8Args a;
  a.a_zp = xzp;
  a.w = w;
  a.w_zp = wzp;
  a.ldo = g.cout;
  a.ep = ep;
  const bool direct = g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.pt == 0 && g.pl == 0 && g.pb == 0 &&
                      g.pr == 0;
  if (direct) {
    // A 1x1 stride-1 convolution is the GEMM itself: x is [P, c].
    a.m = P;
    a.a = x;
    a.lda = g.c;
    a.out = out;
    fn(a);
    return;
  }
  // im2col in blocks of output pixels (about 512 KB each), one block per task;
  // the GEMM runs single-threaded inside a task. One block: the GEMM threads.
  int64_t mb = std::min<int64_t>(std::max<int64_t>((int64_t(512) << 10) / K, 16), 16384);
  int64_t nb = (P + mb - 1) / mb;
  const int64_t T = num_threads();
  if (T > 1 && nb > 1 && nb < 8 * T) {
    nb = (nb + T - 1) / T * T;
    mb = (P + nb - 1) / nb;
    nb = (P + mb - 1) / mb;
  }
  auto body = [&](int64_t b0, int64_t b1) {
    uint8_t* cols = tls_scratch8<uint8_t>(static_cast<size_t>(mb * K + 64));
    for (int64_t b = b0; b < b1; b++) {
      const int64_t p0 = b * mb, rows = std::min(mb, P - p0);
      if (rows <= 0) break;
      im2col_u8(g, x, 0, p0, rows, cols, static_cast<uint8_t>(xzp));
      GemmU8S8Args t = a;
      t.m = rows;
      t.a = cols;
      t.lda = K;
      t.out = static_cast<char*>(out) + p0 * g.cout * static_cast<int64_t>(esz);
      fn(t);
    }
  };
  if (nb >= 2 && T > 1)
    parallel_for(nb, 1, body);
  else
    body(0, nb);
}

void conv2d_u8s8_depthwise_run(DwU8S8Fn fn, const ConvGeom& g, const uint8_t* x, int32_t xzp, const int8_t* w,
                               const int32_t* wzp, const Epilogue& ep, void* out) {
  const int64_t C = g.c, T = g.kh * g.kw;
  DwU8Prep p;
  p.xzp = xzp;
  p.w = w;
  p.wzp = wzp;
  p.npairs = (T + 1) / 2;
  p.cpad = (C + 15) / 16 * 16;
  AlignedBuf<int16_t> wpair(static_cast<size_t>(p.npairs * p.cpad * 2));
  bool fits = true;
  std::fill(wpair.data(), wpair.data() + p.npairs * p.cpad * 2, int16_t(0));
  for (int64_t ch = 0; ch < C && fits; ch++) {
    const int64_t wz = wzp ? wzp[ch] : 0;
    for (int64_t t = 0; t < T; t++) {
      const int64_t v = static_cast<int64_t>(w[ch * T + t]) - wz;
      if (v < -32768 || v > 32767) {
        fits = false;
        break;
      }
      wpair.data()[((t / 2) * p.cpad + ch) * 2 + (t & 1)] = static_cast<int16_t>(v);
    }
  }
  // Weights minus zero points outside int16 (extreme wZeroPoint): the SIMD
  // kernels' 16-bit products do not apply; the reference gives the same bits.
  if (!fits) fn = dw_u8s8_ref;
  p.wpair = wpair.data();
  // VNNI / SDOT quads (dot products of 4 kernel rows) when w - wzp fits int8.
  p.nqy = (g.kh + 3) / 4;
  AlignedBuf<int8_t> wquad(static_cast<size_t>(g.kw * p.nqy * p.cpad * 4));
  AlignedBuf<int32_t> corr(static_cast<size_t>(p.cpad));
  bool fits8 = fits;
  std::fill(wquad.data(), wquad.data() + g.kw * p.nqy * p.cpad * 4, int8_t(0));
  std::fill(corr.data(), corr.data() + p.cpad, 0);
  for (int64_t ch = 0; ch < C && fits8; ch++) {
    const int64_t wz = wzp ? wzp[ch] : 0;
    uint32_t sum = 0;
    for (int64_t ky = 0; ky < g.kh; ky++)
      for (int64_t kx = 0; kx < g.kw; kx++) {
        const int64_t v = static_cast<int64_t>(w[ch * T + ky * g.kw + kx]) - wz;
        if (v < -128 || v > 127) fits8 = false;
        sum += static_cast<uint32_t>(v);
        wquad.data()[((kx * p.nqy + ky / 4) * p.cpad + ch) * 4 + ky % 4] = static_cast<int8_t>(v);
      }
    corr.data()[ch] = static_cast<int32_t>(0u - static_cast<uint32_t>(xzp) * sum);
  }
  if (fits8) {
    p.wquad = wquad.data();
    p.corr = corr.data();
  }
  p.zbuf_len = 8 * g.sw * C + p.cpad + 64;
  AlignedBuf<uint8_t> zbuf(static_cast<size_t>(p.zbuf_len));
  std::memset(zbuf.data(), xzp, static_cast<size_t>(p.zbuf_len));
  p.zbuf = zbuf.data();
  const int64_t work = std::max<int64_t>(1, g.ow * C * T);
  parallel_for(g.n * g.oh, std::max<int64_t>(1, 65536 / work),
               [&](int64_t r0, int64_t r1) { fn(g, x, p, ep, out, r0, r1); });
}

// ------------------------------------------------------------ N-API
namespace napi {
namespace {

Prepared prepare_conv2d_u8s8(const Napi::CallbackInfo& info) {
  const char* fn = "conv2dU8S8";
  Args a(info, fn);
  Napi::Env env = a.env();
  ConvSizes sz;
  const ConvGeom g = parse_conv_geom(a, &sz);
  const bool dw = conv_is_depthwise(g);
  if (g.groups != 1 && !dw)
    throw_range(env, a.where("groups") + " must be 1 or c = cout (depthwise) for the int8 convolution (got " +
                         std::to_string(g.groups) + ")");
  Span<uint8_t> x = a.array<uint8_t>("x", sz.x, "n*h*w*c");
  const int32_t xzp = static_cast<int32_t>(a.integer("xZeroPoint", 0, 255, 0));
  Span<int32_t> wzp = a.optional_array<int32_t>("wZeroPoint", 0);
  if (wzp.present() && static_cast<int64_t>(wzp.length) != g.cout)
    throw_range(env, a.where("wZeroPoint") + " has " + std::to_string(wzp.length) + " elements; needs cout = " +
                         std::to_string(g.cout));
  Prepared p;
  Int8EpilogueArgs E = read_int8_epilogue(a, g.cout, "out", &p.keep);
  if (static_cast<int64_t>(E.out_len) < sz.out)
    throw_range(env, a.where("out") + " has " + std::to_string(E.out_len) + " elements; needs at least " +
                         std::to_string(sz.out) + " (n*oh*ow*cout)");
  {
    const char* o0 = static_cast<const char*>(E.out);
    const char* x0 = reinterpret_cast<const char*>(x.data);
    const int64_t ob = sz.out * static_cast<int64_t>(E.out_elem);
    if (sz.out > 0 && o0 < x0 + sz.x && x0 < o0 + ob) throw_range(env, a.where("out") + " must not overlap x");
  }
  if (!a.has("weight"))
    throw_type(env, a.where("weight") + " is required (" +
                         (dw ? "an Int8Array [c, kh, kw] for a depthwise convolution"
                             : "a PackedWeights from packWeights() with n = cout, k = kh*kw*c") +
                         ")");
  Napi::Value wv = a.get("weight");
  const std::string want = a.string("variant", "");
  const uint8_t* xp = x.data;
  const int32_t* wzpp = wzp.present() ? wzp.data : nullptr;
  const Epilogue ep = E.ep;
  void* op = E.out;
  p.keep.push_back(x.value);
  if (wzp.present()) p.keep.push_back(wzp.value);
  p.keep.push_back(wv);
  if (!dw) {
    const PackedS8* W = unwrap_packed_weights(wv, fn, "weight");
    const int64_t K = g.kh * g.kw * g.c;
    if (W->n != g.cout || W->k != K)
      throw_range(env, a.where("weight") + " is packed as n = " + std::to_string(W->n) + ", k = " +
                           std::to_string(W->k) + "; needs n = cout = " + std::to_string(g.cout) +
                           ", k = kh*kw*c = " + std::to_string(K));
    const Variant<GemmU8S8Fn>* v = gemm_u8s8s32_kernel().find(want);
    if (!v)
      throw_range(env, a.where("variant") + " '" + want +
                           "' is unknown or not supported on this CPU (groups = 1 uses the gemm_u8s8s32 variants)");
    GemmU8S8Fn f = v->fn;
    p.run = [=]() { conv2d_u8s8_gemm(f, g, xp, xzp, W, wzpp, ep, op); };
  } else {
    Span<int8_t> w = a.to_span<int8_t>(wv, "weight", sz.w, "c*kh*kw");
    const Variant<DwU8S8Fn>* v = conv2d_u8s8_depthwise_kernel().find(want);
    if (!v)
      throw_range(env, a.where("variant") + " '" + want +
                           "' is unknown or not supported on this CPU (depthwise uses conv2d_u8s8_depthwise)");
    DwU8S8Fn f = v->fn;
    const int8_t* wp = w.data;
    p.run = [=]() { conv2d_u8s8_depthwise_run(f, g, xp, xzp, wp, wzpp, ep, op); };
  }
  return p;
}

void init_conv_int8(Napi::Env env, Napi::Object exports) {
  QF_EXPORT_SYNC_ASYNC(exports, env, "conv2dU8S8", prepare_conv2d_u8s8);
}

}  // namespace
QF_REGISTER_EXPORTS(init_conv_int8)
}  // namespace napi

}  // namespace qf
