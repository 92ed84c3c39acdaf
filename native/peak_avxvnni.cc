// Peak loop, AVX-VNNI (VEX ymm vpdpbusd); body: peak_loop.h.
#include <immintrin.h>

#include "peak.h"
#include "peak_loop.h"

namespace qf {
double peak_vnni_ymm(int64_t iters) {
  QF_PEAK_BODY(__m256i, _mm256_set1_epi32(1), _mm256_set1_epi8(3), _mm256_set1_epi8(-2),
               "%{vex%} vpdpbusd %1, %2, %0", "+x", "x", 32 * 2)
}
}  // namespace qf
