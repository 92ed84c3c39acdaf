// Peak loop, AVX2 + FMA (ymm vfmadd231ps); body: peak_loop.h.
#include <immintrin.h>

#include "peak.h"
#include "peak_loop.h"

namespace qf {
double peak_fma_ymm(int64_t iters) {
  QF_PEAK_BODY(__m256, _mm256_set1_ps(1.f), _mm256_set1_ps(0.9999999f), _mm256_set1_ps(1e-7f),
               "vfmadd231ps %1, %2, %0", "+x", "x", 8 * 2)
}
}  // namespace qf
