// Scalar reference variants of the quantization kernels (semantics: quant.h).
#include <cmath>
#include <cstring>

#include "quant.h"

namespace qf {
namespace {

// Round half to even under the default rounding mode (Node never changes it).
inline float rne(float v) { return std::nearbyint(v); }

// Clamp with the operand order of x86 MAXPS/MINPS: NaN stays NaN, -0 stays -0.
inline float clamp_lohi(float r, float lo, float hi) {
  float v = (r < lo) ? lo : r;
  return (v > hi) ? hi : v;
}

}  // namespace

void quantize_ref(const QuantRun& r) {
  const float* x = r.x;
  uint8_t* out = static_cast<uint8_t*>(r.out);
  for (int64_t i = 0; i < r.n; i++) {
    const int64_t p = r.per_elem ? i : 0;
    const float s = r.scale[p];
    const int32_t zp = r.zp[p];
    const float lo = static_cast<float>(r.qmin - zp), hi = static_cast<float>(r.qmax - zp);
    const float rc = clamp_lohi(rne(x[i] / s), lo, hi);
    const int32_t q = (rc != rc) ? zp : static_cast<int32_t>(rc) + zp;
    out[i] = static_cast<uint8_t>(q);  // low byte: the int8 or uint8 representation
  }
}

void fake_quantize_ref(const QuantRun& r) {
  const float* x = r.x;
  float* out = static_cast<float*>(r.out);
  for (int64_t i = 0; i < r.n; i++) {
    const int64_t p = r.per_elem ? i : 0;
    const float s = r.scale[p];
    const int32_t zp = r.zp[p];
    const float lo = static_cast<float>(r.qmin - zp), hi = static_cast<float>(r.qmax - zp);
    const float q = rne(x[i] / s);
    if (r.mask) r.mask[i] = (lo <= q && q <= hi) ? 1 : 0;
    out[i] = clamp_lohi(q, lo, hi) * s;
  }
}

void dequantize_ref(const DequantRun& r) {
  for (int64_t i = 0; i < r.n; i++) {
    const int64_t p = r.per_elem ? i : 0;
    const int32_t q = r.q_signed ? static_cast<int32_t>(static_cast<const int8_t*>(r.q)[i])
                                 : static_cast<int32_t>(static_cast<const uint8_t*>(r.q)[i]);
    r.out[i] = static_cast<float>(q - r.zp[p]) * r.scale[p];
  }
}

void fake_quantize_backward_ref(const float* g, float* gi, const uint8_t* mask, int64_t n, bool accumulate,
                                   bool /*stream*/) {
  for (int64_t i = 0; i < n; i++) {
    const bool pass = mask == nullptr || mask[i] != 0;
    if (accumulate) {
      if (pass) gi[i] = gi[i] + g[i];
    } else {
      gi[i] = pass ? g[i] : 0.0f;
    }
  }
}

void min_max_ref(const float* x, int64_t n, float* mn, float* mx, bool per_elem) {
  if (per_elem) {
    for (int64_t i = 0; i < n; i++) {
      const float v = x[i];
      if (v < mn[i]) mn[i] = v;  // NaN compares false: ignored
      if (v > mx[i]) mx[i] = v;
    }
    return;
  }
  float a = *mn, b = *mx;
  for (int64_t i = 0; i < n; i++) {
    const float v = x[i];
    if (v < a) a = v;
    if (v > b) b = v;
  }
  *mn = a;
  *mx = b;
}

}  // namespace qf
