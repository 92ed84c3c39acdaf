// The row walk shared by the int8 depthwise kernels that multiply byte quads
// of 4 kernel rows by 4-byte dot products (conv_int8_avx512vnni.cc: vpdpbusd;
// conv_int8_neondot.cc: SDOT). Per output row, the input rows of each group of
// 4 kernel rows are interleaved once into a buffer of quads (x[iy0], x[iy1],
// x[iy2], x[iy3]) per column and channel (cpad * 4 bytes per column), with
// out-of-bounds rows and columns reading xZeroPoint; a kernel column then
// costs one dot product per pixel per 4 kernel rows against the weight quads
// pr.wquad. Include first; the including file then defines, in
// qf::{anonymous}, the three functions declared below, and calls
// dw_quad_rows<QP>() (QP: pixels per quad_block at most, 1..8).
// Scalar code; file-local.
#pragma once
#include <cstdint>

#include "conv.h"

namespace qf {
namespace {

// np pixels x 16 channels from c0.
struct QuadArgs {
  const uint8_t* xq;  // quads at (pixel 0's kx = 0 column, qy = 0, channel c0)
  int64_t ps, ks, qs;  // bytes to the next pixel, tap kx, quad row qy
  const int8_t* wq;   // weight quads at (kx = 0, qy = 0, c0)
  int64_t wks, wqs;   // bytes to the next tap kx, quad row qy
  int64_t kw, nqy;
  const int32_t* corr;  // start values of the sums, at c0
  const Epilogue* ep;
  void* out;
  int64_t o0, C, c0;  // output element of pixel p: o0 + p*C + c0
};
// A column of cpad channels' quads, all zq.
void quad_fill(uint8_t* d, int64_t cpad, uint8_t zq);
// A column interleaved from rows[i] + off (channels < C; rows[i] null: zq).
void quad_column(uint8_t* d, const uint8_t* const* rows, int64_t off, int64_t C, int64_t cpad, uint8_t zq);
// P pixels of a.
template <int P>
void quad_block(const QuadArgs& a);

template <int P>
inline void quad_pixels(int np, const QuadArgs& a) {
  if (np >= P)
    quad_block<P>(a);
  else if constexpr (P > 1)
    quad_pixels<P - 1>(np, a);
}

// Output rows [r0, r1); pr.wquad must be set. corr: [cpad] start values.
template <int QP>
void dw_quad_rows(const ConvGeom& g, const uint8_t* x, const DwU8Prep& pr, const int32_t* corr, const Epilogue& ep,
                  void* out, int64_t r0, int64_t r1) {
  const int64_t C = g.c, W = g.w, cpad = pr.cpad, nqy = pr.nqy;
  // Input columns ix in [-pl, -pl + ncols) cover every tap of every output pixel.
  const int64_t ncols = (g.ow - 1) * g.sw + (g.kw - 1) * g.dw + 1;
  const int64_t colb = cpad * 4;  // bytes per column of quads
  uint8_t* xq = static_cast<uint8_t*>(aligned_alloc64(static_cast<size_t>(nqy * ncols * colb)));
  const uint8_t zq = static_cast<uint8_t>(pr.xzp);
  const uint8_t* rows[4];
  for (int64_t r = r0; r < r1; r++) {
    const int64_t n = r / g.oh, oy = r % g.oh;
    for (int64_t qy = 0; qy < nqy; qy++) {
      bool any = false;
      for (int i = 0; i < 4; i++) {
        const int64_t ky = qy * 4 + i, iy = oy * g.sh - g.pt + ky * g.dh;
        rows[i] = (ky < g.kh && iy >= 0 && iy < g.h) ? x + (n * g.h + iy) * W * C : nullptr;
        any = any || rows[i];
      }
      uint8_t* dq = xq + qy * ncols * colb;
      for (int64_t col = 0; col < ncols; col++) {
        const int64_t ix = col - g.pl;
        if (!any || ix < 0 || ix >= W)
          quad_fill(dq + col * colb, cpad, zq);
        else
          quad_column(dq + col * colb, rows, ix * C, C, cpad, zq);
      }
    }
    // Pixel ox, tap kx reads column ox*sw + kx*dw.
    QuadArgs a;
    a.ps = g.sw * colb;
    a.ks = g.dw * colb;
    a.qs = ncols * colb;
    a.wqs = cpad * 4;
    a.wks = nqy * cpad * 4;
    a.kw = g.kw;
    a.nqy = nqy;
    a.ep = &ep;
    a.out = out;
    a.C = C;
    for (int64_t c0 = 0; c0 < C; c0 += 16)
      for (int64_t ox = 0; ox < g.ow; ox += QP) {
        a.xq = xq + ox * a.ps + c0 * 4;
        a.wq = pr.wquad + c0 * 4;
        a.corr = corr + c0;
        a.o0 = (r * g.ow + ox) * C;
        a.c0 = c0;
        quad_pixels<QP>(static_cast<int>(g.ow - ox < QP ? g.ow - ox : QP), a);
      }
  }
  aligned_free64(xq);
}

}  // namespace
}  // namespace qf
