// The row and pixel walk shared by the vectorised int8 convolution input
// kernels (rt_avx2.cc, rt_avx512.cc): per output row the kernel rows that stay
// inside the input, then border pixels one at a time with bounds checks and
// inner pixels in blocks of 4 without. The including file defines, in
// qf::rt::{anonymous}, ci_all<P, CHECK>(A, n, oy, ox0, ky0, ky1) (P pixels
// from ox0, every output channel; CHECK: test each tap's column) before
// including this; it then calls ci_rows(). Scalar code; file-local.
#pragma once
#include <cstdint>

#include "rt.h"

namespace qf {
namespace rt {
namespace {

inline int64_t cdiv(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }
inline int64_t fdiv(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// Output rows [r0, r1).
void ci_rows(const ConvInputArgs& A, int64_t r0, int64_t r1) {
  const ConvGeom& g = A.g;
  int64_t lo = cdiv(g.pl, g.sw);
  int64_t hi = fdiv(g.w - 1 + g.pl - (g.kw - 1) * g.dw, g.sw) + 1;
  lo = lo < 0 ? 0 : (lo > g.ow ? g.ow : lo);
  hi = hi > g.ow ? g.ow : hi;
  if (hi < lo) hi = lo;
  for (int64_t r = r0; r < r1; r++) {
    const int64_t n = r / g.oh, oy = r % g.oh;
    const int64_t base = oy * g.sh - g.pt;
    int64_t ky0 = cdiv(-base, g.dh), ky1 = cdiv(g.h - base, g.dh);
    ky0 = ky0 < 0 ? 0 : ky0;
    ky1 = ky1 > g.kh ? g.kh : ky1;
    if (ky1 < ky0) ky1 = ky0;
    int64_t ox = 0;
    for (; ox < lo; ox++) ci_all<1, true>(A, n, oy, ox, ky0, ky1);
    for (; ox + 4 <= hi; ox += 4) ci_all<4, false>(A, n, oy, ox, ky0, ky1);
    for (; ox < hi; ox++) ci_all<1, false>(A, n, oy, ox, ky0, ky1);
    for (; ox < g.ow; ox++) ci_all<1, true>(A, n, oy, ox, ky0, ky1);
  }
}

}  // namespace
}  // namespace rt
}  // namespace qf
