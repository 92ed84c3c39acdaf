// Int8 depthwise convolution, AVX-512 VNNI: 16 channels per vector.
// Per output row, the input rows of each group of 4 kernel rows are
// interleaved once into a buffer of byte quads (x[iy0], x[iy1], x[iy2],
// x[iy3]) per column and channel, with out-of-bounds rows and columns set to
// xZeroPoint; a kernel column then costs one vpdpbusd per pixel per 4 rows
// against quads of s8 weights (w - wZeroPoint). The zero point enters as the
// constant corr[ch] = -xzp * sum(w - wzp): exact int32, bit-identical to
// dw_u8s8_ref. Weights whose w - wZeroPoint leaves int8 use dw_u8s8_avx512.
// GCC 12 flags the intrinsics' internal _mm*_undefined_* temporaries.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <cstdint>

#include "conv_int8_zmm.h"

namespace qf {
namespace {

// P pixels of one channel vector. xq: quad buffer at (column of pixel 0's
// kx = 0 tap, qy = 0, channel c0); pixel p adds p*ps bytes, tap kx adds
// kx*ks, quad row qy adds qy*qs. wq: weight quads at (kx = 0, qy = 0, c0).
template <int P>
inline void vnni_block(const uint8_t* xq, int64_t ps, int64_t ks, int64_t qs, const int8_t* wq, int64_t wks,
                       int64_t wqs, int64_t kw, int64_t nqy, __m512i corr, const Epilogue& ep, void* out, int64_t o0,
                       int64_t C, int64_t c0, __mmask16 m) {
  __m512i acc[P];
  for (int p = 0; p < P; p++) acc[p] = corr;
  for (int64_t kx = 0; kx < kw; kx++)
    for (int64_t qy = 0; qy < nqy; qy++) {
      const __m512i wv = _mm512_load_si512(wq + kx * wks + qy * wqs);
      const uint8_t* s = xq + kx * ks + qy * qs;
      for (int p = 0; p < P; p++) acc[p] = _mm512_dpbusd_epi32(acc[p], _mm512_load_si512(s + p * ps), wv);
    }
  for (int p = 0; p < P; p++) epi16(ep, acc[p], c0, m, out, o0 + p * C + c0);
}

void vnni_pixels(int np, const uint8_t* xq, int64_t ps, int64_t ks, int64_t qs, const int8_t* wq, int64_t wks,
                 int64_t wqs, int64_t kw, int64_t nqy, __m512i corr, const Epilogue& ep, void* out, int64_t o0,
                 int64_t C, int64_t c0, __mmask16 m) {
  switch (np) {
    case 8: vnni_block<8>(xq, ps, ks, qs, wq, wks, wqs, kw, nqy, corr, ep, out, o0, C, c0, m); break;
    case 7: vnni_block<7>(xq, ps, ks, qs, wq, wks, wqs, kw, nqy, corr, ep, out, o0, C, c0, m); break;
    case 6: vnni_block<6>(xq, ps, ks, qs, wq, wks, wqs, kw, nqy, corr, ep, out, o0, C, c0, m); break;
    case 5: vnni_block<5>(xq, ps, ks, qs, wq, wks, wqs, kw, nqy, corr, ep, out, o0, C, c0, m); break;
    case 4: vnni_block<4>(xq, ps, ks, qs, wq, wks, wqs, kw, nqy, corr, ep, out, o0, C, c0, m); break;
    case 3: vnni_block<3>(xq, ps, ks, qs, wq, wks, wqs, kw, nqy, corr, ep, out, o0, C, c0, m); break;
    case 2: vnni_block<2>(xq, ps, ks, qs, wq, wks, wqs, kw, nqy, corr, ep, out, o0, C, c0, m); break;
    default: vnni_block<1>(xq, ps, ks, qs, wq, wks, wqs, kw, nqy, corr, ep, out, o0, C, c0, m); break;
  }
}

}  // namespace

void dw_u8s8_avx512vnni(const ConvGeom& g, const uint8_t* x, const DwU8Prep& pr, const Epilogue& ep, void* out,
                        int64_t r0, int64_t r1) {
  if (!pr.wquad) {
    dw_u8s8_avx512(g, x, pr, ep, out, r0, r1);
    return;
  }
  const int64_t C = g.c, W = g.w, cpad = pr.cpad, nqy = pr.nqy;
  // Input columns ix in [-pl, -pl + ncols) cover every tap of every output pixel.
  const int64_t ncols = (g.ow - 1) * g.sw + (g.kw - 1) * g.dw + 1;
  const int64_t colb = cpad * 4;  // bytes per column of quads
  uint8_t* xq = static_cast<uint8_t*>(aligned_alloc64(static_cast<size_t>(nqy * ncols * colb)));
  const __m128i zq = _mm_set1_epi8(static_cast<char>(pr.xzp));
  const __m512i zq4 = _mm512_set1_epi8(static_cast<char>(pr.xzp));
  const uint8_t* rows[4];
  for (int64_t r = r0; r < r1; r++) {
    const int64_t n = r / g.oh, oy = r % g.oh;
    // Interleave the kernel rows' input rows into quads.
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
        uint8_t* d = dq + col * colb;
        if (!any || ix < 0 || ix >= W) {
          for (int64_t c0 = 0; c0 < cpad; c0 += 16) _mm512_store_si512(d + c0 * 4, zq4);
          continue;
        }
        for (int64_t c0 = 0; c0 < cpad; c0 += 16) {
          const __mmask16 m = C - c0 >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (C - c0)) - 1u);
          __m128i v[4];
          for (int i = 0; i < 4; i++) v[i] = rows[i] ? _mm_maskz_loadu_epi8(m, rows[i] + ix * C + c0) : zq;
          const __m128i ab_lo = _mm_unpacklo_epi8(v[0], v[1]), ab_hi = _mm_unpackhi_epi8(v[0], v[1]);
          const __m128i cd_lo = _mm_unpacklo_epi8(v[2], v[3]), cd_hi = _mm_unpackhi_epi8(v[2], v[3]);
          __m512i q = _mm512_castsi128_si512(_mm_unpacklo_epi16(ab_lo, cd_lo));
          q = _mm512_inserti32x4(q, _mm_unpackhi_epi16(ab_lo, cd_lo), 1);
          q = _mm512_inserti32x4(q, _mm_unpacklo_epi16(ab_hi, cd_hi), 2);
          q = _mm512_inserti32x4(q, _mm_unpackhi_epi16(ab_hi, cd_hi), 3);
          _mm512_store_si512(d + c0 * 4, q);
        }
      }
    }
    // Pixel ox, tap kx reads column ox*sw + kx*dw.
    const int64_t ps = g.sw * colb, ks = g.dw * colb, qs = ncols * colb;
    const int64_t wqs = cpad * 4, wks = nqy * cpad * 4;
    for (int64_t c0 = 0; c0 < C; c0 += 16) {
      const __mmask16 m = C - c0 >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (C - c0)) - 1u);
      const __m512i corr = _mm512_load_si512(pr.corr + c0);
      for (int64_t ox = 0; ox < g.ow; ox += 8) {
        const int np = static_cast<int>(g.ow - ox < 8 ? g.ow - ox : 8);
        vnni_pixels(np, xq + ox * ps + c0 * 4, ps, ks, qs, pr.wquad + c0 * 4, wks, wqs, g.kw, nqy, corr, ep, out,
                    (r * g.ow + ox) * C, C, c0, m);
      }
    }
  }
  aligned_free64(xq);
}

}  // namespace qf
