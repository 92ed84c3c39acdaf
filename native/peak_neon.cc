// aarch64 peak loops (plain Advanced SIMD; the dot-product one in
// peak_neondot.cc): 12 independent accumulator chains in registers.
#include <arm_neon.h>

#include "peak.h"

#define QF_PEAK12(op) op(0) op(1) op(2) op(3) op(4) op(5) op(6) op(7) op(8) op(9) op(10) op(11)

namespace qf {
double peak_fma_neon(int64_t iters) {
#define QF_DECL(i) float32x4_t a##i = vdupq_n_f32(1.f);
  QF_PEAK12(QF_DECL)
#undef QF_DECL
  const float32x4_t x = vdupq_n_f32(0.9999999f), y = vdupq_n_f32(1e-7f);
  for (int64_t i = 0; i < iters; i++) {
#define QF_STEP(i) __asm__ volatile("fmla %0.4s, %1.4s, %2.4s" : "+w"(a##i) : "w"(x), "w"(y));
    QF_PEAK12(QF_STEP)
#undef QF_STEP
  }
  volatile float sink = 0.f;
#define QF_SINK(i) sink = sink + vgetq_lane_f32(a##i, 0);
  QF_PEAK12(QF_SINK)
#undef QF_SINK
  (void)sink;
  return static_cast<double>(iters) * 12 * 4 * 2;
}
}  // namespace qf
