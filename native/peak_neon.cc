// Peak loop, aarch64 Advanced SIMD (fmla); body: peak_loop.h.
#include <arm_neon.h>

#include "peak.h"
#include "peak_loop.h"

namespace qf {
double peak_fma_neon(int64_t iters) {
  QF_PEAK_BODY(float32x4_t, vdupq_n_f32(1.f), vdupq_n_f32(0.9999999f), vdupq_n_f32(1e-7f),
               "fmla %0.4s, %1.4s, %2.4s", "+w", "w", 4 * 2)
}
}  // namespace qf
