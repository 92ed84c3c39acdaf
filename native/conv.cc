// NHWC fp32 convolutions: kernel tables, GEMM-based drivers (im2col / col2im
// + qf::sgemm), depthwise drivers, and the N-API exports conv2d,
// conv2dBackwardInput, conv2dBackwardWeight (+ Async). The int8 export
// conv2dU8S8 lives in conv_int8.cc.
#include "conv.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "napi_util.h"

namespace qf {

// ------------------------------------------------------------ tables
void conv2d_f32_gemm(const ConvGeom& g, const float* x, const float* w, const float* bias, float* out) {
  conv2d_f32_gemm_with(sgemm_kernel().chosen().fn, g, x, w, bias, out, false);
}
void conv2d_backward_input_f32_gemm(const ConvGeom& g, const float* gout, const float* w, float* gin,
                                    bool accumulate) {
  conv2d_backward_input_f32_gemm_with(sgemm_kernel().chosen().fn, g, gout, w, gin, accumulate);
}
void conv2d_backward_weight_f32_gemm(const ConvGeom& g, const float* x, const float* gout, float* gw, float* gb,
                                     bool accumulate) {
  conv2d_backward_weight_f32_gemm_with(sgemm_kernel().chosen().fn, g, x, gout, gw, gb, accumulate);
}

QF_KERNEL(conv2d_f32_kernel, Conv2dF32Fn, "conv2d_f32",
          {
              {"conv2d_f32_gemm", Isa::Scalar, conv2d_f32_gemm},
              {"conv2d_f32_ref", Isa::Scalar, conv2d_f32_ref},
          })
QF_KERNEL(conv2d_backward_input_f32_kernel, Conv2dBwdInputF32Fn, "conv2d_backward_input_f32",
          {
              {"conv2d_backward_input_f32_gemm", Isa::Scalar, conv2d_backward_input_f32_gemm},
              {"conv2d_backward_input_f32_ref", Isa::Scalar, conv2d_backward_input_f32_ref},
          })
QF_KERNEL(conv2d_backward_weight_f32_kernel, Conv2dBwdWeightF32Fn, "conv2d_backward_weight_f32",
          {
              {"conv2d_backward_weight_f32_gemm", Isa::Scalar, conv2d_backward_weight_f32_gemm},
              {"conv2d_backward_weight_f32_ref", Isa::Scalar, conv2d_backward_weight_f32_ref},
          })
QF_KERNEL(conv2d_depthwise_f32_kernel, DwFwdF32Fn, "conv2d_depthwise_f32",
          {
              QF_X86({"conv2d_depthwise_f32_avx512", Isa::Avx512, dw_fwd_f32_avx512},)
              QF_X86({"conv2d_depthwise_f32_avx2", Isa::Avx2, dw_fwd_f32_avx2},)
              QF_ARM64({"conv2d_depthwise_f32_neon", Isa::Neon, dw_fwd_f32_neon},)
              {"conv2d_depthwise_f32_ref", Isa::Scalar, dw_fwd_f32_ref},
          })
QF_KERNEL(conv2d_depthwise_backward_input_f32_kernel, DwBwdInputF32Fn, "conv2d_depthwise_backward_input_f32",
          {
              QF_X86({"conv2d_depthwise_backward_input_f32_avx512", Isa::Avx512, dw_bwd_input_f32_avx512},)
              QF_X86({"conv2d_depthwise_backward_input_f32_avx2", Isa::Avx2, dw_bwd_input_f32_avx2},)
              QF_ARM64({"conv2d_depthwise_backward_input_f32_neon", Isa::Neon, dw_bwd_input_f32_neon},)
              {"conv2d_depthwise_backward_input_f32_ref", Isa::Scalar, dw_bwd_input_f32_ref},
          })
QF_KERNEL(conv2d_depthwise_backward_weight_f32_kernel, DwBwdWeightF32Fn, "conv2d_depthwise_backward_weight_f32",
          {
              QF_X86({"conv2d_depthwise_backward_weight_f32_avx512", Isa::Avx512, dw_bwd_weight_f32_avx512},)
              QF_X86({"conv2d_depthwise_backward_weight_f32_avx2", Isa::Avx2, dw_bwd_weight_f32_avx2},)
              QF_ARM64({"conv2d_depthwise_backward_weight_f32_neon", Isa::Neon, dw_bwd_weight_f32_neon},)
              {"conv2d_depthwise_backward_weight_f32_ref", Isa::Scalar, dw_bwd_weight_f32_ref},
          })

int64_t conv_out_size(int64_t in, int64_t k, int64_t s, int64_t p0, int64_t p1, int64_t d) {
  const int64_t span = in + p0 + p1 - d * (k - 1) - 1;
  if (span < 0) return 0;
  return span / s + 1;
}

// ------------------------------------------------------------ helpers
namespace {

// Per-thread scratch that persists across calls (pool threads are long-lived).
template <class T>
T* tls_scratch(size_t count) {
  thread_local AlignedBuf<T> buf;
  buf.resize(count);
  return buf.data();
}

// Target size of one im2col block (bytes): about half of L2, tunable through
// QUANTFACE_CONV_BLOCK_KB for bench/conv-tune.ts.
int64_t block_bytes() {
  static const int64_t b = []() -> int64_t {
    const char* e = std::getenv("QUANTFACE_CONV_BLOCK_KB");
    if (e && *e) {
      long v = std::atol(e);
      if (v >= 16 && v <= 65536) return static_cast<int64_t>(v) * 1024;
    }
    return 512 * 1024;
  }();
  return b;
}

// Rows of an im2col block for rows of `row_bytes`; a multiple of 16 in [16, 16384].
int64_t block_rows(int64_t row_bytes) {
  int64_t r = block_bytes() / std::max<int64_t>(row_bytes, 1);
  r = std::min<int64_t>(std::max<int64_t>(r, 16), 16384);
  return r / 16 * 16;
}

bool pointwise(const ConvGeom& g) {
  return g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.pt == 0 && g.pl == 0 && g.pb == 0 && g.pr == 0;
}

struct Blocks {
  int64_t rows, count;
};
// Splits p pixels into blocks of about `mb` rows; with few blocks, makes the
// count a multiple of the thread count so the static split is balanced.
Blocks split_blocks(int64_t p, int64_t mb) {
  int64_t nb = (p + mb - 1) / mb;
  const int64_t t = num_threads();
  if (t > 1 && nb > 1 && nb < 8 * t) {
    nb = (nb + t - 1) / t * t;
    mb = (p + nb - 1) / nb;
    nb = (p + mb - 1) / mb;
  }
  return {mb, nb};
}

// Runs body over [0, nb) blocks on the pool; a single block runs on the
// caller so a nested sgemm can use the pool itself.
void run_blocks(int64_t nb, const std::function<void(int64_t, int64_t)>& body) {
  if (nb >= 2 && num_threads() > 1)
    parallel_for(nb, 1, body);
  else
    body(0, nb);
}

template <class T>
void im2col_t(const ConvGeom& g, const T* x, int64_t grp, int64_t p0, int64_t rows, T* dst, T pad) {
  const int64_t cg = g.c / g.groups, K = g.kh * g.kw * cg;
  const int64_t plane = g.oh * g.ow;
  int64_t n = p0 / plane, rem = p0 % plane, oy = rem / g.ow, ox = rem % g.ow;
  const bool contiguous_taps = g.dw == 1 && g.groups == 1;
  for (int64_t i = 0; i < rows; i++) {
    T* d = dst + i * K;
    const int64_t by = oy * g.sh - g.pt, bx = ox * g.sw - g.pl;
    const bool row_inside = bx >= 0 && bx + g.kw - 1 < g.w;
    for (int64_t ky = 0; ky < g.kh; ky++) {
      const int64_t iy = by + ky * g.dh;
      if (iy < 0 || iy >= g.h) {
        std::fill(d, d + g.kw * cg, pad);
        d += g.kw * cg;
        continue;
      }
      const T* xr = x + (n * g.h + iy) * g.w * g.c + grp * cg;
      if (contiguous_taps && row_inside) {
        std::memcpy(d, xr + bx * g.c, sizeof(T) * g.kw * g.c);
        d += g.kw * g.c;
        continue;
      }
      for (int64_t kx = 0; kx < g.kw; kx++) {
        const int64_t ix = bx + kx * g.dw;
        if (ix < 0 || ix >= g.w)
          std::fill(d, d + cg, pad);
        else
          std::memcpy(d, xr + ix * g.c, sizeof(T) * cg);
        d += cg;
      }
    }
    if (++ox == g.ow) {
      ox = 0;
      if (++oy == g.oh) {
        oy = 0;
        n++;
      }
    }
  }
}

// gin += col2im(cols) for rows p in [p0, p0 + rows) of group grp.
void col2im_add(const ConvGeom& g, const float* cols, int64_t grp, int64_t p0, int64_t rows, float* gin) {
  const int64_t cg = g.c / g.groups, K = g.kh * g.kw * cg;
  const int64_t plane = g.oh * g.ow;
  int64_t n = p0 / plane, rem = p0 % plane, oy = rem / g.ow, ox = rem % g.ow;
  for (int64_t i = 0; i < rows; i++) {
    const float* s = cols + i * K;
    const int64_t by = oy * g.sh - g.pt, bx = ox * g.sw - g.pl;
    for (int64_t ky = 0; ky < g.kh; ky++) {
      const int64_t iy = by + ky * g.dh;
      if (iy < 0 || iy >= g.h) {
        s += g.kw * cg;
        continue;
      }
      float* gr = gin + (n * g.h + iy) * g.w * g.c + grp * cg;
      for (int64_t kx = 0; kx < g.kw; kx++, s += cg) {
        const int64_t ix = bx + kx * g.dw;
        if (ix < 0 || ix >= g.w) continue;
        float* d = gr + ix * g.c;
        for (int64_t ci = 0; ci < cg; ci++) d[ci] += s[ci];
      }
    }
    if (++ox == g.ow) {
      ox = 0;
      if (++oy == g.oh) {
        oy = 0;
        n++;
      }
    }
  }
}

}  // namespace

void im2col_f32(const ConvGeom& g, const float* x, int64_t grp, int64_t p0, int64_t rows, float* dst, float pad) {
  im2col_t<float>(g, x, grp, p0, rows, dst, pad);
}
void im2col_u8(const ConvGeom& g, const uint8_t* x, int64_t grp, int64_t p0, int64_t rows, uint8_t* dst,
               uint8_t pad) {
  im2col_t<uint8_t>(g, x, grp, p0, rows, dst, pad);
}

// ------------------------------------------------------------ forward (GEMM)
void conv2d_f32_gemm_with(SgemmFn sg, const ConvGeom& g, const float* x, const float* w, const float* bias, float* out,
                          bool accumulate) {
  const int64_t G = g.groups, cg = g.c / G, coutg = g.cout / G, K = g.kh * g.kw * cg;
  const int64_t P = g.n * g.oh * g.ow;
  const bool direct = pointwise(g);
  const Blocks bl = split_blocks(P, block_rows(K * 4));
  const float beta = accumulate ? 1.f : 0.f;
  run_blocks(bl.count, [&](int64_t b0, int64_t b1) {
    float* scratch = direct ? nullptr : tls_scratch<float>(static_cast<size_t>(bl.rows * K));
    for (int64_t b = b0; b < b1; b++) {
      const int64_t p0 = b * bl.rows, rows = std::min(bl.rows, P - p0);
      if (rows <= 0) break;
      for (int64_t grp = 0; grp < G; grp++) {
        const float* a;
        int64_t lda;
        if (direct) {
          a = x + p0 * g.c + grp * cg;
          lda = g.c;
        } else {
          im2col_f32(g, x, grp, p0, rows, scratch, 0.f);
          a = scratch;
          lda = K;
        }
        sg(false, true, rows, coutg, K, 1.f, a, lda, w + grp * coutg * K, K, beta, out + p0 * g.cout + grp * coutg,
           g.cout);
      }
      if (bias)
        for (int64_t i = 0; i < rows; i++) {
          float* o = out + (p0 + i) * g.cout;
          for (int64_t co = 0; co < g.cout; co++) o[co] += bias[co];
        }
    }
  });
}

// ------------------------------------------------------------ backward input (GEMM)
void conv2d_backward_input_f32_gemm_with(SgemmFn sg, const ConvGeom& g, const float* gout, const float* w, float* gin,
                                         bool accumulate) {
  const int64_t G = g.groups, cg = g.c / G, coutg = g.cout / G, K = g.kh * g.kw * cg;
  const float beta = accumulate ? 1.f : 0.f;
  if (pointwise(g)) {
    // gin[P, c] = gout[P, cout] * W[cout, c] per group.
    const int64_t P = g.n * g.h * g.w;
    const Blocks bl = split_blocks(P, block_rows(std::max(g.c, g.cout) * 4));
    run_blocks(bl.count, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; b++) {
        const int64_t p0 = b * bl.rows, rows = std::min(bl.rows, P - p0);
        if (rows <= 0) break;
        for (int64_t grp = 0; grp < G; grp++)
          sg(false, false, rows, cg, coutg, 1.f, gout + p0 * g.cout + grp * coutg, g.cout, w + grp * coutg * cg, cg,
             beta, gin + p0 * g.c + grp * cg, g.c);
      }
    });
    return;
  }
  const int64_t eh = g.dh * (g.kh - 1), ew = g.dw * (g.kw - 1);
  if (g.sh == 1 && g.sw == 1 && g.pt <= eh && g.pb <= eh && g.pl <= ew && g.pr <= ew && cg >= 16) {
    // Stride 1: the input gradient is a forward convolution of gout with the
    // spatially flipped, transposed weights (no scatter, no col2im). Its GEMM
    // has only c/groups columns, so few input channels (an RGB first layer)
    // take the col2im path below (kh*kw*c/groups columns) instead.
    ConvGeom t = g;
    t.h = g.oh;
    t.w = g.ow;
    t.c = g.cout;
    t.cout = g.c;
    t.pt = eh - g.pt;
    t.pb = eh - g.pb;
    t.pl = ew - g.pl;
    t.pr = ew - g.pr;
    t.oh = g.h;
    t.ow = g.w;
    const int64_t T = g.kh * g.kw;
    AlignedBuf<float> wt(static_cast<size_t>(g.c * T * coutg));
    // wt[(grp*cg + ci)][ky][kx][co] = w[grp*coutg + co][kh-1-ky][kw-1-kx][ci]
    for (int64_t grp = 0; grp < G; grp++)
      for (int64_t ci = 0; ci < cg; ci++)
        for (int64_t ky = 0; ky < g.kh; ky++)
          for (int64_t kx = 0; kx < g.kw; kx++) {
            float* d = wt.data() + (((grp * cg + ci) * g.kh + ky) * g.kw + kx) * coutg;
            const float* s = w + (grp * coutg * T + (g.kh - 1 - ky) * g.kw + (g.kw - 1 - kx)) * cg + ci;
            for (int64_t co = 0; co < coutg; co++) d[co] = s[co * T * cg];
          }
    conv2d_f32_gemm_with(sg, t, gout, wt.data(), nullptr, gin, accumulate);
    return;
  }
  // General: per image, cols = gout_block * W, then scatter-add (col2im).
  // Images are independent, so they run in parallel; each gin element gets
  // its contributions in a fixed order.
  const int64_t plane = g.oh * g.ow, img = g.h * g.w * g.c;
  const int64_t mb = std::min(block_rows(K * 4), plane);
  parallel_for(g.n, 1, [&](int64_t n0, int64_t n1) {
    float* cols = tls_scratch<float>(static_cast<size_t>(mb * K));
    for (int64_t n = n0; n < n1; n++) {
      if (!accumulate) std::fill(gin + n * img, gin + (n + 1) * img, 0.f);
      for (int64_t q0 = 0; q0 < plane; q0 += mb) {
        const int64_t rows = std::min(mb, plane - q0), p0 = n * plane + q0;
        for (int64_t grp = 0; grp < G; grp++) {
          sg(false, false, rows, K, coutg, 1.f, gout + p0 * g.cout + grp * coutg, g.cout, w + grp * coutg * K, K, 0.f,
             cols, K);
          col2im_add(g, cols, grp, p0, rows, gin);
        }
      }
    }
  });
}

