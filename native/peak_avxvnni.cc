#include <immintrin.h>
#include "peak.h"
namespace qf {
// 12 independent accumulator chains kept in registers (inline asm: the
// compiler can neither merge nor drop them). Latency 4 x 2 pipes needs >= 8.
double peak_vnni_ymm(int64_t iters) {
  __m256i a0 = _mm256_set1_epi32(1), a1 = _mm256_set1_epi32(1), a2 = _mm256_set1_epi32(1), a3 = _mm256_set1_epi32(1), a4 = _mm256_set1_epi32(1), a5 = _mm256_set1_epi32(1), a6 = _mm256_set1_epi32(1), a7 = _mm256_set1_epi32(1), a8 = _mm256_set1_epi32(1), a9 = _mm256_set1_epi32(1), a10 = _mm256_set1_epi32(1), a11 = _mm256_set1_epi32(1);
  const __m256i x = _mm256_set1_epi8(3), y = _mm256_set1_epi8(-2);
  for (int64_t i = 0; i < iters; i++) {
    __asm__ volatile("%{vex%} vpdpbusd %[x], %[y], %[a0]\n\t%{vex%} vpdpbusd %[x], %[y], %[a1]\n\t%{vex%} vpdpbusd %[x], %[y], %[a2]\n\t%{vex%} vpdpbusd %[x], %[y], %[a3]\n\t%{vex%} vpdpbusd %[x], %[y], %[a4]\n\t%{vex%} vpdpbusd %[x], %[y], %[a5]\n\t%{vex%} vpdpbusd %[x], %[y], %[a6]\n\t%{vex%} vpdpbusd %[x], %[y], %[a7]\n\t%{vex%} vpdpbusd %[x], %[y], %[a8]\n\t%{vex%} vpdpbusd %[x], %[y], %[a9]\n\t%{vex%} vpdpbusd %[x], %[y], %[a10]\n\t%{vex%} vpdpbusd %[x], %[y], %[a11]"
                     : [a0] "+x"(a0), [a1] "+x"(a1), [a2] "+x"(a2), [a3] "+x"(a3), [a4] "+x"(a4), [a5] "+x"(a5), [a6] "+x"(a6), [a7] "+x"(a7), [a8] "+x"(a8), [a9] "+x"(a9), [a10] "+x"(a10), [a11] "+x"(a11)
                     : [x] "x"(x), [y] "x"(y));
  }
  volatile __m256i sink;
  sink = a0;
  sink = a1;
  sink = a2;
  sink = a3;
  sink = a4;
  sink = a5;
  sink = a6;
  sink = a7;
  sink = a8;
  sink = a9;
  sink = a10;
  sink = a11;
  (void)sink;
  return static_cast<double>(iters) * 12 * 32 * 2;
}
}  // namespace qf
