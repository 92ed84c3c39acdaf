// Scalar reference fp32 GEMM: C = alpha * op(A) * op(B) + beta * C (row-major).
// Deliberately plain: one dot product per C element, accumulated in double
// in ascending k order, then rounded once. It is the yardstick the fast
// variants are tested against, so it favours obviousness over speed (rows of
// C are split over the thread pool only to keep tests quick).
#include <cstdint>

#include "core.h"

namespace qf {

void sgemm_ref(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
               const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  parallel_for(m, 16, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      for (int64_t j = 0; j < n; j++) {
        double acc = 0.0;
        if (alpha != 0.f) {
          for (int64_t p = 0; p < k; p++) {
            const float av = trans_a ? a[p * lda + i] : a[i * lda + p];  // op(A)[i, p]
            const float bv = trans_b ? b[j * ldb + p] : b[p * ldb + j];  // op(B)[p, j]
            acc += static_cast<double>(av) * static_cast<double>(bv);
          }
        }
        // alpha == 0: A and B are not read (BLAS convention); beta == 0: C is not read.
        const double prod = static_cast<double>(alpha) * acc;
        float& out = c[i * ldc + j];
        out = beta == 0.f ? static_cast<float>(prod) : static_cast<float>(prod + static_cast<double>(beta) * out);
      }
    }
  });
}

}  // namespace qf
