#include <immintrin.h>
#include "peak.h"
namespace qf {
// 12 independent accumulator chains kept in registers (inline asm: the
// compiler can neither merge nor drop them). Latency 4 x 2 pipes needs >= 8.
double peak_fma_ymm(int64_t iters) {
  __m256 a0 = _mm256_set1_ps(1.f), a1 = _mm256_set1_ps(1.f), a2 = _mm256_set1_ps(1.f), a3 = _mm256_set1_ps(1.f), a4 = _mm256_set1_ps(1.f), a5 = _mm256_set1_ps(1.f), a6 = _mm256_set1_ps(1.f), a7 = _mm256_set1_ps(1.f), a8 = _mm256_set1_ps(1.f), a9 = _mm256_set1_ps(1.f), a10 = _mm256_set1_ps(1.f), a11 = _mm256_set1_ps(1.f);
  const __m256 x = _mm256_set1_ps(0.9999999f), y = _mm256_set1_ps(1e-7f);
  for (int64_t i = 0; i < iters; i++) {
    __asm__ volatile("vfmadd231ps %[x], %[y], %[a0]\n\tvfmadd231ps %[x], %[y], %[a1]\n\tvfmadd231ps %[x], %[y], %[a2]\n\tvfmadd231ps %[x], %[y], %[a3]\n\tvfmadd231ps %[x], %[y], %[a4]\n\tvfmadd231ps %[x], %[y], %[a5]\n\tvfmadd231ps %[x], %[y], %[a6]\n\tvfmadd231ps %[x], %[y], %[a7]\n\tvfmadd231ps %[x], %[y], %[a8]\n\tvfmadd231ps %[x], %[y], %[a9]\n\tvfmadd231ps %[x], %[y], %[a10]\n\tvfmadd231ps %[x], %[y], %[a11]"
                     : [a0] "+x"(a0), [a1] "+x"(a1), [a2] "+x"(a2), [a3] "+x"(a3), [a4] "+x"(a4), [a5] "+x"(a5), [a6] "+x"(a6), [a7] "+x"(a7), [a8] "+x"(a8), [a9] "+x"(a9), [a10] "+x"(a10), [a11] "+x"(a11)
                     : [x] "x"(x), [y] "x"(y));
  }
  volatile __m256 sink;
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
  return static_cast<double>(iters) * 12 * 8 * 2;
}
}  // namespace qf
