// fp32 GEMM, AVX-512 (F): C = alpha * op(A) * op(B) + beta * C, row-major.
//
// Blocking (GotoBLAS/BLIS style, one core's view):
//   for jc over n in blocks of nc          (per thread: its own columns)
//     for pc over k in blocks of kc        (kc <= KC_MAX, balanced)
//       pack B[pc:pc+kc, jc:jc+nc] into kc x NR column panels (zero padded)
//       for ir over m in slivers of MR      (A sliver, MR x kc, stays in L1)
//         for jr over the panels            (packed B block stays in L2)
//           microkernel: MR x NR tile of C += A sliver * B panel
// A is never packed: the microkernel broadcasts its elements straight from
// the caller's matrix (row i of A at a + i*lda, or column i of A^T at
// a + i). B is packed because its panels are reused across every sliver of A
// and so that the kernel reads NR contiguous floats per k step.
//
// Microkernel: MR x NR = 14 x 32 -> 28 zmm accumulators (FMA latency 4 x 2
// pipes needs >= 8 independent chains), 2 B vectors, broadcasts folded into
// vfmadd231ps as {1to16} memory operands. Per k step: 28 FMAs, 2 vector loads
// + 14 broadcast loads. Edge tiles use smaller compile-time MR and masked
// C loads/stores (packed B is zero padded, so nothing is read out of bounds).
//
// Threads: the C matrix is cut into a tm x tn grid of rectangles (whole
// MR/NR tiles), one per pool thread, chosen by a small cost model (compute
// of the largest rectangle + its B packing). Every element of C is summed in
// the same order whatever the grid, so results do not depend on the thread
// count.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <utility>

#include "core.h"

// GCC 12 warns about the self-initialised _mm512_undefined_ps() inside the
// permute intrinsics (a false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace qf {
namespace {

constexpr int MR = 14;
constexpr int NR = 32;
constexpr int64_t KC_MAX = 384;
constexpr int64_t L2_BLOCK_BYTES = 448 * 1024;  // packed B block budget (L2 is 1 MB)

inline __mmask16 tail_mask(int64_t r) { return r >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << r) - 1u); }

// C tile update. mode 0: C = alpha*acc; 1: C = alpha*acc + C; 2: C = alpha*acc + beta*C.
template <int NV>
inline void store_row(float* c, const __m512* acc, __m512 va, __m512 vb, int mode, __mmask16 mlast) {
  for (int v = 0; v < NV; v++) {
    const __mmask16 mk = v == NV - 1 ? mlast : __mmask16(0xFFFF);
    __m512 r = _mm512_mul_ps(va, acc[v]);
    if (mode == 1) r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(mk, c + 16 * v));
    else if (mode == 2) r = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mk, c + 16 * v), r);
    _mm512_mask_storeu_ps(c + 16 * v, mk, r);
  }
}

// M x (16*NV) tile: acc = sum_p A(i, p) * Bpanel[p, :]. TA: A(i,p) = a[p*lda + i], else a[i*lda + p].
template <int M, int NV, bool TA>
void ukernel(int64_t kc, const float* __restrict a, int64_t lda, const float* __restrict b, float* c, int64_t ldc,
             float alpha, float beta, int mode, __mmask16 mlast) {
  __m512 acc[M][NV];
  for (int i = 0; i < M; i++)
    for (int v = 0; v < NV; v++) acc[i][v] = _mm512_setzero_ps();
  for (int i = 0; i < M; i++) _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
  if (TA) {
    for (int64_t p = 0; p < kc; p++) {
      __m512 bv[NV];
      for (int v = 0; v < NV; v++) bv[v] = _mm512_load_ps(b + 16 * v);
      b += NR;
      const float* ap = a + p * lda;
      for (int i = 0; i < M; i++) {
        const __m512 ai = _mm512_set1_ps(ap[i]);
        for (int v = 0; v < NV; v++) acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
      }
    }
  } else {
    for (int64_t p = 0; p < kc; p++) {
      __m512 bv[NV];
      for (int v = 0; v < NV; v++) bv[v] = _mm512_load_ps(b + 16 * v);
      b += NR;
      const float* ap = a + p;
      for (int i = 0; i < M; i++) {
        const __m512 ai = _mm512_set1_ps(ap[i * lda]);
        for (int v = 0; v < NV; v++) acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
      }
    }
  }
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  for (int i = 0; i < M; i++) store_row<NV>(c + i * ldc, acc[i], va, vb, mode, mlast);
}

