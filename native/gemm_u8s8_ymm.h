// Shared by the ymm (AVX2-compiled) u8 x s8 GEMM microkernels,
// gemm_u8s8_avx2.cc and gemm_u8s8_avxvnni.cc: the epilogue of a 16-column
// register tile (reference semantics of epilogue_ref, op for op) and the
// row sums of A. Include only from files compiled with the AVX2 flags; all
// of it is file-local (anonymous namespace), so no AVX2 code can be merged
// into a baseline translation unit.
#pragma once
#include <immintrin.h>

#include <cstring>

#include "gemm_u8s8.h"

namespace qf {
namespace {

using gemm8::Tile;

inline __m256i lane_mask(int c) {  // lanes < c all ones
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(c), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// Epilogue of R rows x 16 columns held as acc[r][h] (columns 8h..8h+7).
template <int R>
__attribute__((always_inline)) inline void epilogue(const Tile& t, __m256i (&acc)[R][2]) {
  for (int h = 0; h < 2; h++) {
    const __m256i corr = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.corr + 8 * h));
    if (t.wzp) {
      const __m256i wz = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.wzp + 8 * h));
      for (int r = 0; r < R; r++)
        acc[r][h] = _mm256_sub_epi32(_mm256_add_epi32(acc[r][h], corr),
                                     _mm256_mullo_epi32(wz, _mm256_set1_epi32(t.rowsum[r])));
    } else {
      for (int r = 0; r < R; r++) acc[r][h] = _mm256_add_epi32(acc[r][h], corr);
    }
  }
  int cn[2];
  __m256i cmask[2];
  for (int h = 0; h < 2; h++) {
    const int c = t.cols - 8 * h;
    cn[h] = c < 0 ? 0 : (c > 8 ? 8 : c);
    cmask[h] = lane_mask(cn[h]);
  }
  if (t.type == OutType::S32) {
    int32_t* o = static_cast<int32_t*>(t.out);
    for (int r = 0; r < R; r++)
      for (int h = 0; h < 2; h++) {
        int32_t* d = o + r * t.ldo + 8 * h;
        if (cn[h] == 8) _mm256_storeu_si256(reinterpret_cast<__m256i*>(d), acc[r][h]);
        else if (cn[h] > 0) _mm256_maskstore_epi32(reinterpret_cast<int*>(d), cmask[h], acc[r][h]);
      }
    return;
  }
  const bool has_scale = t.scale != nullptr;
  const Act act = t.act;
  const __m256 zero = _mm256_setzero_ps();
  __m256 sc[2], bi[2], sl[2];
  for (int h = 0; h < 2; h++) {
    sc[h] = has_scale ? _mm256_loadu_ps(t.scale + 8 * h) : _mm256_set1_ps(1.f);
    bi[h] = t.bias ? _mm256_loadu_ps(t.bias + 8 * h) : zero;
    sl[h] = act == Act::Prelu ? _mm256_loadu_ps(t.slope + 8 * h) : zero;
  }
  auto affine = [&](int r, int h) -> __m256 {
    __m256 y = _mm256_cvtepi32_ps(acc[r][h]);
    if (has_scale) y = _mm256_mul_ps(y, sc[h]);
    y = _mm256_add_ps(y, bi[h]);
    if (act == Act::Relu) {
      y = _mm256_max_ps(y, zero);  // y > 0 ? y : +0 (NaN -> 0)
    } else if (act == Act::Prelu) {
      const __m256 neg = _mm256_cmp_ps(y, zero, _CMP_LT_OQ);
      y = _mm256_blendv_ps(y, _mm256_mul_ps(y, sl[h]), neg);
    }
    return y;
  };
  if (t.type == OutType::F32) {
    float* o = static_cast<float*>(t.out);
    for (int r = 0; r < R; r++)
      for (int h = 0; h < 2; h++) {
        float* d = o + r * t.ldo + 8 * h;
        if (cn[h] == 8) _mm256_storeu_ps(d, affine(r, h));
        else if (cn[h] > 0) _mm256_maskstore_ps(d, cmask[h], affine(r, h));
      }
    return;
  }
  const __m256 os = _mm256_set1_ps(t.out_scale), zp = _mm256_set1_ps(t.out_zp);
  const __m256 lo = _mm256_set1_ps(t.lo), hi = _mm256_set1_ps(t.hi);
  const bool u8 = t.type == OutType::U8;
  uint8_t* o = static_cast<uint8_t*>(t.out);
  for (int r = 0; r < R; r++)
    for (int h = 0; h < 2; h++) {
      if (cn[h] == 0) continue;
      __m256 y = _mm256_div_ps(affine(r, h), os);
      y = _mm256_round_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      y = _mm256_add_ps(y, zp);
      y = _mm256_max_ps(y, lo);  // NaN -> lo
      y = _mm256_min_ps(y, hi);
      const __m256i q = _mm256_cvttps_epi32(y);
      const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
      const __m128i b8 = u8 ? _mm_packus_epi16(w16, w16) : _mm_packs_epi16(w16, w16);
      uint8_t* d = o + r * t.ldo + 8 * h;
      if (cn[h] == 8) {
        _mm_storel_epi64(reinterpret_cast<__m128i*>(d), b8);
      } else {
        alignas(16) uint8_t tmp[16];
        _mm_store_si128(reinterpret_cast<__m128i*>(tmp), b8);
        std::memcpy(d, tmp, static_cast<size_t>(cn[h]));
      }
    }
}

void rowsum(const uint8_t* a, int64_t lda, int64_t rows, int64_t k, int32_t* out) {
  const __m256i zero = _mm256_setzero_si256();
  for (int64_t r = 0; r < rows; r++) {
    const uint8_t* p = a + r * lda;
    __m256i s = _mm256_setzero_si256();
    int64_t kk = 0;
    for (; kk + 32 <= k; kk += 32)
      s = _mm256_add_epi64(s, _mm256_sad_epu8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + kk)), zero));
    alignas(32) uint64_t l[4];
    _mm256_store_si256(reinterpret_cast<__m256i*>(l), s);
    uint64_t tot = l[0] + l[1] + l[2] + l[3];
    for (; kk < k; kk++) tot += p[kk];
    out[r] = static_cast<int32_t>(static_cast<uint32_t>(tot));
  }
}

}  // namespace
}  // namespace qf