// ------------------------------------------------------------ backward weight (GEMM)
// gw[cout, K] = sum over pixel blocks of gout_blk^T * im2col(x)_blk. The
// pixel blocks are grouped into S slices fixed by the problem size alone;
// each slice accumulates into its own partial buffer and the partials are
// summed in slice order, so the result does not depend on the thread count.
void conv2d_backward_weight_f32_gemm_with(SgemmFn sg, const ConvGeom& g, const float* x, const float* gout, float* gw,
                                          float* gb, bool accumulate) {
  const int64_t G = g.groups, cg = g.c / G, coutg = g.cout / G, K = g.kh * g.kw * cg;
  const int64_t P = g.n * g.oh * g.ow, wsize = g.cout * K;
  const bool direct = pointwise(g);
  const int64_t mb = block_rows(K * 4);
  const int64_t nb = (P + mb - 1) / mb;
  const int64_t budget = int64_t(32) << 20;
  const int64_t S = std::min<int64_t>(nb, std::min<int64_t>(8, std::max<int64_t>(2, budget / (wsize * 4))));
  AlignedBuf<float> part(static_cast<size_t>(S * wsize));
  AlignedBuf<float> partb(static_cast<size_t>(S * g.cout));
  auto slice = [&](int64_t s0, int64_t s1) {
    float* scratch = direct ? nullptr : tls_scratch<float>(static_cast<size_t>(mb * K));
    for (int64_t s = s0; s < s1; s++) {
      float* pw = part.data() + s * wsize;
      float* pb = partb.data() + s * g.cout;
      std::fill(pb, pb + g.cout, 0.f);
      const int64_t bb = nb * s / S, be = nb * (s + 1) / S;
      for (int64_t b = bb; b < be; b++) {
        const int64_t p0 = b * mb, rows = std::min(mb, P - p0);
        for (int64_t grp = 0; grp < G; grp++) {
          const float* bm;
          int64_t ldb;
          if (direct) {
            bm = x + p0 * g.c + grp * cg;
            ldb = g.c;
          } else {
            im2col_f32(g, x, grp, p0, rows, scratch, 0.f);
            bm = scratch;
            ldb = K;
          }
          sg(true, false, coutg, K, rows, 1.f, gout + p0 * g.cout + grp * coutg, g.cout, bm, ldb, b == bb ? 0.f : 1.f,
             pw + grp * coutg * K, K);
        }
        if (gb)
          for (int64_t i = 0; i < rows; i++) {
            const float* gr = gout + (p0 + i) * g.cout;
            for (int64_t co = 0; co < g.cout; co++) pb[co] += gr[co];
          }
      }
    }
  };
  if (S >= 2 && num_threads() > 1)
    parallel_for(S, 1, slice);
  else
    slice(0, S);
  parallel_for(wsize, 16384, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      float v = accumulate ? gw[i] + part.data()[i] : part.data()[i];
      for (int64_t s = 1; s < S; s++) v += part.data()[s * wsize + i];
      gw[i] = v;
    }
  });
  if (gb)
    for (int64_t co = 0; co < g.cout; co++) {
      float v = accumulate ? gb[co] + partb.data()[co] : partb.data()[co];
      for (int64_t s = 1; s < S; s++) v += partb.data()[s * g.cout + co];
      gb[co] = v;
    }
}

