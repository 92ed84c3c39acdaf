// The row and pixel walk shared by the int8 depthwise kernels that take one
// tap list per pixel block (conv_int8_avx2.cc, conv_int8_avx512.cc,
// conv_int8_neon.cc), with int16 tap pairs (DwU8Prep::wpair): inner
// pixels in blocks of up to 8 (every tap in bounds), border pixels one at a
// time with out-of-bounds taps pointing at the zero-point buffer. The
// including file defines, in qf::{anonymous}, before including this, the
// vector layer (one vector step = kDwLanes channels):
//   constexpr int64_t kDwLanes; types DwAcc (int32 sums of a step), DwW (a
//   step's int16 weight pairs), DwX (the broadcast xZeroPoint), DwTail (the
//   live lanes of a step);
//   DwTail dw_tail(int64_t nl); DwX dw_xz(int32_t xzp); DwAcc dw_zero();
//   DwW dw_wload(const int16_t* wpair);
//   template <bool M> DwAcc dw_madd(DwAcc acc, const uint8_t* a,
//     const uint8_t* b, DwTail t, DwX xz, DwW w): acc plus (a - xzp) * w's
//     first and (b - xzp) * w's second taps (M: a tail, only t's lanes read);
//   void dw_store(const Epilogue& ep, DwAcc acc, int64_t c0, DwTail t,
//     void* out, int64_t idx): the epilogue, t's lanes stored at out[idx..].
// It then calls dw_rows(). Scalar code; file-local.
#pragma once
#include <cstdint>

#include "conv.h"

namespace qf {
namespace {

// P pixels (1..8) x one vector step from c0 (nl live channels). tp[t]: tap
// t's source for pixel 0 (channel 0); pixel p reads tp[t] + p*ss. Output
// element of pixel p: o0 + p*C.
template <int P, bool M>
inline void dwq_vec(const uint8_t* const* tp, int64_t ss, const DwU8Prep& pr, int64_t c0, int64_t nl,
                    const Epilogue& ep, void* out, int64_t o0, int64_t C) {
  const DwTail tl = dw_tail(nl);
  const DwX xz = dw_xz(pr.xzp);
  DwAcc acc[P];
  for (int p = 0; p < P; p++) acc[p] = dw_zero();
  for (int64_t q = 0; q < pr.npairs; q++) {
    const DwW wv = dw_wload(pr.wpair + (q * pr.cpad + c0) * 2);
    const uint8_t* a0 = tp[2 * q] + c0;
    const uint8_t* b0 = tp[2 * q + 1] + c0;
    for (int p = 0; p < P; p++) acc[p] = dw_madd<M>(acc[p], a0 + p * ss, b0 + p * ss, tl, xz, wv);
  }
  for (int p = 0; p < P; p++) dw_store(ep, acc[p], c0, tl, out, o0 + p * C + c0);
}

// P pixels, all channels.
template <int P>
void dwq_pixels_p(const uint8_t* const* tp, int64_t ss, const DwU8Prep& pr, const Epilogue& ep, void* out, int64_t o0,
                  int64_t C) {
  int64_t c0 = 0;
  for (; c0 + kDwLanes <= C; c0 += kDwLanes) dwq_vec<P, false>(tp, ss, pr, c0, kDwLanes, ep, out, o0, C);
  if (c0 < C) dwq_vec<P, true>(tp, ss, pr, c0, C - c0, ep, out, o0, C);
}

void dwq_pixels(int np, const uint8_t* const* tp, int64_t ss, const DwU8Prep& pr, const Epilogue& ep, void* out,
                int64_t o0, int64_t C) {
  switch (np) {
    case 8: dwq_pixels_p<8>(tp, ss, pr, ep, out, o0, C); break;
    case 7: dwq_pixels_p<7>(tp, ss, pr, ep, out, o0, C); break;
    case 6: dwq_pixels_p<6>(tp, ss, pr, ep, out, o0, C); break;
    case 5: dwq_pixels_p<5>(tp, ss, pr, ep, out, o0, C); break;
    case 4: dwq_pixels_p<4>(tp, ss, pr, ep, out, o0, C); break;
    case 3: dwq_pixels_p<3>(tp, ss, pr, ep, out, o0, C); break;
    case 2: dwq_pixels_p<2>(tp, ss, pr, ep, out, o0, C); break;
    default: dwq_pixels_p<1>(tp, ss, pr, ep, out, o0, C); break;
  }
}

inline int64_t ceil_div(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }
inline int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// Output rows [r0, r1) of a depthwise convolution through dwq_pixels_p.
void dw_rows(const ConvGeom& g, const uint8_t* x, const DwU8Prep& pr, const Epilogue& ep, void* out, int64_t r0,
             int64_t r1) {
  if (!pr.wpair) {
    dw_u8s8_ref(g, x, pr, ep, out, r0, r1);
    return;
  }
  const int64_t C = g.c, W = g.w, T = g.kh * g.kw, ntp = 2 * pr.npairs;
  const uint8_t** tp = static_cast<const uint8_t**>(aligned_alloc64(sizeof(const uint8_t*) * (ntp + 1)));
  int64_t lo = ceil_div(g.pl, g.sw);
  int64_t hi = floor_div(W - 1 - (g.kw - 1) * g.dw + g.pl, g.sw) + 1;
  if (lo > g.ow) lo = g.ow;
  if (hi > g.ow) hi = g.ow;
  if (hi < lo) hi = lo;
  const int64_t ss = g.sw * C;
  for (int64_t t = T; t < ntp; t++) tp[t] = pr.zbuf;
  for (int64_t r = r0; r < r1; r++) {
    const int64_t n = r / g.oh, oy = r % g.oh;
    for (int64_t ox = 0; ox < g.ow;) {
      const bool inner = ox >= lo && ox < hi;
      const int np = inner ? static_cast<int>(hi - ox < 8 ? hi - ox : 8) : 1;
      const int64_t bx = ox * g.sw - g.pl;
      for (int64_t ky = 0; ky < g.kh; ky++) {
        const int64_t iy = oy * g.sh - g.pt + ky * g.dh;
        const bool rowok = iy >= 0 && iy < g.h;
        for (int64_t kx = 0; kx < g.kw; kx++) {
          const int64_t ix = bx + kx * g.dw;
          const bool ok = rowok && (inner || (ix >= 0 && ix < W));
          tp[ky * g.kw + kx] = ok ? x + ((n * g.h + iy) * W + ix) * C : pr.zbuf;
        }
      }
      dwq_pixels(np, tp, ss, pr, ep, out, (r * g.ow + ox) * C, C);
      ox += np;
    }
  }
  aligned_free64(tp);
}

}  // namespace
}  // namespace qf
