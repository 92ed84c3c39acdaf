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

constexpr int64_t kDwLanes = 8;

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

// The vector layer of conv_int8_rows.h.
using DwAcc = __m256i;
using DwW = __m256i;
using DwX = __m256i;
using DwTail = int64_t;
inline DwTail dw_tail(int64_t nl) { return nl; }
inline DwX dw_xz(int32_t xzp) { return _mm256_set1_epi16(static_cast<int16_t>(xzp)); }
inline DwAcc dw_zero() { return _mm256_setzero_si256(); }
inline DwW dw_wload(const int16_t* w) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(w)); }
template <bool M>
inline DwAcc dw_madd(DwAcc acc, const uint8_t* a, const uint8_t* b, DwTail nl, DwX xz, DwW w) {
  const __m128i ab = _mm_unpacklo_epi8(load8<M>(a, nl), load8<M>(b, nl));
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_sub_epi16(_mm256_cvtepu8_epi16(ab), xz), w));
}
inline void dw_store(const Epilogue& ep, DwAcc acc, int64_t c0, DwTail nl, void* out, int64_t idx) {
  epi8(ep, acc, c0, nl, out, idx);
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
