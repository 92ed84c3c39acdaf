// The int8 epilogue (epilogue_ref, op for op: no FMA, IEEE division, round to
// nearest even, compare-and-select so NaN -> clamp_min) on Advanced SIMD
// vectors, shared by the aarch64 int8 kernels (gemm_u8s8_neon_impl.h,
// conv_int8_neon.cc, conv_int8_neondot.cc). Include only from aarch64
// kernel files; file-local (anonymous namespace).
#pragma once
#include <arm_neon.h>

#include <cstdint>
#include <cstring>

#include "gemm_u8s8.h"

namespace qf {
namespace {

// int32 sums -> float, times the scale (when scaled), plus the bias, then the activation.
inline float32x4_t epi_act(int32x4_t acc, bool scaled, float32x4_t sc, float32x4_t bi, Act act, float32x4_t sl) {
  const float32x4_t zero = vdupq_n_f32(0.f);
  float32x4_t x = vcvtq_f32_s32(acc);
  if (scaled) x = vmulq_f32(x, sc);
  x = vaddq_f32(x, bi);
  if (act == Act::Relu) x = vbslq_f32(vcgtq_f32(x, zero), x, zero);  // NaN, -0 -> +0
  else if (act == Act::Prelu) x = vbslq_f32(vcltq_f32(x, zero), vmulq_f32(x, sl), x);
  return x;
}

// y / out_scale rounded to nearest even, plus the zero point, clamped to [lo, hi]
// (NaN -> lo): an integer within the out type's range, narrowed to int16.
inline int16x4_t epi_quant(float32x4_t y, float32x4_t os, float32x4_t zp, float32x4_t lo, float32x4_t hi) {
  float32x4_t q = vaddq_f32(vrndnq_f32(vdivq_f32(y, os)), zp);
  q = vbslq_f32(vcgeq_f32(q, lo), q, lo);
  q = vbslq_f32(vcgtq_f32(q, hi), hi, q);
  return vmovn_s32(vcvtq_s32_f32(q));
}

// n (<= 4) floats from p, zeros after them; no read past p + n.
inline float32x4_t load_f32(const float* p, int64_t n) {
  if (n >= 4) return vld1q_f32(p);
  float t[4] = {0.f, 0.f, 0.f, 0.f};
  if (n > 0) std::memcpy(t, p, static_cast<size_t>(n) * 4);
  return vld1q_f32(t);
}

// The epilogue ep on the int32 sums of 8 channels from c0 (a[0]: c0..c0+3,
// a[1]: c0+4..c0+7), nl of them live (1..8), stored at element idx of out.
inline void epi8(const Epilogue& ep, const int32x4_t (&a)[2], int64_t c0, int64_t nl, void* out, int64_t idx) {
  if (ep.type == OutType::S32) {
    int32_t t[8];
    vst1q_s32(t, a[0]);
    vst1q_s32(t + 4, a[1]);
    std::memcpy(static_cast<int32_t*>(out) + idx, t, static_cast<size_t>(nl) * 4);
    return;
  }
  const float32x4_t zero = vdupq_n_f32(0.f);
  float32x4_t y[2];
  for (int h = 0; h < 2; h++) {
    const int64_t j = c0 + 4 * h, k = nl - 4 * h;
    const float32x4_t sc = ep.scale ? load_f32(ep.scale + j, k) : zero;
    const float32x4_t bi = ep.bias ? load_f32(ep.bias + j, k) : zero;
    const float32x4_t sl = ep.act == Act::Prelu ? load_f32(ep.slope + j, k) : zero;
    y[h] = epi_act(a[h], ep.scale != nullptr, sc, bi, ep.act, sl);
  }
  if (ep.type == OutType::F32) {
    float t[8];
    vst1q_f32(t, y[0]);
    vst1q_f32(t + 4, y[1]);
    std::memcpy(static_cast<float*>(out) + idx, t, static_cast<size_t>(nl) * 4);
    return;
  }
  const float32x4_t os = vdupq_n_f32(ep.out_scale), zp = vdupq_n_f32(static_cast<float>(ep.out_zp));
  const float32x4_t lo = vdupq_n_f32(static_cast<float>(ep.clamp_min));
  const float32x4_t hi = vdupq_n_f32(static_cast<float>(ep.clamp_max));
  const int8x8_t b8 = vmovn_s16(vcombine_s16(epi_quant(y[0], os, zp, lo, hi), epi_quant(y[1], os, zp, lo, hi)));
  int8_t* d = static_cast<int8_t*>(out) + idx;
  if (nl == 8) {
    vst1_s8(d, b8);
  } else {
    int8_t t[8];
    vst1_s8(t, b8);
    std::memcpy(d, t, static_cast<size_t>(nl));
  }
}

}  // namespace
}  // namespace qf
