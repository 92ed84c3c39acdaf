// The problem description and the top-level driver shared by the x86 fp32
// GEMM variants (sgemm_avx2.cc, sgemm_avx512.cc): orientation choice (direct
// or transposed, by the variant's cost model), the thread grid, and the
// split of C' into per-thread blocks. Scalar code only; everything is
// file-local to the including variant (anonymous namespace).
#pragma once
#include <algorithm>
#include <cstdint>
#include <utility>

#include "core.h"

namespace qf {
namespace {

// One GEMM in "kernel orientation": C'(i, j) = sum_p A'(i, p) B'(p, j) with
// A'(i,p) = arow ? a[i*lda + p] : a[p*lda + i], B'(p,j) = bt ? b[j*ldb + p] : b[p*ldb + j],
// C'(i, j) at tc ? c[j*ldc + i] : c[i*ldc + j].
struct Problem {
  bool arow, bt, tc;
  int64_t m, n, k;
  float alpha, beta;
  const float* a;
  int64_t lda;
  const float* b;
  int64_t ldb;
  float* c;
  int64_t ldc;
  int64_t kc;  // k block (balanced)
  int64_t nc;  // n block (multiple of NR)
};

// The microkernel for m rows (1..MR) of nv vectors (1 or 2) of a variant's
// table Uk<M, NV, AROW>::fn (function pointers, one per instantiation).
template <template <int, int, bool> class Uk, bool AROW, int NV, int... Ms>
auto uk_pick_impl(int m, std::integer_sequence<int, Ms...>) {
  static const decltype(Uk<1, NV, AROW>::fn) fns[] = {Uk<Ms + 1, NV, AROW>::fn...};
  return fns[m - 1];
}
template <template <int, int, bool> class Uk, int MR>
auto uk_pick(bool arow, int m, int nv) {
  using S = std::make_integer_sequence<int, MR>;
  if (arow) return nv == 1 ? uk_pick_impl<Uk, true, 1>(m, S{}) : uk_pick_impl<Uk, true, 2>(m, S{});
  return nv == 1 ? uk_pick_impl<Uk, false, 1>(m, S{}) : uk_pick_impl<Uk, false, 2>(m, S{});
}

// The divisor tm of T (a tm x T/tm thread grid) of least cost(P, tm, tn).
template <class Cost>
int best_tm(const Problem& P, int T, double* cost, Cost grid_cost) {
  int best = 1;
  double bc = 1e300;
  for (int tm = 1; tm <= T; tm++) {
    if (T % tm) continue;
    const double c = grid_cost(P, tm, T / tm);
    if (c < bc) { bc = c; best = tm; }
  }
  if (cost) *cost = bc;
  return best;
}

// The whole SgemmFn contract over a variant's pieces: scale_c(m, n, beta, c,
// ldc) for k == 0 or alpha == 0; grid_cost(P, tm, tn); run_block(P, i0, i1,
// j0, j1) for a block of C' (i0, j0 multiples of MR / NR).
template <int MR, int NR, class Scale, class Cost, class Run>
void sgemm_drive(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                 const float* b, int64_t ldb, float beta, float* c, int64_t ldc, int64_t kc_max,
                 int64_t l2_block_bytes, Scale scale_c, Cost grid_cost, Run run_block) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0 || alpha == 0.f) {
    scale_c(m, n, beta, c, ldc);
    return;
  }
  const int64_t nkb = (k + kc_max - 1) / kc_max;
  const int64_t kc = (k + nkb - 1) / nkb;
  const int64_t nc = std::max<int64_t>(NR, (l2_block_bytes / (kc * 4)) / NR * NR);
  // Direct orientation: A' = op(A), B' = op(B). Swapped: A' = op(B)^T, B' = op(A)^T, C' = C^T.
  const Problem direct{!trans_a, trans_b, false, m, n, k, alpha, beta, a, lda, b, ldb, c, ldc, kc, nc};
  const Problem swapped{trans_b, !trans_a, true, n, m, k, alpha, beta, b, ldb, a, lda, c, ldc, kc, nc};

  const double flops = 2.0 * m * n * k;
  int T = flops < 4e6 ? 1 : num_threads();
  double cd = 0, cs = 0;
  best_tm(direct, T, &cd, grid_cost);
  best_tm(swapped, T, &cs, grid_cost);
  const Problem& P = cs < 0.97 * cd ? swapped : direct;
  const int64_t mt = (P.m + MR - 1) / MR, nt = (P.n + NR - 1) / NR;
  T = static_cast<int>(std::min<int64_t>(T, mt * nt));
  auto body = [&](int t, int nthreads) {
    const int tm = best_tm(P, nthreads, nullptr, grid_cost), tn = nthreads / tm;
    const int ti = t / tn, tj = t % tn;
    const int64_t r0 = mt * ti / tm, r1 = mt * (ti + 1) / tm;
    const int64_t c0 = nt * tj / tn, c1 = nt * (tj + 1) / tn;
    run_block(P, r0 * MR, std::min(P.m, r1 * MR), c0 * NR, std::min(P.n, c1 * NR));
  };
  if (T <= 1) body(0, 1);
  else parallel_run(T, body);
}

}  // namespace
}  // namespace qf
