// aarch64 peak loop with SDOT (FEAT_DotProd; this file is compiled with
// +dotprod): 12 independent accumulator chains in registers.
#include <arm_neon.h>

#include "peak.h"

#define QF_PEAK12(op) op(0) op(1) op(2) op(3) op(4) op(5) op(6) op(7) op(8) op(9) op(10) op(11)

namespace qf {
double peak_dot_neon(int64_t iters) {
#define QF_DECL(i) int32x4_t a##i = vdupq_n_s32(1);
  QF_PEAK12(QF_DECL)
#undef QF_DECL
  const int8x16_t x = vdupq_n_s8(3), y = vdupq_n_s8(-2);
  for (int64_t i = 0; i < iters; i++) {
#define QF_STEP(i) __asm__ volatile("sdot %0.4s, %1.16b, %2.16b" : "+w"(a##i) : "w"(x), "w"(y));
    QF_PEAK12(QF_STEP)
#undef QF_STEP
  }
  volatile int32_t sink = 0;
#define QF_SINK(i) sink = sink + vgetq_lane_s32(a##i, 0);
  QF_PEAK12(QF_SINK)
#undef QF_SINK
  (void)sink;
  return static_cast<double>(iters) * 12 * 16 * 2;
}
}  // namespace qf
