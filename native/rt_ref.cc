// Scalar references of the runtime's elementwise kernels (rt.h).
#include <cmath>

#include "rt.h"

namespace qf {
namespace rt {

namespace {

inline float load(const Operand& o, int64_t i) {
  if (o.type == VType::F32) return static_cast<const float*>(o.data)[i];
  const int32_t q = static_cast<const uint8_t*>(o.data)[i];
  return static_cast<float>(q - o.zp) * o.scale;
}

inline void store(const Output& o, int64_t i, float y) {
  if (o.type == VType::F32) {
    static_cast<float*>(o.data)[i] = y;
    return;
  }
  const float t = std::nearbyint(y / o.scale) + static_cast<float>(o.zp);
  const float lo = static_cast<float>(o.lo), hi = static_cast<float>(o.hi);
  const float q = t >= lo ? (t < hi ? t : hi) : lo;  // NaN -> lo
  static_cast<uint8_t*>(o.data)[i] = static_cast<uint8_t>(static_cast<int32_t>(q));
}

}  // namespace

void rt_add_ref(const AddArgs& g, int64_t i0, int64_t i1) {
  for (int64_t i = i0; i < i1; i++) {
    const float a = load(g.a, i), b = load(g.b, i);
    store(g.out, i, a + b);
  }
}

void rt_affine_ref(const AffineArgs& g, int64_t r0, int64_t r1) {
  const int64_t C = g.channels;
  for (int64_t r = r0; r < r1; r++) {
    for (int64_t c = 0; c < C; c++) {
      const int64_t i = r * C + c;
      const float v = load(g.x, i);
      const double a = g.a ? static_cast<double>(g.a[c]) : 1.0;
      const double b = g.b ? static_cast<double>(g.b[c]) : 0.0;
      float y = static_cast<float>(static_cast<double>(v) * a + b);
      switch (g.act) {
        case AffAct::None: break;
        case AffAct::Relu: y = y > 0.f ? y : 0.f; break;
        case AffAct::Prelu: y = y > 0.f ? y : y * g.slope[c]; break;
        case AffAct::Clamp: y = y < g.lo ? g.lo : (y > g.hi ? g.hi : y); break;
      }
      store(g.out, i, y);
    }
  }
}

void rt_lut_ref(const LutArgs& g, int64_t r0, int64_t r1) {
  const int64_t C = g.channels;
  if (g.out_type == VType::U8) {
    const uint8_t* t = static_cast<const uint8_t*>(g.table);
    uint8_t* o = static_cast<uint8_t*>(g.out);
    for (int64_t r = r0; r < r1; r++)
      for (int64_t c = 0; c < C; c++) o[r * C + c] = t[c * 256 + g.x[r * C + c]];
  } else {
    const float* t = static_cast<const float*>(g.table);
    float* o = static_cast<float*>(g.out);
    for (int64_t r = r0; r < r1; r++)
      for (int64_t c = 0; c < C; c++) o[r * C + c] = t[c * 256 + g.x[r * C + c]];
  }
}

}  // namespace rt
}  // namespace qf