using UkFn = void (*)(int64_t, const float*, int64_t, const float*, float*, int64_t, float, float, int, __mmask16);

template <bool TA, int NV, int... Ms>
UkFn pick_impl(int m, std::integer_sequence<int, Ms...>) {
  UkFn fns[] = {ukernel<Ms + 1, NV, TA>...};
  return fns[m - 1];
}
template <bool TA>
UkFn pick(int m, int nv) {
  return nv == 1 ? pick_impl<TA, 1>(m, std::make_integer_sequence<int, MR>{})
                 : pick_impl<TA, 2>(m, std::make_integer_sequence<int, MR>{});
}

// Packs B[p0:p0+kc, j0:j0+nc] (op(B) coordinates) into panels of kc x NR, zero padded.
void pack_b(bool tb, const float* b, int64_t ldb, int64_t p0, int64_t kc, int64_t j0, int64_t nc, float* dst) {
  for (int64_t jp = 0; jp < nc; jp += NR) {
    const int64_t w = std::min<int64_t>(NR, nc - jp);
    float* d = dst + jp * kc;  // panel jp/NR starts at (jp/NR) * kc * NR
    if (!tb) {
      // op(B)[p, j] = b[p*ldb + j]: rows of the panel are contiguous in B.
      const __mmask16 m0 = tail_mask(w), m1 = tail_mask(w - 16 > 0 ? w - 16 : 0);
      const float* s = b + p0 * ldb + j0 + jp;
      for (int64_t p = 0; p < kc; p++) {
        _mm512_store_ps(d + p * NR, _mm512_maskz_loadu_ps(m0, s + p * ldb));
        _mm512_store_ps(d + p * NR + 16, _mm512_maskz_loadu_ps(m1, s + p * ldb + 16));
      }
    } else {
      // op(B)[p, j] = b[j*ldb + p]: transpose 16 x 16 blocks (rows j, cols p).
      for (int64_t jh = 0; jh < NR; jh += 16) {
        const int64_t jw = std::max<int64_t>(0, std::min<int64_t>(16, w - jh));
        for (int64_t pb = 0; pb < kc; pb += 16) {
          const int64_t pw = std::min<int64_t>(16, kc - pb);
          const __mmask16 pm = tail_mask(pw);
          __m512 r[16];
          for (int j = 0; j < 16; j++)
            r[j] = j < jw ? _mm512_maskz_loadu_ps(pm, b + (j0 + jp + jh + j) * ldb + p0 + pb) : _mm512_setzero_ps();
          // 16x16 transpose
          __m512 t[16];
          for (int j = 0; j < 16; j += 2) {
            t[j] = _mm512_unpacklo_ps(r[j], r[j + 1]);
            t[j + 1] = _mm512_unpackhi_ps(r[j], r[j + 1]);
          }
          for (int j = 0; j < 16; j += 4) {
            r[j] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[j]), _mm512_castps_pd(t[j + 2])));
            r[j + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[j]), _mm512_castps_pd(t[j + 2])));
            r[j + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[j + 1]), _mm512_castps_pd(t[j + 3])));
            r[j + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[j + 1]), _mm512_castps_pd(t[j + 3])));
          }
          // now r[4g + s], lane L = column 4L + s, rows 4g..4g+3: transpose the 4x4 grid of lanes
          for (int j = 0; j < 4; j++) {
            t[j] = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88);
            t[4 + j] = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xDD);
            t[8 + j] = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88);
            t[12 + j] = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xDD);
          }
          for (int j = 0; j < 4; j++) {
            r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
            r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xDD);
            r[4 + j] = _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0x88);
            r[12 + j] = _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0xDD);
          }
          for (int q = 0; q < pw; q++) _mm512_store_ps(d + (pb + q) * NR + jh, r[q]);
        }
      }
    }
  }
}

struct Problem {
  bool ta, tb;
  int64_t m, n, k;
  float alpha, beta;
  const float* a;
  int64_t lda;
  const float* b;
  int64_t ldb;
  float* c;
  int64_t ldc;
  int64_t kc;  // balanced k block
  int64_t nc;  // n block (multiple of NR)
};

thread_local AlignedBuf<float> t_pack;

