// Int8 depthwise convolution, AVX2: 8 channels per vector. Same scheme as
// conv_int8_avx512.cc (int16 tap pairs through vpmaddwd, exact int32; the
// reference epilogue vectorised), bit-identical to dw_u8s8_ref.
// GCC 12 flags the intrinsics' internal _mm*_undefined_* temporaries.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "conv.h"

namespace qf {
namespace {

inline __m256i lane_mask(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// nl = live lanes (1..8).
inline void epi8(const Epilogue& ep, __m256i acc, int64_t c0, int64_t nl, void* out, int64_t idx) {
  const __m256i m = lane_mask(nl);
  if (ep.type == OutType::S32) {
    _mm256_maskstore_epi32(static_cast<int32_t*>(out) + idx, m, acc);
    return;
  }
  const __m256 zero = _mm256_setzero_ps();
  __m256 y = _mm256_cvtepi32_ps(acc);
  if (ep.scale) y = _mm256_mul_ps(y, _mm256_maskload_ps(ep.scale + c0, m));
  y = _mm256_add_ps(y, ep.bias ? _mm256_maskload_ps(ep.bias + c0, m) : zero);
  if (ep.act == Act::Relu) {
    y = _mm256_max_ps(y, zero);  // y > 0 ? y : 0 (NaN -> 0)
  } else if (ep.act == Act::Prelu) {
    const __m256 neg = _mm256_cmp_ps(y, zero, _CMP_LT_OQ);
    y = _mm256_blendv_ps(y, _mm256_mul_ps(y, _mm256_maskload_ps(ep.slope + c0, m)), neg);
  }
  if (ep.type == OutType::F32) {
    _mm256_maskstore_ps(static_cast<float*>(out) + idx, m, y);
    return;
  }
  __m256 t = _mm256_div_ps(y, _mm256_set1_ps(ep.out_scale));
  t = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  t = _mm256_add_ps(t, _mm256_set1_ps(static_cast<float>(ep.out_zp)));
  t = _mm256_max_ps(t, _mm256_set1_ps(static_cast<float>(ep.clamp_min)));  // NaN -> clamp_min
  t = _mm256_min_ps(t, _mm256_set1_ps(static_cast<float>(ep.clamp_max)));
  const __m256i q = _mm256_cvtps_epi32(t);  // in [-128, 255]
  const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
  const __m128i b8 = ep.type == OutType::U8 ? _mm_packus_epi16(w16, w16) : _mm_packs_epi16(w16, w16);
  if (nl == 8) {
    _mm_storel_epi64(reinterpret_cast<__m128i*>(static_cast<int8_t*>(out) + idx), b8);
  } else {
    alignas(16) int8_t tmp[16];
    _mm_store_si128(reinterpret_cast<__m128i*>(tmp), b8);
    std::memcpy(static_cast<int8_t*>(out) + idx, tmp, static_cast<size_t>(nl));
  }
}

template <bool M>
inline __m128i load8(const uint8_t* p, int64_t nl) {
  if (!M) return _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  alignas(16) uint8_t tmp[16] = {0};
  std::memcpy(tmp, p, static_cast<size_t>(nl));
  return _mm_load_si128(reinterpret_cast<const __m128i*>(tmp));
}

template <int P, bool M>
inline void dwq_vec(const uint8_t* const* tp, int64_t ss, const DwU8Prep& pr, int64_t c0, int64_t nl,
                    const Epilogue& ep, void* out, int64_t o0, int64_t C) {
  __m256i acc[P];
  for (int p = 0; p < P; p++) acc[p] = _mm256_setzero_si256();
  const __m256i xz = _mm256_set1_epi16(static_cast<int16_t>(pr.xzp));
  for (int64_t q = 0; q < pr.npairs; q++) {
    const __m256i wv = _mm256_load_si256(reinterpret_cast<const __m256i*>(pr.wpair + (q * pr.cpad + c0) * 2));
    const uint8_t* a0 = tp[2 * q] + c0;
    const uint8_t* b0 = tp[2 * q + 1] + c0;
    for (int p = 0; p < P; p++) {
      const __m128i ab = _mm_unpacklo_epi8(load8<M>(a0 + p * ss, nl), load8<M>(b0 + p * ss, nl));
      const __m256i d = _mm256_sub_epi16(_mm256_cvtepu8_epi16(ab), xz);
      acc[p] = _mm256_add_epi32(acc[p], _mm256_madd_epi16(d, wv));
    }
  }
  for (int p = 0; p < P; p++) epi8(ep, acc[p], c0, nl, out, o0 + p * C + c0);
}

template <int P>
void dwq_pixels_p(const uint8_t* const* tp, int64_t ss, const DwU8Prep& pr, const Epilogue& ep, void* out, int64_t o0,
                  int64_t C) {
  int64_t c0 = 0;
  for (; c0 + 8 <= C; c0 += 8) dwq_vec<P, false>(tp, ss, pr, c0, 8, ep, out, o0, C);
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

}  // namespace

void dw_u8s8_avx2(const ConvGeom& g, const uint8_t* x, const DwU8Prep& pr, const Epilogue& ep, void* out, int64_t r0,
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
