// Depthwise fp32 convolution kernels, AVX2 + FMA (8 channels per vector).
// Compiled with -mavx2 -mfma. The code below the vector layer is the same as
// conv_avx512.cc: keep the two files in step.
#include <immintrin.h>

#include <cstdint>

#include "conv.h"

namespace qf {
namespace {

// ---------------------------------------------------------------- vector layer
constexpr int64_t L = 8;
using V = __m256;
struct Mask {
  __m256i m;
};
inline Mask tail_mask(int64_t n) {
  return Mask{_mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))};
}
inline V vzero() { return _mm256_setzero_ps(); }
template <bool M>
inline V vload(const float* p, Mask m) {
  if (M) return _mm256_maskload_ps(p, m.m);
  return _mm256_loadu_ps(p);
}
template <bool M>
inline void vstore(float* p, V v, Mask m) {
  if (M)
    _mm256_maskstore_ps(p, m.m, v);
  else
    _mm256_storeu_ps(p, v);
}
inline V vfma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
inline V vadd(V a, V b) { return _mm256_add_ps(a, b); }

// ---------------------------------------------------------------- shared part (same in conv_avx512.cc)
// Tap lists: element offsets into the source (relative to the pixel base)
// and into the tap-major weights.
struct Taps {
  int64_t* off = nullptr;
  int64_t* w = nullptr;
  int n = 0;
  explicit Taps(int64_t cap) {
    off = static_cast<int64_t*>(aligned_alloc64(sizeof(int64_t) * 2 * (cap + 1)));
    w = off + cap + 1;
  }
  ~Taps() { aligned_free64(off); }
  Taps(const Taps&) = delete;
  Taps& operator=(const Taps&) = delete;
  void add(int64_t o, int64_t wi) {
    off[n] = o;
    w[n] = wi;
    n++;
  }
};

// P pixels of one channel vector: dst[p] = init (+ dst[p]) + sum_t src[p*ss + off[t]] * wt[w[t]].
template <int P, bool M>
inline void dw_block(const float* src, int64_t ss, const Taps& tp, const float* wt, float* dst, int64_t ds,
                     const float* init, bool add_dst, Mask m) {
  V acc[P];
  const V i0 = init ? vload<M>(init, m) : vzero();
  for (int p = 0; p < P; p++) acc[p] = add_dst ? vadd(i0, vload<M>(dst + p * ds, m)) : i0;
  for (int t = 0; t < tp.n; t++) {
    const V wv = vload<M>(wt + tp.w[t], m);
    const float* s = src + tp.off[t];
    for (int p = 0; p < P; p++) acc[p] = vfma(vload<M>(s + p * ss, m), wv, acc[p]);
  }
  for (int p = 0; p < P; p++) vstore<M>(dst + p * ds, acc[p], m);
}

// np pixels (1..8) across all channels.
template <int P>
inline void dw_pixels_p(int64_t C, const float* src, int64_t ss, const Taps& tp, const float* wt, float* dst,
                        int64_t ds, const float* bias, bool add_dst) {
  int64_t c0 = 0;
  const Mask full{};
  for (; c0 + L <= C; c0 += L)
    dw_block<P, false>(src + c0, ss, tp, wt + c0, dst + c0, ds, bias ? bias + c0 : nullptr, add_dst, full);
  if (c0 < C)
    dw_block<P, true>(src + c0, ss, tp, wt + c0, dst + c0, ds, bias ? bias + c0 : nullptr, add_dst,
                      tail_mask(C - c0));
}

void dw_pixels(int np, int64_t C, const float* src, int64_t ss, const Taps& tp, const float* wt, float* dst,
               int64_t ds, const float* bias, bool add_dst) {
  switch (np) {
    case 8: dw_pixels_p<8>(C, src, ss, tp, wt, dst, ds, bias, add_dst); break;
    case 7: dw_pixels_p<7>(C, src, ss, tp, wt, dst, ds, bias, add_dst); break;
    case 6: dw_pixels_p<6>(C, src, ss, tp, wt, dst, ds, bias, add_dst); break;
    case 5: dw_pixels_p<5>(C, src, ss, tp, wt, dst, ds, bias, add_dst); break;
    case 4: dw_pixels_p<4>(C, src, ss, tp, wt, dst, ds, bias, add_dst); break;
    case 3: dw_pixels_p<3>(C, src, ss, tp, wt, dst, ds, bias, add_dst); break;
    case 2: dw_pixels_p<2>(C, src, ss, tp, wt, dst, ds, bias, add_dst); break;
    default: dw_pixels_p<1>(C, src, ss, tp, wt, dst, ds, bias, add_dst); break;
  }
}