// C[i0:i1, j0:j1] (i0, j0 multiples of MR / NR; i1, j1 tile multiples or the matrix edge).
void run_block(const Problem& P, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  if (i0 >= i1 || j0 >= j1) return;
  const int64_t kc_max = P.kc, nc_max = P.nc;
  t_pack.resize(static_cast<size_t>(kc_max * nc_max));
  float* pk = t_pack.data();
  for (int64_t jc = j0; jc < j1; jc += nc_max) {
    const int64_t nc = std::min(nc_max, j1 - jc);
    for (int64_t pc = 0; pc < P.k; pc += kc_max) {
      const int64_t kc = std::min(kc_max, P.k - pc);
      pack_b(P.tb, P.b, P.ldb, pc, kc, jc, nc, pk);
      const int mode = pc > 0 ? 1 : (P.beta == 0.f ? 0 : (P.beta == 1.f ? 1 : 2));
      for (int64_t ir = i0; ir < i1; ir += MR) {
        const int mr = static_cast<int>(std::min<int64_t>(MR, i1 - ir));
        const float* a = P.ta ? P.a + pc * P.lda + ir : P.a + ir * P.lda + pc;
        for (int64_t jr = 0; jr < nc; jr += NR) {
          const int64_t nr = std::min<int64_t>(NR, nc - jr);
          const int nv = nr > 16 ? 2 : 1;
          const __mmask16 ml = tail_mask(nr - 16 * (nv - 1));
          UkFn f = P.ta ? pick<true>(mr, nv) : pick<false>(mr, nv);
          f(kc, a, P.lda, pk + jr * kc, P.c + ir * P.ldc + jc + jr, P.ldc, P.alpha, P.beta, mode, ml);
        }
      }
    }
  }
}

// C = beta * C (k == 0 or alpha == 0): C not read when beta == 0.
void scale_c(int64_t m, int64_t n, float beta, float* c, int64_t ldc) {
  const __m512 vb = _mm512_set1_ps(beta);
  for (int64_t i = 0; i < m; i++) {
    float* r = c + i * ldc;
    for (int64_t j = 0; j < n; j += 16) {
      const __mmask16 mk = tail_mask(n - j);
      const __m512 v = beta == 0.f ? _mm512_setzero_ps() : _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(mk, r + j));
      _mm512_mask_storeu_ps(r + j, mk, v);
    }
  }
}

}  // namespace

void sgemm_avx512(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                  int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0 || alpha == 0.f) {
    scale_c(m, n, beta, c, ldc);
    return;
  }
  Problem P{trans_a, trans_b, m, n, k, alpha, beta, a, lda, b, ldb, c, ldc, 0, 0};
  const int64_t nkb = (k + KC_MAX - 1) / KC_MAX;
  P.kc = (k + nkb - 1) / nkb;
  P.nc = std::max<int64_t>(NR, (L2_BLOCK_BYTES / (P.kc * 4)) / NR * NR);

  const int64_t mt = (m + MR - 1) / MR, nt = (n + NR - 1) / NR;  // tiles
  const double flops = 2.0 * m * n * k;
  int want = flops < 2e6 ? 1 : num_threads();
  want = static_cast<int>(std::min<int64_t>(want, mt * nt));
  auto body = [&](int t, int T) {
    // Choose the grid tm x tn (tm * tn = T) minimising the slowest thread's
    // work: its tiles' multiply-adds + packing of its B columns (weighted ~8
    // multiply-adds per packed element).
    int best_tm = T;
    double best = 1e300;
    for (int tm = 1; tm <= T; tm++) {
      if (T % tm) continue;
      const int tn = T / tm;
      const double rows = static_cast<double>((mt + tm - 1) / tm) * MR;
      const double cols = static_cast<double>((nt + tn - 1) / tn) * NR;
      const double cost = rows * cols * k + 8.0 * cols * k;
      if (cost < best) { best = cost; best_tm = tm; }
    }
    const int tm = best_tm, tn = T / tm;
    const int ti = t / tn, tj = t % tn;
    const int64_t r0 = mt * ti / tm, r1 = mt * (ti + 1) / tm;
    const int64_t c0 = nt * tj / tn, c1 = nt * (tj + 1) / tn;
    run_block(P, r0 * MR, std::min(m, r1 * MR), c0 * NR, std::min(n, c1 * NR));
  };
  if (want <= 1) body(0, 1);
  else parallel_run(want, body);
}

}  // namespace qf
