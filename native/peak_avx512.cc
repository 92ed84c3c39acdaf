// Peak loop, AVX-512 (zmm vfmadd231ps); body: peak_loop.h.
#include <immintrin.h>

#include "peak.h"
#include "peak_loop.h"

namespace qf {
double peak_fma_zmm(int64_t iters) {
  QF_PEAK_BODY(__m512, _mm512_set1_ps(1.f), _mm512_set1_ps(0.9999999f), _mm512_set1_ps(1e-7f),
               "vfmadd231ps %1, %2, %0", "+v", "v", 16 * 2)
}
}  // namespace qf