inline int64_t ceil_div(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }
inline int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// Runs pixels [j0, j1) (interior: every tap in tp valid) in blocks of 8.
inline void dw_run_interior(int64_t j0, int64_t j1, int64_t C, const float* src0, int64_t ss, const Taps& tp,
                            const float* wt, float* dst0, int64_t ds, const float* bias, bool add_dst) {
  for (int64_t j = j0; j < j1; j += 8) {
    const int np = static_cast<int>(j1 - j < 8 ? j1 - j : 8);
    dw_pixels(np, C, src0 + j * ss, ss, tp, wt, dst0 + j * ds, ds, bias, add_dst);
  }
}

void fwd_rows(const ConvGeom& g, const float* x, const float* wt, const float* bias, float* out, int64_t r0,
              int64_t r1) {
  const int64_t C = g.c, W = g.w;
  Taps rowt(g.kh * g.kw), pixt(g.kh * g.kw);
  // Interior output columns: every kx tap inside [0, W).
  int64_t lo = ceil_div(g.pl, g.sw);
  int64_t hi = floor_div(W - 1 - (g.kw - 1) * g.dw + g.pl, g.sw) + 1;
  if (lo > g.ow) lo = g.ow;
  if (hi > g.ow) hi = g.ow;
  if (hi < lo) hi = lo;
  for (int64_t r = r0; r < r1; r++) {
    const int64_t n = r / g.oh, oy = r % g.oh;
    rowt.n = 0;
    for (int64_t ky = 0; ky < g.kh; ky++) {
      const int64_t iy = oy * g.sh - g.pt + ky * g.dh;
      if (iy < 0 || iy >= g.h) continue;
      for (int64_t kx = 0; kx < g.kw; kx++) rowt.add(((n * g.h + iy) * W + kx * g.dw) * C, (ky * g.kw + kx) * C);
    }
    float* orow = out + r * g.ow * C;
    // Pixel base: x + (ox*sw - pl)*C.
    const float* src0 = x - g.pl * C;
    const int64_t ss = g.sw * C;
    for (int64_t ox = 0; ox < g.ow; ox++) {
      if (ox == lo && hi > lo) {
        dw_run_interior(lo, hi, C, src0, ss, rowt, wt, orow, C, bias, false);
        ox = hi - 1;
        continue;
      }
      pixt.n = 0;
      const int64_t bx = ox * g.sw - g.pl;
      for (int t = 0; t < rowt.n; t++) {
        const int64_t kx = (rowt.w[t] / C) % g.kw;
        const int64_t ix = bx + kx * g.dw;
        if (ix >= 0 && ix < W) pixt.add(rowt.off[t], rowt.w[t]);
      }
      dw_pixels(1, C, src0 + ox * ss, ss, pixt, wt, orow + ox * C, C, bias, false);
    }
  }
}

