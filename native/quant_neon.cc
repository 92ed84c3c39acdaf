// Quantization kernels for aarch64 Advanced SIMD: quantize, fakeQuantize,
// dequantize, fakeQuantizeBackward, minMax (semantics: quant.h; bit-exact
// with quant_ref.cc but for minMax's unspecified zero sign). Four lanes a
// step; the last n % 4 elements go through the reference code. The clamps
// are compare-and-select in the reference's order (NaN stays NaN, -0 stays
// -0); rounding is vrndnq (half to even), division IEEE.
#include <arm_neon.h>

#include <cstring>

#include "quant.h"

namespace qf {
namespace {

struct Params {
  float32x4_t s, lo, hi;
  int32x4_t zp;
};

inline Params params(const QuantRun& r, int64_t i) {
  Params p;
  if (r.per_elem) {
    p.s = vld1q_f32(r.scale + i);
    p.zp = vld1q_s32(r.zp + i);
  } else {
    p.s = vdupq_n_f32(r.scale[0]);
    p.zp = vdupq_n_s32(r.zp[0]);
  }
  p.lo = vcvtq_f32_s32(vsubq_s32(vdupq_n_s32(r.qmin), p.zp));
  p.hi = vcvtq_f32_s32(vsubq_s32(vdupq_n_s32(r.qmax), p.zp));
  return p;
}

inline float32x4_t clamp_lohi(float32x4_t r, float32x4_t lo, float32x4_t hi) {
  const float32x4_t v = vbslq_f32(vcltq_f32(r, lo), lo, r);
  return vbslq_f32(vcgtq_f32(v, hi), hi, v);
}

// The rest of a run from element i (out elements of out_size bytes).
QuantRun rest(const QuantRun& r, int64_t i, size_t out_size) {
  QuantRun t = r;
  t.n = r.n - i;
  t.x = r.x + i;
  t.out = static_cast<char*>(r.out) + i * static_cast<int64_t>(out_size);
  if (r.mask) t.mask = r.mask + i;
  if (r.per_elem) {
    t.scale = r.scale + i;
    t.zp = r.zp + i;
  }
  return t;
}

}  // namespace

void quantize_neon(const QuantRun& r) {
  uint8_t* out = static_cast<uint8_t*>(r.out);
  int64_t i = 0;
  for (; i + 4 <= r.n; i += 4) {
    const Params p = params(r, i);
    const float32x4_t rc = clamp_lohi(vrndnq_f32(vdivq_f32(vld1q_f32(r.x + i), p.s)), p.lo, p.hi);
    const uint32x4_t nan = vmvnq_u32(vceqq_f32(rc, rc));
    const int32x4_t q = vbslq_s32(nan, p.zp, vaddq_s32(vcvtq_s32_f32(rc), p.zp));
    const int16x4_t h = vmovn_s32(q);  // low bytes survive both narrowings
    const uint32_t b = vget_lane_u32(vreinterpret_u32_s8(vmovn_s16(vcombine_s16(h, h))), 0);
    std::memcpy(out + i, &b, 4);
  }
  if (i < r.n) quantize_ref(rest(r, i, 1));
}

void fake_quantize_neon(const QuantRun& r) {
  float* out = static_cast<float*>(r.out);
  int64_t i = 0;
  for (; i + 4 <= r.n; i += 4) {
    const Params p = params(r, i);
    const float32x4_t q = vrndnq_f32(vdivq_f32(vld1q_f32(r.x + i), p.s));
    if (r.mask) {
      const uint32x4_t in = vshrq_n_u32(vandq_u32(vcleq_f32(p.lo, q), vcleq_f32(q, p.hi)), 31);
      const uint16x4_t h = vmovn_u32(in);
      const uint32_t b = vget_lane_u32(vreinterpret_u32_u8(vmovn_u16(vcombine_u16(h, h))), 0);
      std::memcpy(r.mask + i, &b, 4);
    }
    vst1q_f32(out + i, vmulq_f32(clamp_lohi(q, p.lo, p.hi), p.s));
  }
  if (i < r.n) fake_quantize_ref(rest(r, i, 4));
}

void dequantize_neon(const DequantRun& r) {
  int64_t i = 0;
  for (; i + 4 <= r.n; i += 4) {
    uint32_t b;
    std::memcpy(&b, static_cast<const uint8_t*>(r.q) + i, 4);
    const uint8x8_t v = vreinterpret_u8_u32(vdup_n_u32(b));
    const int32x4_t q = r.q_signed ? vmovl_s16(vget_low_s16(vmovl_s8(vreinterpret_s8_u8(v))))
                                   : vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(vmovl_u8(v))));
    const float32x4_t s = r.per_elem ? vld1q_f32(r.scale + i) : vdupq_n_f32(r.scale[0]);
    const int32x4_t zp = r.per_elem ? vld1q_s32(r.zp + i) : vdupq_n_s32(r.zp[0]);
    vst1q_f32(r.out + i, vmulq_f32(vcvtq_f32_s32(vsubq_s32(q, zp)), s));
  }
  if (i < r.n) {
    DequantRun t = r;
    t.n = r.n - i;
    t.q = static_cast<const uint8_t*>(r.q) + i;
    t.out = r.out + i;
    if (r.per_elem) {
      t.scale = r.scale + i;
      t.zp = r.zp + i;
    }
    dequantize_ref(t);
  }
}

}  // namespace qf

