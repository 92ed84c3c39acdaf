// Peak loop, aarch64 SDOT (FEAT_DotProd; compiled with +dotprod); body: peak_loop.h.
#include <arm_neon.h>

#include "peak.h"
#include "peak_loop.h"

namespace qf {
double peak_dot_neon(int64_t iters) {
  QF_PEAK_BODY(int32x4_t, vdupq_n_s32(1), vreinterpretq_s32_s8(vdupq_n_s8(3)), vreinterpretq_s32_s8(vdupq_n_s8(-2)),
               "sdot %0.4s, %1.16b, %2.16b", "+w", "w", 16 * 2)
}
}  // namespace qf
