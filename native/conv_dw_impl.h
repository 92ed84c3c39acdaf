// Depthwise fp32 convolution kernels: the one implementation behind every
// vector variant (conv_avx2.cc, conv_avx512.cc, conv_neon.cc). A variant file
// defines, in qf::{anonymous}, its vector layer: L (floats per vector), V,
// Mask, tail_mask(n), vzero(), vload<masked>(p, m), vstore<masked>(p, v, m),
// vfma(a, b, c) (a * b + c, fused), vadd, and the register budget kMaxTaps
// and kRowsP; then it defines QF_DW_SUFFIX and includes this file, which
// defines dw_fwd_f32_<suffix>, dw_bwd_input_f32_<suffix> and
// dw_bwd_weight_f32_<suffix> (declared in conv.h). Every variant runs the
// same operations in the same order, so they agree bit for bit.
// Include from exactly one .cc per variant.
#ifndef QF_DW_SUFFIX
#error "define QF_DW_SUFFIX and the vector layer before including conv_dw_impl.h"
#endif
#include <cstdint>

#include "conv.h"

#define QF_DW_CAT2(a, b) a##_##b
#define QF_DW_CAT(a, b) QF_DW_CAT2(a, b)
#define QF_DW_NAME(base) QF_DW_CAT(base, QF_DW_SUFFIX)

