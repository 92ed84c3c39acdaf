// Peak loop, AVX-512 VNNI (zmm vpdpbusd); body: peak_loop.h.
#include <immintrin.h>

#include "peak.h"
#include "peak_loop.h"

namespace qf {
double peak_vnni_zmm(int64_t iters) {
  QF_PEAK_BODY(__m512i, _mm512_set1_epi32(1), _mm512_set1_epi8(3), _mm512_set1_epi8(-2),
               "vpdpbusd %1, %2, %0", "+v", "v", 64 * 2)
}
}  // namespace qf
