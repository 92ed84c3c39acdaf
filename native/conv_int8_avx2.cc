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

}  // namespace
}  // namespace qf

#include "conv_int8_rows.h"

namespace qf {

void dw_u8s8_avx2(const ConvGeom& g, const uint8_t* x, const DwU8Prep& pr, const Epilogue& ep, void* out, int64_t r0,
                  int64_t r1) {
  dw_rows(g, x, pr, ep, out, r0, r1);
}

}  // namespace qf