namespace qf {
namespace {
// Loop structure: output rows one at a time across their full width (all
// channels of 8 pixels per block, one channel vector at a time); the input
// row the next output row adds is prefetched while the current row runs.
// Stride-1 rows of taps (G consecutive input pixels) load each input vector
// once and reuse it for the G taps (dw_block_rows).

// Tap lists: element offsets into the source (relative to the pixel base),
// into the tap-major weights, and the tap's kx.
struct Taps {
  int64_t* off = nullptr;
  int64_t* w = nullptr;
  int64_t* kx = nullptr;
  int n = 0;
  int rows = 0;  // G when the taps are groups of G consecutive source pixels (set_rows), else 0
  explicit Taps(int64_t cap) {
    off = static_cast<int64_t*>(aligned_alloc64(sizeof(int64_t) * 3 * (cap + 1)));
    w = off + cap + 1;
    kx = w + cap + 1;
  }
  ~Taps() { aligned_free64(off); }
  Taps(const Taps&) = delete;
  Taps& operator=(const Taps&) = delete;
  void add(int64_t o, int64_t wi, int64_t k) {
    off[n] = o;
    w[n] = wi;
    kx[n] = k;
    n++;
  }
  // Detects groups of G (2..7) taps reading consecutive pixels (offset +C).
  void set_rows(int64_t C) {
    rows = 0;
    if (n < 2) return;
    int G = 1;
    while (G < n && off[G] == off[G - 1] + C) G++;
    if (G < 2 || G > 7 || n % G != 0) return;
    for (int t = 0; t < n; t += G)
      for (int k = 1; k < G; k++)
        if (off[t + k] != off[t] + k * C) return;
    rows = G;
  }
};

inline int64_t ceil_div(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }
inline int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }
inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

// Prefetch [p, p + floats) into L1 (never faults, so the span may run off the buffer).
inline void prefetch_span(const float* p, int64_t floats) {
  const char* c = reinterpret_cast<const char*>(p);
  for (int64_t o = 0; o < floats * 4; o += 64) __builtin_prefetch(c + o, 0, 3);
}

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

// Same result as dw_block (same taps, same order) for taps in groups of G
// consecutive source pixels and a source pixel stride of C: the P + G - 1
// input vectors of a group are loaded once.
template <int P, int G, bool M>
inline void dw_block_rows(const float* src, int64_t C, const Taps& tp, const float* wt, float* dst, int64_t ds,
                          const float* init, bool add_dst, Mask m) {
  V acc[P];
  const V i0 = init ? vload<M>(init, m) : vzero();
  for (int p = 0; p < P; p++) acc[p] = add_dst ? vadd(i0, vload<M>(dst + p * ds, m)) : i0;
  for (int t = 0; t < tp.n; t += G) {
    V xv[P + G - 1];
    const float* s = src + tp.off[t];
    for (int i = 0; i < P + G - 1; i++) xv[i] = vload<M>(s + i * C, m);
    for (int k = 0; k < G; k++) {
      const V wv = vload<M>(wt + tp.w[t + k], m);
      for (int p = 0; p < P; p++) acc[p] = vfma(xv[p + k], wv, acc[p]);
    }
  }
  for (int p = 0; p < P; p++) vstore<M>(dst + p * ds, acc[p], m);
}

template <int G, bool M>
inline void dw_rows_cv(const float* src, int64_t C, const Taps& tp, const float* wt, float* dst, int64_t ds,
                       const float* init, bool add_dst, Mask m) {
  for (int p0 = 0; p0 < 8; p0 += kRowsP)
    dw_block_rows<kRowsP, G, M>(src + p0 * C, C, tp, wt, dst + p0 * ds, ds, init, add_dst, m);
}

template <bool M>
inline void dw_rows8(const float* src, int64_t C, const Taps& tp, const float* wt, float* dst, int64_t ds,
                     const float* init, bool add_dst, Mask m) {
  switch (tp.rows) {
    case 2: dw_rows_cv<2, M>(src, C, tp, wt, dst, ds, init, add_dst, m); break;
    case 3: dw_rows_cv<3, M>(src, C, tp, wt, dst, ds, init, add_dst, m); break;
    case 4: dw_rows_cv<4, M>(src, C, tp, wt, dst, ds, init, add_dst, m); break;
    case 5: dw_rows_cv<5, M>(src, C, tp, wt, dst, ds, init, add_dst, m); break;
    case 6: dw_rows_cv<6, M>(src, C, tp, wt, dst, ds, init, add_dst, m); break;
    default: dw_rows_cv<7, M>(src, C, tp, wt, dst, ds, init, add_dst, m); break;
  }
}

// np pixels (1..8) across all channels.
template <int P>
inline void dw_pixels_p(int64_t C, const float* src, int64_t ss, const Taps& tp, const float* wt, float* dst,
                        int64_t ds, const float* bias, bool add_dst) {
  int64_t c0 = 0;
  const Mask full{};
  if (P == 8 && tp.rows && ss == C) {
    for (; c0 + L <= C; c0 += L)
      dw_rows8<false>(src + c0, C, tp, wt + c0, dst + c0, ds, bias ? bias + c0 : nullptr, add_dst, full);
    if (c0 < C)
      dw_rows8<true>(src + c0, C, tp, wt + c0, dst + c0, ds, bias ? bias + c0 : nullptr, add_dst, tail_mask(C - c0));
    return;
  }
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

// Output columns whose kx taps all fall inside [0, w): [lo, hi).
inline void interior_cols(const ConvGeom& g, int64_t* lo, int64_t* hi) {
  int64_t a = ceil_div(g.pl, g.sw);
  int64_t b = floor_div(g.w - 1 - (g.kw - 1) * g.dw + g.pl, g.sw) + 1;
  if (a > g.ow) a = g.ow;
  if (b > g.ow) b = g.ow;
  if (b < a) b = a;
  *lo = a;
  *hi = b;
}

// Valid taps of output row r (rows outside the input skipped).
inline void row_taps(const ConvGeom& g, int64_t r, Taps* t) {
  const int64_t n = r / g.oh, oy = r % g.oh;
  t->n = 0;
  for (int64_t ky = 0; ky < g.kh; ky++) {
    const int64_t iy = oy * g.sh - g.pt + ky * g.dh;
    if (iy < 0 || iy >= g.h) continue;
    for (int64_t kx = 0; kx < g.kw; kx++)
      t->add(((n * g.h + iy) * g.w + kx * g.dw) * g.c, (ky * g.kw + kx) * g.c, kx);
  }
}

// The input row (start, at column -pl) output row r + 1 adds, or null.
inline const float* next_input_row(const ConvGeom& g, const float* x, int64_t r) {
  const int64_t n = r / g.oh, oy = r % g.oh;
  if (oy + 1 >= g.oh) return nullptr;
  const int64_t iy = (oy + 1) * g.sh - g.pt + (g.kh - 1) * g.dh;
  if (iy < 0 || iy >= g.h) return nullptr;
  return x + ((n * g.h + iy) * g.w - g.pl) * g.c;
}

// Output row r, columns [a, b).
void fwd_row_span(const ConvGeom& g, const float* x, const float* wt, const float* bias, float* out, int64_t r,
                  int64_t a, int64_t b, int64_t lo, int64_t hi, Taps& rowt, Taps& pixt) {
  const int64_t C = g.c, ss = g.sw * C;
  row_taps(g, r, &rowt);
  rowt.set_rows(C);
  if (const float* pf = next_input_row(g, x, r)) prefetch_span(pf + a * ss, (b - a) * ss + (g.kw - 1) * g.dw * C);
  float* orow = out + r * g.ow * C;
  const float* src0 = x - g.pl * C;  // pixel ox: src0 + ox*ss
  const int64_t ia = imax(a, lo), ib = imin(b, hi);
  for (int64_t j = ia; j < ib; j += 8) {
    const int np = static_cast<int>(imin(ib - j, 8));
    dw_pixels(np, C, src0 + j * ss, ss, rowt, wt, orow + j * C, C, bias, false);
  }
  for (int64_t ox = a; ox < b; ox++) {
    if (ox == ia && ib > ia) ox = ib;
    if (ox >= b) break;
    pixt.n = 0;
    const int64_t bx = ox * g.sw - g.pl;
    for (int t = 0; t < rowt.n; t++) {
      const int64_t ix = bx + rowt.kx[t] * g.dw;
      if (ix >= 0 && ix < g.w) pixt.add(rowt.off[t], rowt.w[t], rowt.kx[t]);
    }
    dw_pixels(1, C, src0 + ox * ss, ss, pixt, wt, orow + ox * C, C, bias, false);
  }
}

void fwd_rows(const ConvGeom& g, const float* x, const float* wt, const float* bias, float* out, int64_t r0,
              int64_t r1) {
  Taps rowt(g.kh * g.kw), pixt(g.kh * g.kw);
  int64_t lo, hi;
  interior_cols(g, &lo, &hi);
  for (int64_t r = r0; r < r1; r++) fwd_row_span(g, x, wt, bias, out, r, 0, g.ow, lo, hi, rowt, pixt);
}

// Backward input, gather form: input row r, columns [xa, xb). Pixels of
// phase q (ix = q - pl + j*sw) share their taps: kx with kx*dw = q (mod sw),
// reading gout column ox = j - e(kx), e = (kx*dw - q) / sw.
void bwd_input_row_span(const ConvGeom& g, const float* gout, const float* wt, float* gin, bool accumulate, int64_t r,
                        int64_t xa, int64_t xb, Taps& pht, Taps& pixt, int64_t* ex) {
  const int64_t C = g.c, OW = g.ow;
  const int64_t n = r / g.h, iy = r % g.h;
  float* grow = gin + r * g.w * C;
  // gout row the next input row adds (smallest valid ky), for prefetching.
  if (iy + 1 < g.h)
    for (int64_t ky = 0; ky < g.kh; ky++) {
      const int64_t ty = iy + 1 + g.pt - ky * g.dh;
      if (ty < 0) break;
      if (ty % g.sh == 0 && ty / g.sh < g.oh) {
        const int64_t oa = imax(0, floor_div(xa + g.pl - (g.kw - 1) * g.dw, g.sw));
        const int64_t ob = imin(OW, floor_div(xb - 1 + g.pl, g.sw) + 1);
        if (ob > oa) prefetch_span(gout + ((n * g.oh + ty / g.sh) * OW + oa) * C, (ob - oa) * C);
        break;
      }
    }
  for (int64_t q = 0; q < g.sw; q++) {
    // j with ix = q - pl + j*sw in [xa, xb).
    const int64_t j0 = ceil_div(xa + g.pl - q, g.sw), j1 = ceil_div(xb + g.pl - q, g.sw);
    if (j1 <= j0) continue;
    pht.n = 0;
    int64_t emin = 0, emax = 0;
    bool any = false;
    for (int64_t ky = 0; ky < g.kh; ky++) {
      const int64_t ty = iy + g.pt - ky * g.dh;
      if (ty < 0 || ty % g.sh != 0 || ty / g.sh >= g.oh) continue;
      const int64_t oy = ty / g.sh;
      // Descending kx: the source offsets then ascend (set_rows groups them).
      for (int64_t kx = g.kw - 1; kx >= 0; kx--) {
        const int64_t d = kx * g.dw - q;
        if (floor_div(d, g.sw) * g.sw != d) continue;
        const int64_t e = d / g.sw;  // exact
        ex[kx] = e;
        if (!any || e < emin) emin = e;
        if (!any || e > emax) emax = e;
        any = true;
        pht.add(((n * g.oh + oy) * OW - e) * C, (ky * g.kw + kx) * C, kx);
      }
    }
    pht.set_rows(C);
    const float* src0 = gout;  // pixel j: src0 + j*C
    float* dst0 = grow + (q - g.pl) * C;
    const int64_t ds = g.sw * C;
    if (!any) {
      pht.n = 0;
      if (!accumulate)
        for (int64_t j = j0; j < j1; j++) dw_pixels(1, C, src0, C, pht, wt, dst0 + j * ds, ds, nullptr, false);
      continue;
    }
    // Interior j: j - e in [0, OW) for every tap.
    const int64_t lo = imax(emax, j0), hi = imax(lo, imin(OW + emin, j1));
    for (int64_t j = lo; j < hi; j += 8) {
      const int np = static_cast<int>(imin(hi - j, 8));
      dw_pixels(np, C, src0 + j * C, C, pht, wt, dst0 + j * ds, ds, nullptr, accumulate);
    }
    for (int64_t j = j0; j < j1; j++) {
      if (j == lo && hi > lo) j = hi;
      if (j >= j1) break;
      pixt.n = 0;
      for (int t = 0; t < pht.n; t++) {
        const int64_t ox = j - ex[pht.kx[t]];
        if (ox >= 0 && ox < OW) pixt.add(pht.off[t], pht.w[t], pht.kx[t]);
      }
      dw_pixels(1, C, src0 + j * C, C, pixt, wt, dst0 + j * ds, ds, nullptr, accumulate);
    }
  }
}

void bwd_input_rows(const ConvGeom& g, const float* gout, const float* wt, float* gin, bool accumulate, int64_t r0,
                    int64_t r1) {
  Taps pht(g.kh * g.kw), pixt(g.kh * g.kw);
  int64_t* ex = static_cast<int64_t*>(aligned_alloc64(sizeof(int64_t) * (g.kw + 1)));
  for (int64_t r = r0; r < r1; r++) bwd_input_row_span(g, gout, wt, gin, accumulate, r, 0, g.w, pht, pixt, ex);
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
    case 9: dww_block<9, M>(gp, gs, src, ss, off, nj, accp, m); break;
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

// One channel vector of output row r, columns [a, b) (ia..ib interior).
template <bool M>
void dww_vector(const ConvGeom& g, const Taps& rowt, const float* grow, const float* src0, int64_t a, int64_t b,
                int64_t ia, int64_t ib, float* gwt, float* gb, int64_t c0, Mask m) {
  const int64_t C = g.c, ss = g.sw * C;
  float* accp[kMaxTaps];
  int64_t off[kMaxTaps];
  if (ib > ia)
    for (int t0 = 0; t0 < rowt.n; t0 += kMaxTaps) {
      const int nt = rowt.n - t0 < kMaxTaps ? rowt.n - t0 : kMaxTaps;
      for (int t = 0; t < nt; t++) {
        off[t] = rowt.off[t0 + t] + c0;
        accp[t] = gwt + rowt.w[t0 + t] + c0;
      }
      dww_taps<M>(nt, grow + ia * C + c0, C, src0 + ia * ss, ss, off, ib - ia, accp, m);
    }
  for (int64_t ox = a; ox < b; ox++) {
    if (ox == ia && ib > ia) ox = ib;
    if (ox >= b) break;
    const V gv = vload<M>(grow + ox * C + c0, m);
    const int64_t bx = ox * g.sw - g.pl;
    for (int t = 0; t < rowt.n; t++) {
      const int64_t ix = bx + rowt.kx[t] * g.dw;
      if (ix < 0 || ix >= g.w) continue;
      float* acc = gwt + rowt.w[t] + c0;
      vstore<M>(acc, vfma(gv, vload<M>(src0 + ox * ss + rowt.off[t] + c0, m), vload<M>(acc, m)), m);
    }
  }
  if (gb) {
    V s = vzero();
    for (int64_t ox = a; ox < b; ox++) s = vadd(s, vload<M>(grow + ox * C + c0, m));
    vstore<M>(gb + c0, vadd(vload<M>(gb + c0, m), s), m);
  }
}

void bwd_weight_rows(const ConvGeom& g, const float* x, const float* gout, float* gwt, float* gb, int64_t r0,
                     int64_t r1) {
  const int64_t C = g.c, ss = g.sw * C;
  Taps rowt(g.kh * g.kw);
  int64_t lo, hi;
  interior_cols(g, &lo, &hi);
  for (int64_t r = r0; r < r1; r++) {
    row_taps(g, r, &rowt);
    const float* grow = gout + r * g.ow * C;
    const float* src0 = x - g.pl * C;
    if (const float* pf = next_input_row(g, x, r)) prefetch_span(pf, g.ow * ss + (g.kw - 1) * g.dw * C);
    if (r + 1 < r1) prefetch_span(grow + g.ow * C, g.ow * C);
    int64_t c0 = 0;
    for (; c0 + L <= C; c0 += L) dww_vector<false>(g, rowt, grow, src0, 0, g.ow, lo, hi, gwt, gb, c0, Mask{});
    if (c0 < C) dww_vector<true>(g, rowt, grow, src0, 0, g.ow, lo, hi, gwt, gb, c0, tail_mask(C - c0));
  }
}

}  // namespace

void QF_DW_NAME(dw_fwd_f32)(const ConvGeom& g, const float* x, const float* wt, const float* bias, float* out,
                            int64_t r0, int64_t r1) {
  fwd_rows(g, x, wt, bias, out, r0, r1);
}
void QF_DW_NAME(dw_bwd_input_f32)(const ConvGeom& g, const float* gout, const float* wt, float* gin, bool accumulate,
                                  int64_t r0, int64_t r1) {
  bwd_input_rows(g, gout, wt, gin, accumulate, r0, r1);
}
void QF_DW_NAME(dw_bwd_weight_f32)(const ConvGeom& g, const float* x, const float* gout, float* gwt, float* gb,
                                   int64_t r0, int64_t r1) {
  bwd_weight_rows(g, x, gout, gwt, gb, r0, r1);
}

}  // namespace qf
