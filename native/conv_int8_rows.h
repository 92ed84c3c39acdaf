// The row and pixel walk shared by the int8 depthwise kernels that take one
// tap list per pixel block (conv_int8_avx2.cc, conv_int8_avx512.cc): inner
// pixels in blocks of up to 8 (every tap in bounds), border pixels one at a
// time with out-of-bounds taps pointing at the zero-point buffer. The
// including file defines, in qf::{anonymous}, dwq_pixels_p<P>(tp, ss, pr,
// ep, out, o0, C) for P = 1..8 (P pixels, all channels) before including
// this; it then calls dw_rows(). Scalar code; file-local.
#pragma once
#include <cstdint>

#include "conv.h"

namespace qf {
namespace {

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
