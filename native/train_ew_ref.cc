// Scalar references of the training-step elementwise kernels (train_ew.h).
#include <cmath>

#include "train_ew.h"

namespace qf {
namespace tew {

void bn_stats_ref(const float* x, int64_t C, const double* center, int64_t r0, int64_t r1, double* s1, double* s2) {
  for (int64_t c = 0; c < C; c++) {
    double a = 0, b = 0;
    const double k = center[c];
    for (int64_t r = r0; r < r1; r++) {
      const double d = static_cast<double>(x[r * C + c]) - k;
      a = a + d;
      b = b + d * d;
    }
    s1[c] = a;
    s2[c] = b;
  }
}

void bn_grad_sums_ref(const float* x, const float* g, int64_t C, const double* center, int64_t r0, int64_t r1,
                      double* sg, double* sgx) {
  for (int64_t c = 0; c < C; c++) {
    double a = 0, b = 0;
    const double k = center[c];
    for (int64_t r = r0; r < r1; r++) {
      const double gv = static_cast<double>(g[r * C + c]);
      a = a + gv;
      b = b + gv * (static_cast<double>(x[r * C + c]) - k);
    }
    sg[c] = a;
    sgx[c] = b;
  }
}

void channel_affine_ref(const AffineArgs& A, int64_t r0, int64_t r1) {
  const int64_t C = A.C;
  for (int64_t r = r0; r < r1; r++)
    for (int64_t c = 0; c < C; c++) {
      const int64_t i = r * C + c;
      float y = A.a ? std::fma(A.x[i], A.a[c], A.b[c]) : A.x[i];
      if (A.slope) y = y > 0.f ? y : y * A.slope[c];
      A.y[i] = y;
    }
}

void bn_backward_dx_ref(const DxArgs& A, int64_t r0, int64_t r1) {
  const int64_t C = A.C;
  for (int64_t r = r0; r < r1; r++)
    for (int64_t c = 0; c < C; c++) {
      const int64_t i = r * C + c;
      float t = std::fma(A.a[c], A.g[i], A.b[c]);
      if (A.k) t = std::fma(A.k[c], A.x[i] - A.m[c], t);
      A.gi[i] = t;
    }
}

void prelu_backward_ref(const float* x, const float* g, const uint8_t* mask, float* gi, int64_t C,
                        const float* slope, int64_t r0, int64_t r1, double* sa) {
  for (int64_t c = 0; c < C; c++) {
    double a = 0;
    const float s = slope[c];
    for (int64_t r = r0; r < r1; r++) {
      const int64_t i = r * C + c;
      const float xv = x[i], gv = (mask && mask[i] == 0) ? 0.f : g[i];
      const bool pos = xv > 0.f;
      const float neg = pos ? 0.f : xv;
      gi[i] = pos ? gv : gv * s;
      a = a + static_cast<double>(gv) * static_cast<double>(neg);
    }
    sa[c] = a;
  }
}

void bn_prelu_sums_ref(const BnPreluArgs& A, int64_t r0, int64_t r1, double* sg, double* sgx, double* sa) {
  const int64_t C = A.C;
  for (int64_t c = 0; c < C; c++) {
    double s0 = 0, s1 = 0, s2 = 0;
    const double k = A.center[c];
    const float a = A.a[c], b = A.b[c], s = A.slope[c];
    for (int64_t r = r0; r < r1; r++) {
      const int64_t i = r * C + c;
      const float xv = A.x[i];
      const float y = std::fma(xv, a, b);
      const float gv = (A.mask && A.mask[i] == 0) ? 0.f : A.g[i];
      const bool pos = y > 0.f;
      const float neg = pos ? 0.f : y;
      const float gy = pos ? gv : gv * s;
      A.gy[i] = gy;
      s0 = s0 + static_cast<double>(gy);
      s1 = s1 + static_cast<double>(gy) * (static_cast<double>(xv) - k);
      s2 = s2 + static_cast<double>(gv) * static_cast<double>(neg);
    }
    sg[c] = s0;
    sgx[c] = s1;
    sa[c] = s2;
  }
}

}  // namespace tew
}  // namespace qf
