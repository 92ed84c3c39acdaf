// fp32 GEMM, row-major: C[m,n] = alpha * op(A) * op(B) + beta * C.
// beta == 0: C is not read. Dispatches to the chosen variant; threaded on
// the native pool. Safe to call from other kernels (nested calls run inline
// on a pool thread).
#pragma once
#include <cstdint>

#include "core.h"

namespace qf {

using SgemmFn = void (*)(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                         int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

const Kernel<SgemmFn>& sgemm_kernel();

inline void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                  int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  sgemm_kernel().chosen().fn(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace qf
