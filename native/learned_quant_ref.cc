// Scalar reference variants of the learned-range kernels (semantics:
// learned_quant.h): the JavaScript loops of lib/distill/learned-range.ts and
// lib/quant/weight-range.ts, element by element.
#include <cmath>

#include "learned_quant.h"

namespace qf {
namespace {

inline float rne(float v) { return std::nearbyint(v); }

}  // namespace

void qdrop_fake_quantize_ref(const QDropRun& r) {
  const float s = r.scale;
  const float lo = static_cast<float>(r.qmin - r.zp), hi = static_cast<float>(r.qmax - r.zp);
  uint32_t st = r.state;
  for (int64_t i = 0; i < r.n; i++) {
    st ^= st << 13;
    st ^= st >> 17;
    st ^= st << 5;
    if (st < r.threshold) {
      r.drop[i] = 1;
      r.out[i] = r.x[i];
    } else {
      r.drop[i] = 0;
      const float q = rne(r.x[i] / s);
      float v = (q < lo) ? lo : q;
      v = (v > hi) ? hi : v;
      r.out[i] = v * s;
    }
  }
}

void learned_range_backward_ref(const RangeGradRun& r, RangeGradSums* sums) {
  const float s = r.scale;
  const float lo = static_cast<float>(r.qmin - r.zp), hi = static_cast<float>(r.qmax - r.zp);
  double sl = sums ? sums->lo : 0, sh = sums ? sums->hi : 0, ss = sums ? sums->s : 0;
  for (int64_t i = 0; i < r.n; i++) {
    const float g = r.g[i];
    if (r.drop && r.drop[i]) {
      if (r.gi) r.gi[i] = g;
      continue;
    }
    const float xs = r.x[i] / s;
    const float q = rne(xs);
    if (q < lo) {
      if (r.gi) r.gi[i] = 0.0f;
      sl += g;
    } else if (q > hi) {
      if (r.gi) r.gi[i] = 0.0f;
      sh += g;
    } else {
      if (r.gi) r.gi[i] = g;
      ss += static_cast<double>(g) * (static_cast<double>(q) - static_cast<double>(xs));  // as JS: in float64
    }
  }
  if (sums) {
    sums->lo = sl;
    sums->hi = sh;
    sums->s = ss;
  }
}

}  // namespace qf