namespace qf {

void fake_quantize_backward_neon(const float* g, float* gi, const uint8_t* mask, int64_t n, bool accumulate,
                                 bool /*stream*/) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const float32x4_t gv = vld1q_f32(g + i);
    uint32x4_t pass = vdupq_n_u32(~0u);
    if (mask) {
      uint32_t b;
      std::memcpy(&b, mask + i, 4);
      const uint32x4_t m = vmovl_u16(vget_low_u16(vmovl_u8(vreinterpret_u8_u32(vdup_n_u32(b)))));
      pass = vmvnq_u32(vceqq_u32(m, vdupq_n_u32(0)));
    }
    if (accumulate) {
      const float32x4_t cur = vld1q_f32(gi + i);
      vst1q_f32(gi + i, vbslq_f32(pass, vaddq_f32(cur, gv), cur));
    } else {
      vst1q_f32(gi + i, vbslq_f32(pass, gv, vdupq_n_f32(0.f)));
    }
  }
  if (i < n) fake_quantize_backward_ref(g + i, gi + i, mask ? mask + i : nullptr, n - i, accumulate, false);
}

void min_max_neon(const float* x, int64_t n, float* mn, float* mx, bool per_elem) {
  int64_t i = 0;
  if (per_elem) {
    for (; i + 4 <= n; i += 4) {
      const float32x4_t v = vld1q_f32(x + i), a = vld1q_f32(mn + i), b = vld1q_f32(mx + i);
      vst1q_f32(mn + i, vbslq_f32(vcltq_f32(v, a), v, a));  // NaN compares false: ignored
      vst1q_f32(mx + i, vbslq_f32(vcgtq_f32(v, b), v, b));
    }
    if (i < n) min_max_ref(x + i, n - i, mn + i, mx + i, true);
    return;
  }
  float32x4_t a = vdupq_n_f32(*mn), b = vdupq_n_f32(*mx);
  for (; i + 4 <= n; i += 4) {
    const float32x4_t v = vld1q_f32(x + i);
    a = vbslq_f32(vcltq_f32(v, a), v, a);
    b = vbslq_f32(vcgtq_f32(v, b), v, b);
  }
  float la[4], lb[4];
  vst1q_f32(la, a);
  vst1q_f32(lb, b);
  for (int l = 0; l < 4; l++) {
    if (la[l] < *mn) *mn = la[l];
    if (lb[l] > *mx) *mx = lb[l];
  }
  if (i < n) min_max_ref(x + i, n - i, mn, mx, false);
}

}  // namespace qf
