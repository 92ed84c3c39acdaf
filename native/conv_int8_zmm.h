// Shared by the AVX-512 int8 depthwise kernels (conv_int8_avx512.cc,
// conv_int8_avx512vnni.cc): the reference epilogue (epilogue_ref, op for op)
// on 16 channels of int32 sums, masked to m. Include only from files
// compiled with the AVX-512 flags; file-local (anonymous namespace).
#pragma once
#include <immintrin.h>

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

}  // namespace
}  // namespace qf