// ------------------------------------------------------------ depthwise drivers
namespace {
void repack_tap_major(const ConvGeom& g, const float* w, float* wt) {
  const int64_t T = g.kh * g.kw, C = g.c;
  for (int64_t ch = 0; ch < C; ch++)
    for (int64_t t = 0; t < T; t++) wt[t * C + ch] = w[ch * T + t];
}
// Rows per task: at least ~32k multiply-adds so tiny layers stay on one thread.
int64_t dw_grain(const ConvGeom& g, int64_t row_pixels) {
  const int64_t work = std::max<int64_t>(1, row_pixels * g.c * g.kh * g.kw);
  return std::max<int64_t>(1, 32768 / work);
}
}  // namespace

void conv2d_depthwise_f32_run(DwFwdF32Fn fn, const ConvGeom& g, const float* x, const float* w, const float* bias,
                              float* out) {
  AlignedBuf<float> wt(static_cast<size_t>(g.kh * g.kw * g.c));
  repack_tap_major(g, w, wt.data());
  const float* wtp = wt.data();
  parallel_for(g.n * g.oh, dw_grain(g, g.ow),
               [&](int64_t r0, int64_t r1) { fn(g, x, wtp, bias, out, r0, r1); });
}

void conv2d_depthwise_backward_input_f32_run(DwBwdInputF32Fn fn, const ConvGeom& g, const float* gout, const float* w,
                                             float* gin, bool accumulate) {
  AlignedBuf<float> wt(static_cast<size_t>(g.kh * g.kw * g.c));
  repack_tap_major(g, w, wt.data());
  const float* wtp = wt.data();
  parallel_for(g.n * g.h, dw_grain(g, g.w),
               [&](int64_t r0, int64_t r1) { fn(g, gout, wtp, gin, accumulate, r0, r1); });
}

