// Int8 depthwise convolution, AVX-512 VNNI: 16 channels per vector, over the
// quad row walk of conv_int8_quads.h; a kernel column costs one vpdpbusd per
// pixel per 4 kernel rows against quads of s8 weights (w - wZeroPoint). The
// zero point enters as the constant corr[ch] = -xzp * sum(w - wzp): exact
// int32, bit-identical to dw_u8s8_ref. Weights whose w - wZeroPoint leaves
// int8 use dw_u8s8_avx512.
// GCC 12 flags the intrinsics' internal _mm*_undefined_* temporaries.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <cstdint>

#include "conv_int8_quads.h"
#include "conv_int8_zmm.h"

namespace qf {
namespace {

inline __mmask16 lane_mask16(int64_t C, int64_t c0) {
  return C - c0 >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (C - c0)) - 1u);
}

void quad_fill(uint8_t* d, int64_t cpad, uint8_t zq) {
  const __m512i zq4 = _mm512_set1_epi8(static_cast<char>(zq));
  for (int64_t c0 = 0; c0 < cpad; c0 += 16) _mm512_store_si512(d + c0 * 4, zq4);
}

void quad_column(uint8_t* d, const uint8_t* const* rows, int64_t off, int64_t C, int64_t cpad, uint8_t zq) {
  const __m128i z = _mm_set1_epi8(static_cast<char>(zq));
  for (int64_t c0 = 0; c0 < cpad; c0 += 16) {
    const __mmask16 m = lane_mask16(C, c0);
    __m128i v[4];
    for (int i = 0; i < 4; i++) v[i] = rows[i] ? _mm_maskz_loadu_epi8(m, rows[i] + off + c0) : z;
    const __m128i ab_lo = _mm_unpacklo_epi8(v[0], v[1]), ab_hi = _mm_unpackhi_epi8(v[0], v[1]);
    const __m128i cd_lo = _mm_unpacklo_epi8(v[2], v[3]), cd_hi = _mm_unpackhi_epi8(v[2], v[3]);
    __m512i q = _mm512_castsi128_si512(_mm_unpacklo_epi16(ab_lo, cd_lo));
    q = _mm512_inserti32x4(q, _mm_unpackhi_epi16(ab_lo, cd_lo), 1);
    q = _mm512_inserti32x4(q, _mm_unpacklo_epi16(ab_hi, cd_hi), 2);
    q = _mm512_inserti32x4(q, _mm_unpackhi_epi16(ab_hi, cd_hi), 3);
    _mm512_store_si512(d + c0 * 4, q);
  }
}

template <int P>
void quad_block(const QuadArgs& a) {
  const uint8_t* xq = a.xq;
  const int8_t* wq = a.wq;
  const int64_t ps = a.ps, ks = a.ks, qs = a.qs, wks = a.wks, wqs = a.wqs, kw = a.kw, nqy = a.nqy;
  __m512i acc[P];
  const __m512i c = _mm512_load_si512(a.corr);
  for (int p = 0; p < P; p++) acc[p] = c;
  for (int64_t kx = 0; kx < kw; kx++)
    for (int64_t qy = 0; qy < nqy; qy++) {
      const __m512i wv = _mm512_load_si512(wq + kx * wks + qy * wqs);
      const uint8_t* s = xq + kx * ks + qy * qs;
      for (int p = 0; p < P; p++) acc[p] = _mm512_dpbusd_epi32(acc[p], _mm512_load_si512(s + p * ps), wv);
    }
  const __mmask16 m = lane_mask16(a.C, a.c0);
  for (int p = 0; p < P; p++) epi16(*a.ep, acc[p], a.c0, m, a.out, a.o0 + p * a.C + a.c0);
}

}  // namespace

void dw_u8s8_avx512vnni(const ConvGeom& g, const uint8_t* x, const DwU8Prep& pr, const Epilogue& ep, void* out,
                        int64_t r0, int64_t r1) {
  if (!pr.wquad) {
    dw_u8s8_avx512(g, x, pr, ep, out, r0, r1);
    return;
  }
  dw_quad_rows<8>(g, x, pr, pr.corr, ep, out, r0, r1);
}

}  // namespace qf
