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

void rt_conv_input_ref(const ConvInputArgs& A, int64_t r0, int64_t r1) {
  const ConvGeom& g = A.g;
  const int64_t C = g.c, CO = g.cout;
  for (int64_t r = r0; r < r1; r++) {
    const int64_t n = r / g.oh, oy = r % g.oh;
    for (int64_t ox = 0; ox < g.ow; ox++) {
      const int64_t o = (r * g.ow + ox) * CO;
      for (int64_t j = 0; j < CO; j++) {
        float acc = 0.f;
        for (int64_t ky = 0; ky < g.kh; ky++) {
          const int64_t iy = oy * g.sh - g.pt + ky * g.dh;
          if (iy < 0 || iy >= g.h) continue;
          for (int64_t kx = 0; kx < g.kw; kx++) {
            const int64_t ix = ox * g.sw - g.pl + kx * g.dw;
            if (ix < 0 || ix >= g.w) continue;
            const uint8_t* px = A.x + ((n * g.h + iy) * g.w + ix) * C;
            const float* wr = A.wt + (ky * g.kw + kx) * C * A.cpad + j;
            for (int64_t ci = 0; ci < C; ci++) acc = std::fma(A.table[ci * 256 + px[ci]], wr[ci * A.cpad], acc);
          }
        }
        float y = A.cbias ? acc + A.cbias[j] : acc;
        if (A.a || A.b) {
          const double a = A.a ? static_cast<double>(A.a[j]) : 1.0;
          const double b = A.b ? static_cast<double>(A.b[j]) : 0.0;
          y = static_cast<float>(static_cast<double>(y) * a + b);
        }
        switch (A.act) {
          case AffAct::None: break;
          case AffAct::Relu: y = y > 0.f ? y : 0.f; break;
          case AffAct::Prelu: y = y > 0.f ? y : y * A.slope[j]; break;
          case AffAct::Clamp: y = y < A.lo ? A.lo : (y > A.hi ? A.hi : y); break;
        }
        store(A.out, o + j, y);
      }
    }
  }
}

}  // namespace rt
}  // namespace qf