// Output rows are split into S slices (S fixed by the problem size); each
// slice accumulates into its own partial, the partials are summed in order.
void conv2d_depthwise_backward_weight_f32_run(DwBwdWeightF32Fn fn, const ConvGeom& g, const float* x,
                                              const float* gout, float* gw, float* gb, bool accumulate) {
  const int64_t T = g.kh * g.kw, C = g.c, rows = g.n * g.oh;
  // Slices: about 64k multiply-adds each, at most 16 (a function of the
  // problem only, never of the thread count).
  const int64_t work = rows * g.ow * C * T;
  const int64_t S = std::max<int64_t>(1, std::min<int64_t>({rows, int64_t(16), work / 65536}));
  const int64_t stride = T * C + C;
  AlignedBuf<float> part(static_cast<size_t>(S * stride));
  float* pp = part.data();
  parallel_for(S, 1, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; s++) {
      float* pw = pp + s * stride;
      std::fill(pw, pw + stride, 0.f);
      fn(g, x, gout, pw, gb ? pw + T * C : nullptr, rows * s / S, rows * (s + 1) / S);
    }
  });
  // Sum the slices into slice 0 in slice order (contiguous, vectorisable),
  // then transpose the tap-major result into OHWI.
  for (int64_t s = 1; s < S; s++) {
    const float* src = pp + s * stride;
    for (int64_t i = 0; i < stride; i++) pp[i] += src[i];
  }
  for (int64_t ch = 0; ch < C; ch++)
    for (int64_t t = 0; t < T; t++) gw[ch * T + t] = accumulate ? gw[ch * T + t] + pp[t * C + ch] : pp[t * C + ch];
  if (gb)
    for (int64_t ch = 0; ch < C; ch++) gb[ch] = accumulate ? gb[ch] + pp[T * C + ch] : pp[T * C + ch];
}

