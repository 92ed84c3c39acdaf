// Int8 depthwise convolution, AVX-512 (F/BW/VL): 16 channels per vector.
// Two taps of a channel are interleaved as int16 pairs (x - xzp, w - wzp) and
// multiplied with vpmaddwd: exact int32, bit-identical to dw_u8s8_ref. The
// epilogue is the reference formula vectorised (mul, add, activation, div,
// round-half-even, add zero point, clamp; same NaN handling).
// GCC 12 flags the intrinsics' internal _mm*_undefined_* temporaries.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <cstdint>

#include "conv.h"

namespace qf {
namespace {

inline void epi16(const Epilogue& ep, __m512i acc, int64_t c0, __mmask16 m, void* out, int64_t idx) {
  if (ep.type == OutType::S32) {
    _mm512_mask_storeu_epi32(static_cast<int32_t*>(out) + idx, m, acc);
    return;
  }
  const __m512 zero = _mm512_setzero_ps();
  __m512 y = _mm512_cvtepi32_ps(acc);
  if (ep.scale) y = _mm512_mul_ps(y, _mm512_maskz_loadu_ps(m, ep.scale + c0));
  y = _mm512_add_ps(y, ep.bias ? _mm512_maskz_loadu_ps(m, ep.bias + c0) : zero);
  if (ep.act == Act::Relu) {
    y = _mm512_max_ps(y, zero);  // y > 0 ? y : 0 (NaN -> 0)
  } else if (ep.act == Act::Prelu) {
    const __mmask16 neg = _mm512_cmp_ps_mask(y, zero, _CMP_LT_OQ);
    y = _mm512_mask_mul_ps(y, neg, y, _mm512_maskz_loadu_ps(m, ep.slope + c0));
  }
  if (ep.type == OutType::F32) {
    _mm512_mask_storeu_ps(static_cast<float*>(out) + idx, m, y);
    return;
  }
  __m512 t = _mm512_div_ps(y, _mm512_set1_ps(ep.out_scale));
  t = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  t = _mm512_add_ps(t, _mm512_set1_ps(static_cast<float>(ep.out_zp)));
  t = _mm512_max_ps(t, _mm512_set1_ps(static_cast<float>(ep.clamp_min)));  // NaN -> clamp_min
  t = _mm512_min_ps(t, _mm512_set1_ps(static_cast<float>(ep.clamp_max)));
  _mm512_mask_cvtepi32_storeu_epi8(static_cast<int8_t*>(out) + idx, m, _mm512_cvtps_epi32(t));
}

// P pixels x 16 channels from c0. tp[t]: tap t's source for pixel 0 (channel
// 0); pixel p reads tp[t] + p*ss. Output element index of pixel p: o0 + p*C.
template <int P, bool M>
inline void dwq_vec(const uint8_t* const* tp, int64_t ss, const DwU8Prep& pr, int64_t c0, __mmask16 m,
                    const Epilogue& ep, void* out, int64_t o0, int64_t C) {
  __m512i acc[P];
  for (int p = 0; p < P; p++) acc[p] = _mm512_setzero_si512();
  const __m512i xz = _mm512_set1_epi16(static_cast<int16_t>(pr.xzp));
  for (int64_t q = 0; q < pr.npairs; q++) {
    const __m512i wv = _mm512_load_si512(pr.wpair + (q * pr.cpad + c0) * 2);
    const uint8_t* a0 = tp[2 * q] + c0;
    const uint8_t* b0 = tp[2 * q + 1] + c0;
    for (int p = 0; p < P; p++) {
      const __m128i a = M ? _mm_maskz_loadu_epi8(m, a0 + p * ss) : _mm_loadu_si128(reinterpret_cast<const __m128i*>(a0 + p * ss));
      const __m128i b = M ? _mm_maskz_loadu_epi8(m, b0 + p * ss) : _mm_loadu_si128(reinterpret_cast<const __m128i*>(b0 + p * ss));
      const __m256i ab = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_unpacklo_epi8(a, b)), _mm_unpackhi_epi8(a, b), 1);
      const __m512i d = _mm512_sub_epi16(_mm512_cvtepu8_epi16(ab), xz);
      acc[p] = _mm512_add_epi32(acc[p], _mm512_madd_epi16(d, wv));
    }
  }
  for (int p = 0; p < P; p++) epi16(ep, acc[p], c0, m, out, o0 + p * C + c0);
}

template <int P>
void dwq_pixels_p(const uint8_t* const* tp, int64_t ss, const DwU8Prep& pr, const Epilogue& ep, void* out, int64_t o0,
                  int64_t C) {
  int64_t c0 = 0;
  for (; c0 + 16 <= C; c0 += 16) dwq_vec<P, false>(tp, ss, pr, c0, static_cast<__mmask16>(0xFFFF), ep, out, o0, C);
  if (c0 < C) dwq_vec<P, true>(tp, ss, pr, c0, static_cast<__mmask16>((1u << (C - c0)) - 1u), ep, out, o0, C);
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

}  // namespace

void dw_u8s8_avx512(const ConvGeom& g, const uint8_t* x, const DwU8Prep& pr, const Epilogue& ep, void* out, int64_t r0,
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

}  // namespace qf