void bwd_input_rows(const ConvGeom& g, const float* gout, const float* wt, float* gin, bool accumulate, int64_t r0,
                    int64_t r1) {
  const int64_t C = g.c, W = g.w, OW = g.ow;
  Taps rowt(g.kh * g.kw), pht(g.kh * g.kw), pixt(g.kh * g.kw);
  int64_t* ex = static_cast<int64_t*>(aligned_alloc64(sizeof(int64_t) * (g.kw + 1)));
  for (int64_t r = r0; r < r1; r++) {
    const int64_t n = r / g.h, iy = r % g.h;
    float* grow = gin + r * W * C;
    for (int64_t q = 0; q < g.sw; q++) {
      // Pixels of phase q: ix = q - pl + j*sw.
      const int64_t j0 = ceil_div(g.pl - q, g.sw), j1 = floor_div(W - 1 - q + g.pl, g.sw) + 1;
      if (j1 <= j0) continue;
      // Taps of this phase: kx with kx*dw = q (mod sw); ox = j - e, e = (kx*dw - q)/sw.
      pht.n = 0;
      int64_t emin = 0, emax = 0;
      bool any = false;
      for (int64_t ky = 0; ky < g.kh; ky++) {
        const int64_t ty = iy + g.pt - ky * g.dh;
        if (ty < 0 || ty % g.sh != 0 || ty / g.sh >= g.oh) continue;
        const int64_t oy = ty / g.sh;
        for (int64_t kx = 0; kx < g.kw; kx++) {
          const int64_t d = kx * g.dw - q;
          if (floor_div(d, g.sw) * g.sw != d) continue;
          const int64_t e = d / g.sw;  // exact
          ex[kx] = e;
          if (!any || e < emin) emin = e;
          if (!any || e > emax) emax = e;
          any = true;
          pht.add(((n * g.oh + oy) * OW - e) * C, (ky * g.kw + kx) * C);
        }
      }
      const float* src0 = gout;  // pixel j base: gout + j*C
      float* dst0 = grow + (q - g.pl) * C;
      const int64_t ds = g.sw * C;
      if (!any) {
        if (!accumulate)
          for (int64_t j = j0; j < j1; j++) {
            float* d = dst0 + j * ds;
            for (int64_t ch = 0; ch < C; ch++) d[ch] = 0.f;
          }
        continue;
      }
      // Interior j: j - e in [0, OW) for every tap.
      int64_t lo = emax > j0 ? emax : j0;
      int64_t hi = OW + emin < j1 ? OW + emin : j1;
      if (hi < lo) hi = lo;
      for (int64_t j = j0; j < j1; j++) {
        if (j == lo && hi > lo) {
          dw_run_interior(lo, hi, C, src0, C, pht, wt, dst0, ds, nullptr, accumulate);
          j = hi - 1;
          continue;
        }
        pixt.n = 0;
        for (int t = 0; t < pht.n; t++) {
          const int64_t kx = (pht.w[t] / C) % g.kw;
          const int64_t ox = j - ex[kx];
          if (ox >= 0 && ox < OW) pixt.add(pht.off[t], pht.w[t]);
        }
        dw_pixels(1, C, src0 + j * C, C, pixt, wt, dst0 + j * ds, ds, nullptr, accumulate);
      }
    }
  }
  aligned_free64(ex);
}

// acc[t] += sum_j g[j] * src[j*ss + off[t]] for NT taps, one channel vector.
template <int NT, bool M>
inline void dww_block(const float* gp, int64_t gs, const float* src, int64_t ss, const int64_t* off, int64_t nj,
                      float* const* accp, Mask m) {
  V acc[NT];
  for (int t = 0; t < NT; t++) acc[t] = vzero();
  for (int64_t j = 0; j < nj; j++) {
    const V gv = vload<M>(gp + j * gs, m);
    const float* s = src + j * ss;
    for (int t = 0; t < NT; t++) acc[t] = vfma(gv, vload<M>(s + off[t], m), acc[t]);
  }
  for (int t = 0; t < NT; t++) vstore<M>(accp[t], vadd(vload<M>(accp[t], m), acc[t]), m);
}

template <bool M>
void dww_taps(int nt, const float* gp, int64_t gs, const float* src, int64_t ss, const int64_t* off, int64_t nj,
              float* const* accp, Mask m) {
  switch (nt) {
    case 8: dww_block<8, M>(gp, gs, src, ss, off, nj, accp, m); break;
    case 7: dww_block<7, M>(gp, gs, src, ss, off, nj, accp, m); break;
    case 6: dww_block<6, M>(gp, gs, src, ss, off, nj, accp, m); break;
    case 5: dww_block<5, M>(gp, gs, src, ss, off, nj, accp, m); break;
    case 4: dww_block<4, M>(gp, gs, src, ss, off, nj, accp, m); break;
    case 3: dww_block<3, M>(gp, gs, src, ss, off, nj, accp, m); break;
    case 2: dww_block<2, M>(gp, gs, src, ss, off, nj, accp, m); break;
    default: dww_block<1, M>(gp, gs, src, ss, off, nj, accp, m); break;
  }
}