bool conv_is_depthwise(const ConvGeom& g) { return g.groups == g.c && g.cout == g.c; }

// ------------------------------------------------------------ N-API
namespace napi {

ConvGeom parse_conv_geom(const Args& a, ConvSizes* sizes) {
  Napi::Env env = a.env();
  const std::string fn = a.fn();
  const int64_t lim = (int64_t(1) << 31) - 1;
  ConvGeom g;
  g.n = a.integer("n", 1, lim);
  g.h = a.integer("h", 1, lim);
  g.w = a.integer("w", 1, lim);
  g.c = a.integer("c", 1, lim);
  g.cout = a.integer("cout", 1, lim);
  g.kh = a.integer("kh", 1, lim);
  g.kw = a.integer("kw", 1, lim);
  g.sh = a.integer("strideH", 1, lim, 1);
  g.sw = a.integer("strideW", 1, lim, 1);
  g.pt = a.integer("padTop", 0, lim, 0);
  g.pl = a.integer("padLeft", 0, lim, 0);
  g.pb = a.integer("padBottom", 0, lim, 0);
  g.pr = a.integer("padRight", 0, lim, 0);
  g.dh = a.integer("dilationH", 1, lim, 1);
  g.dw = a.integer("dilationW", 1, lim, 1);
  g.groups = a.integer("groups", 1, lim, 1);
  if (g.c % g.groups != 0)
    throw_range(env, fn + ": groups (" + std::to_string(g.groups) + ") must divide c (" + std::to_string(g.c) + ")");
  if (g.cout % g.groups != 0)
    throw_range(env,
                fn + ": groups (" + std::to_string(g.groups) + ") must divide cout (" + std::to_string(g.cout) + ")");
  g.oh = conv_out_size(g.h, g.kh, g.sh, g.pt, g.pb, g.dh);
  g.ow = conv_out_size(g.w, g.kw, g.sw, g.pl, g.pr, g.dw);
  if (g.oh < 1)
    throw_range(env, fn + ": output height would be < 1: h + padTop + padBottom (" +
                         std::to_string(g.h + g.pt + g.pb) + ") must be >= dilationH * (kh - 1) + 1 (" +
                         std::to_string(g.dh * (g.kh - 1) + 1) + ")");
  if (g.ow < 1)
    throw_range(env, fn + ": output width would be < 1: w + padLeft + padRight (" +
                         std::to_string(g.w + g.pl + g.pr) + ") must be >= dilationW * (kw - 1) + 1 (" +
                         std::to_string(g.dw * (g.kw - 1) + 1) + ")");
  const char* f = a.fn();
  sizes->x = checked_mul(env, f, checked_mul(env, f, checked_mul(env, f, g.n, g.h, "n*h*w*c"), g.w, "n*h*w*c"), g.c,
                         "n*h*w*c");
  sizes->w = checked_mul(env, f, checked_mul(env, f, checked_mul(env, f, g.cout, g.kh, "weight size"), g.kw,
                                             "weight size"),
                         g.c / g.groups, "weight size");
  sizes->out = checked_mul(
      env, f, checked_mul(env, f, checked_mul(env, f, g.n, g.oh, "n*oh*ow*cout"), g.ow, "n*oh*ow*cout"), g.cout,
      "n*oh*ow*cout");
  return g;
}

namespace {

template <class A, class B>
void check_no_overlap(const Args& a, const Span<A>& p, int64_t np, const char* pn, const Span<B>& q, int64_t nq,
                      const char* qn) {
  if (!p.present() || !q.present() || np == 0 || nq == 0) return;
  const char* p0 = reinterpret_cast<const char*>(p.data);
  const char* q0 = reinterpret_cast<const char*>(q.data);
  if (p0 < q0 + nq * sizeof(B) && q0 < p0 + np * sizeof(A))
    throw_range(a.env(), std::string(a.fn()) + ": " + pn + " must not overlap " + qn);
}

[[noreturn]] void bad_variant(const Args& a, const std::string& want, const char* tables) {
  throw_range(a.env(), std::string(a.fn()) + ": variant '" + want + "' is unknown or not supported on this CPU (" +
                           tables + ")");
}

// The fp32 routes: a depthwise kernel, a whole-problem table entry, or the
// GEMM path with a named sgemm variant.
template <class WholeFn, class DwFn>
struct Route {
  DwFn dw = nullptr;
  WholeFn whole = nullptr;
  SgemmFn sg = nullptr;
};

template <class WholeFn, class DwFn>
Route<WholeFn, DwFn> resolve(const Args& a, const ConvGeom& g, const Kernel<WholeFn>& whole, const Kernel<DwFn>& dw) {
  const std::string want = a.string("variant", "");
  Route<WholeFn, DwFn> r;
  if (conv_is_depthwise(g)) {
    if (const Variant<DwFn>* v = dw.find(want)) {
      r.dw = v->fn;
      return r;
    }
  }
  if (const Variant<WholeFn>* v = whole.find(want)) {
    r.whole = v->fn;
    return r;
  }
  if (!want.empty())
    if (const Variant<SgemmFn>* v = sgemm_kernel().find(want)) {
      r.sg = v->fn;
      return r;
    }
  bad_variant(a, want,
              (std::string(conv_is_depthwise(g) ? std::string(dw.name) + ", " : std::string()) + whole.name + " or sgemm")
                  .c_str());
}

Prepared prepare_conv2d(const Napi::CallbackInfo& info) {
  Args a(info, "conv2d");
  ConvSizes sz;
  const ConvGeom g = parse_conv_geom(a, &sz);
  Span<float> x = a.array<float>("x", sz.x, "n*h*w*c");
  Span<float> w = a.array<float>("weight", sz.w, "cout*kh*kw*(c/groups)");
  Span<float> b = a.optional_array<float>("bias", g.cout, "cout");
  Span<float> out = a.array<float>("out", sz.out, "n*oh*ow*cout");
  check_no_overlap(a, out, sz.out, "out", x, sz.x, "x");
  check_no_overlap(a, out, sz.out, "out", w, sz.w, "weight");
  check_no_overlap(a, out, sz.out, "out", b, g.cout, "bias");
  auto r = resolve(a, g, conv2d_f32_kernel(), conv2d_depthwise_f32_kernel());
  Prepared p;
  const float* xp = x.data;
  const float* wp = w.data;
  const float* bp = b.present() ? b.data : nullptr;
  float* op = out.data;
  p.run = [=]() {
    if (r.dw)
      conv2d_depthwise_f32_run(r.dw, g, xp, wp, bp, op);
    else if (r.whole)
      r.whole(g, xp, wp, bp, op);
    else
      conv2d_f32_gemm_with(r.sg, g, xp, wp, bp, op, false);
  };
  p.keep = {x.value, w.value, out.value};
  if (b.present()) p.keep.push_back(b.value);
  return p;
}

Prepared prepare_conv2d_backward_input(const Napi::CallbackInfo& info) {
  Args a(info, "conv2dBackwardInput");
  ConvSizes sz;
  const ConvGeom g = parse_conv_geom(a, &sz);
  Span<float> go = a.array<float>("gradOut", sz.out, "n*oh*ow*cout");
  Span<float> w = a.array<float>("weight", sz.w, "cout*kh*kw*(c/groups)");
  Span<float> gi = a.array<float>("gradIn", sz.x, "n*h*w*c");
  const bool acc = a.boolean("accumulate", false);
  check_no_overlap(a, gi, sz.x, "gradIn", go, sz.out, "gradOut");
  check_no_overlap(a, gi, sz.x, "gradIn", w, sz.w, "weight");
  auto r = resolve(a, g, conv2d_backward_input_f32_kernel(), conv2d_depthwise_backward_input_f32_kernel());
  Prepared p;
  const float* gop = go.data;
  const float* wp = w.data;
  float* gip = gi.data;
  p.run = [=]() {
    if (r.dw)
      conv2d_depthwise_backward_input_f32_run(r.dw, g, gop, wp, gip, acc);
    else if (r.whole)
      r.whole(g, gop, wp, gip, acc);
    else
      conv2d_backward_input_f32_gemm_with(r.sg, g, gop, wp, gip, acc);
  };
  p.keep = {go.value, w.value, gi.value};
  return p;
}

Prepared prepare_conv2d_backward_weight(const Napi::CallbackInfo& info) {
  Args a(info, "conv2dBackwardWeight");
  ConvSizes sz;
  const ConvGeom g = parse_conv_geom(a, &sz);
  Span<float> x = a.array<float>("x", sz.x, "n*h*w*c");
  Span<float> go = a.array<float>("gradOut", sz.out, "n*oh*ow*cout");
  Span<float> gw = a.array<float>("gradWeight", sz.w, "cout*kh*kw*(c/groups)");
  Span<float> gb = a.optional_array<float>("gradBias", g.cout, "cout");
  const bool acc = a.boolean("accumulate", false);
  check_no_overlap(a, gw, sz.w, "gradWeight", x, sz.x, "x");
  check_no_overlap(a, gw, sz.w, "gradWeight", go, sz.out, "gradOut");
  check_no_overlap(a, gb, g.cout, "gradBias", x, sz.x, "x");
  check_no_overlap(a, gb, g.cout, "gradBias", go, sz.out, "gradOut");
  check_no_overlap(a, gb, g.cout, "gradBias", gw, sz.w, "gradWeight");
  auto r = resolve(a, g, conv2d_backward_weight_f32_kernel(), conv2d_depthwise_backward_weight_f32_kernel());
  Prepared p;
  const float* xp = x.data;
  const float* gop = go.data;
  float* gwp = gw.data;
  float* gbp = gb.present() ? gb.data : nullptr;
  p.run = [=]() {
    if (r.dw)
      conv2d_depthwise_backward_weight_f32_run(r.dw, g, xp, gop, gwp, gbp, acc);
    else if (r.whole)
      r.whole(g, xp, gop, gwp, gbp, acc);
    else
      conv2d_backward_weight_f32_gemm_with(r.sg, g, xp, gop, gwp, gbp, acc);
  };
  p.keep = {x.value, go.value, gw.value};
  if (gb.present()) p.keep.push_back(gb.value);
  return p;
}

void init_conv(Napi::Env env, Napi::Object exports) {
  QF_EXPORT_SYNC_ASYNC(exports, env, "conv2d", prepare_conv2d);
  QF_EXPORT_SYNC_ASYNC(exports, env, "conv2dBackwardInput", prepare_conv2d_backward_input);
  QF_EXPORT_SYNC_ASYNC(exports, env, "conv2dBackwardWeight", prepare_conv2d_backward_weight);
}

}  // namespace
QF_REGISTER_EXPORTS(init_conv)
}  // namespace napi

}  // namespace qf
