#include <immintrin.h>
#include "peak.h"
namespace qf {
// 12 independent accumulator chains kept in registers (inline asm: the
// compiler can neither merge nor drop them). Latency 4 x 2 pipes needs >= 8.
double peak_vnni_zmm(int64_t iters) {
  __m512i a0 = _mm512_set1_epi32(1), a1 = _mm512_set1_epi32(1), a2 = _mm512_set1_epi32(1), a3 = _mm512_set1_epi32(1), a4 = _mm512_set1_epi32(1), a5 = _mm512_set1_epi32(1), a6 = _mm512_set1_epi32(1), a7 = _mm512_set1_epi32(1), a8 = _mm512_set1_epi32(1), a9 = _mm512_set1_epi32(1), a10 = _mm512_set1_epi32(1), a11 = _mm512_set1_epi32(1);
  const __m512i x = _mm512_set1_epi8(3), y = _mm512_set1_epi8(-2);
  for (int64_t i = 0; i < iters; i++) {
    __asm__ volatile("vpdpbusd %[x], %[y], %[a0]\n\tvpdpbusd %[x], %[y], %[a1]\n\tvpdpbusd %[x], %[y], %[a2]\n\tvpdpbusd %[x], %[y], %[a3]\n\tvpdpbusd %[x], %[y], %[a4]\n\tvpdpbusd %[x], %[y], %[a5]\n\tvpdpbusd %[x], %[y], %[a6]\n\tvpdpbusd %[x], %[y], %[a7]\n\tvpdpbusd %[x], %[y], %[a8]\n\tvpdpbusd %[x], %[y], %[a9]\n\tvpdpbusd %[x], %[y], %[a10]\n\tvpdpbusd %[x], %[y], %[a11]"
                     : [a0] "+v"(a0), [a1] "+v"(a1), [a2] "+v"(a2), [a3] "+v"(a3), [a4] "+v"(a4), [a5] "+v"(a5), [a6] "+v"(a6), [a7] "+v"(a7), [a8] "+v"(a8), [a9] "+v"(a9), [a10] "+v"(a10), [a11] "+v"(a11)
                     : [x] "v"(x), [y] "v"(y));
  }
  volatile __m512i sink;
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
  return static_cast<double>(iters) * 12 * 64 * 2;
}
}  // namespace qf