template <bool M>
void dww_vector(const ConvGeom& g, const Taps& rowt, const float* grow, const float* src0, int64_t lo, int64_t hi,
                float* gwt, float* gb, int64_t c0, Mask m) {
  const int64_t C = g.c, ss = g.sw * C;
  float* accp[8];
  int64_t off[8];
  // Interior pixels: taps in groups of 8, each group one pass over the pixels.
  if (hi > lo)
    for (int t0 = 0; t0 < rowt.n; t0 += 8) {
      const int nt = rowt.n - t0 < 8 ? rowt.n - t0 : 8;
      for (int t = 0; t < nt; t++) {
        off[t] = rowt.off[t0 + t] + c0;
        accp[t] = gwt + rowt.w[t0 + t] + c0;
      }
      dww_taps<M>(nt, grow + lo * C + c0, C, src0 + lo * ss, ss, off, hi - lo, accp, m);
    }
  // Border pixels: each with its valid taps.
  for (int64_t ox = 0; ox < g.ow; ox++) {
    if (ox >= lo && ox < hi) continue;
    const V gv = vload<M>(grow + ox * C + c0, m);
    const int64_t bx = ox * g.sw - g.pl;
    for (int t = 0; t < rowt.n; t++) {
      const int64_t kx = (rowt.w[t] / C) % g.kw;
      const int64_t ix = bx + kx * g.dw;
      if (ix < 0 || ix >= g.w) continue;
      float* a = gwt + rowt.w[t] + c0;
      vstore<M>(a, vfma(gv, vload<M>(src0 + ox * ss + rowt.off[t] + c0, m), vload<M>(a, m)), m);
    }
  }
  if (gb) {
    V s = vzero();
    for (int64_t ox = 0; ox < g.ow; ox++) s = vadd(s, vload<M>(grow + ox * C + c0, m));
    vstore<M>(gb + c0, vadd(vload<M>(gb + c0, m), s), m);
  }
}

void bwd_weight_rows(const ConvGeom& g, const float* x, const float* gout, float* gwt, float* gb, int64_t r0,
                     int64_t r1) {
  const int64_t C = g.c, W = g.w;
  Taps rowt(g.kh * g.kw);
  int64_t lo = ceil_div(g.pl, g.sw);
  int64_t hi = floor_div(W - 1 - (g.kw - 1) * g.dw + g.pl, g.sw) + 1;
  if (lo > g.ow) lo = g.ow;
  if (hi > g.ow) hi = g.ow;
  if (hi < lo) hi = lo;
  for (int64_t r = r0; r < r1; r++) {
    const int64_t n = r / g.oh, oy = r % g.oh;
    rowt.n = 0;
    for (int64_t ky = 0; ky < g.kh; ky++) {
      const int64_t iy = oy * g.sh - g.pt + ky * g.dh;
      if (iy < 0 || iy >= g.h) continue;
      for (int64_t kx = 0; kx < g.kw; kx++) rowt.add(((n * g.h + iy) * W + kx * g.dw) * C, (ky * g.kw + kx) * C);
    }
    const float* grow = gout + r * g.ow * C;
    const float* src0 = x - g.pl * C;
    int64_t c0 = 0;
    for (; c0 + L <= C; c0 += L) dww_vector<false>(g, rowt, grow, src0, lo, hi, gwt, gb, c0, Mask{});
    if (c0 < C) dww_vector<true>(g, rowt, grow, src0, lo, hi, gwt, gb, c0, tail_mask(C - c0));
  }
}

}  // namespace

void dw_fwd_f32_avx2(const ConvGeom& g, const float* x, const float* wt, const float* bias, float* out, int64_t r0,
                       int64_t r1) {
  fwd_rows(g, x, wt, bias, out, r0, r1);
}
void dw_bwd_input_f32_avx2(const ConvGeom& g, const float* gout, const float* wt, float* gin, bool accumulate,
                             int64_t r0, int64_t r1) {
  bwd_input_rows(g, gout, wt, gin, accumulate, r0, r1);
}
void dw_bwd_weight_f32_avx2(const ConvGeom& g, const float* x, const float* gout, float* gwt, float* gb,
                              int64_t r0, int64_t r1) {
  bwd_weight_rows(g, x, gout, gwt, gb, r0, r1);
}

}  // namespace qf
