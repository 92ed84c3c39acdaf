// fp32 GEMM, AVX2 + FMA: C = alpha * op(A) * op(B) + beta * C, row-major.
//
// Same design as sgemm_avx512.cc (see there), with ymm registers:
// microkernel MR x NR = 6 x 16 -> 12 ymm accumulators, 2 B vectors and one
// broadcast per row per k step (12 FMAs : 8 loads). B is packed into
// kc x 16 zero-padded panels; row-major A is read in place (6 row pointers,
// next sliver prefetched into L2); transposed A is copied sliver by sliver.
// Small-m problems are solved transposed (C^T = op(B)^T op(A)^T) so that the
// small matrix is the packed one; those tiles are written back transposed
// through a small stack buffer. Edge tiles use masked loads/stores
// (vmaskmovps), so nothing outside the caller's matrices is touched.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <utility>

#include "core.h"
#include "sgemm_driver.h"

namespace qf {
namespace {

constexpr int MR = 6;
constexpr int NR = 16;
constexpr int64_t KC_MAX = 384;
constexpr int64_t L2_BLOCK_BYTES = 448 * 1024;

alignas(32) const int32_t kMaskTable[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
// Lanes [0, r) set (r clamped to [0, 8]).
inline __m256i mask8(int64_t r) {
  r = r < 0 ? 0 : (r > 8 ? 8 : r);
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskTable + 8 - r));
}

// In-register 8x8 transpose: r[x] lane y <- r[y] lane x.
inline void transpose8(__m256* r) {
  __m256 t[8];
  for (int j = 0; j < 8; j += 2) {
    t[j] = _mm256_unpacklo_ps(r[j], r[j + 1]);
    t[j + 1] = _mm256_unpackhi_ps(r[j], r[j + 1]);
  }
  __m256 u[8];
  for (int j = 0; j < 8; j += 4) {
    u[j] = _mm256_shuffle_ps(t[j], t[j + 2], 0x44);
    u[j + 1] = _mm256_shuffle_ps(t[j], t[j + 2], 0xEE);
    u[j + 2] = _mm256_shuffle_ps(t[j + 1], t[j + 3], 0x44);
    u[j + 3] = _mm256_shuffle_ps(t[j + 1], t[j + 3], 0xEE);
  }
  // u[4g + s], 128-bit lane L = column 4L + s, rows 4g..4g+3.
  for (int s = 0; s < 4; s++) {
    r[s] = _mm256_permute2f128_ps(u[s], u[4 + s], 0x20);
    r[4 + s] = _mm256_permute2f128_ps(u[s], u[4 + s], 0x31);
  }
}

struct Out {
  float* c;
  int64_t ldc;
  float alpha, beta;
  int mode;  // 0: C = alpha*acc; 1: + C; 2: + beta*C
  bool tc;   // tile (r, q) at c[q*ldc + r]
  int nr;    // valid tile columns
};

inline __m256 update(__m256 acc, const float* c, __m256i mk, __m256 va, __m256 vb, int mode) {
  __m256 r = _mm256_mul_ps(va, acc);
  if (mode == 1) r = _mm256_add_ps(r, _mm256_maskload_ps(c, mk));
  else if (mode == 2) r = _mm256_fmadd_ps(vb, _mm256_maskload_ps(c, mk), r);
  return r;
}

template <int M, int NV>
inline void store_tile(__m256 (&acc)[M][NV], const Out& o) {
  const __m256 va = _mm256_set1_ps(o.alpha), vb = _mm256_set1_ps(o.beta);
  if (!o.tc) {
    const bool full = o.nr == 8 * NV;
    const __m256i ml = mask8(o.nr - 8 * (NV - 1)), all = mask8(8);
    for (int i = 0; i < M; i++) {
      float* c = o.c + i * o.ldc;
      for (int v = 0; v < NV; v++) {
        if (full) {
          __m256 r = _mm256_mul_ps(va, acc[i][v]);
          if (o.mode == 1) r = _mm256_add_ps(r, _mm256_loadu_ps(c + 8 * v));
          else if (o.mode == 2) r = _mm256_fmadd_ps(vb, _mm256_loadu_ps(c + 8 * v), r);
          _mm256_storeu_ps(c + 8 * v, r);
        } else {
          const __m256i mk = v == NV - 1 ? ml : all;
          _mm256_maskstore_ps(c + 8 * v, mk, update(acc[i][v], c + 8 * v, mk, va, vb, o.mode));
        }
      }
    }
  } else {
    const __m256i mk = mask8(M);
    for (int v = 0; v < NV; v++) {
      __m256 r[8];
      for (int i = 0; i < 8; i++) r[i] = i < M ? acc[i][v] : _mm256_setzero_ps();
      transpose8(r);  // r[x] = tile column 8v + x, lanes = tile rows
      const int qn = std::min(8, o.nr - 8 * v);
      for (int x = 0; x < qn; x++) {
        float* c = o.c + (8 * v + x) * o.ldc;
        _mm256_maskstore_ps(c, mk, update(r[x], c, mk, va, vb, o.mode));
      }
    }
  }
}

template <int M, int NV, bool AROW>
void ukernel(int64_t kc, const float* __restrict a, int64_t lda, const float* __restrict b, const float* pf,
             const Out& o) {
  __m256 acc[M][NV];
  for (int i = 0; i < M; i++)
    for (int v = 0; v < NV; v++) acc[i][v] = _mm256_setzero_ps();
  if (!o.tc) {
    for (int i = 0; i < M; i++) _mm_prefetch(reinterpret_cast<const char*>(o.c + i * o.ldc), _MM_HINT_T0);
  } else {
    for (int q = 0; q < o.nr; q++) _mm_prefetch(reinterpret_cast<const char*>(o.c + q * o.ldc), _MM_HINT_T0);
  }
  if (AROW) {
    for (int64_t p0 = 0; p0 < kc; p0 += 16) {
      if (pf)
        for (int i = 0; i < M; i++) _mm_prefetch(reinterpret_cast<const char*>(pf + i * lda + p0), _MM_HINT_T1);
      const int64_t pe = std::min<int64_t>(kc, p0 + 16);
      for (int64_t p = p0; p < pe; p++) {
        __m256 bv[NV];
        for (int v = 0; v < NV; v++) bv[v] = _mm256_load_ps(b + 8 * v);
        b += NR;
        const float* ap = a + p;
        for (int i = 0; i < M; i++) {
          const __m256 ai = _mm256_broadcast_ss(ap + i * lda);
          for (int v = 0; v < NV; v++) acc[i][v] = _mm256_fmadd_ps(ai, bv[v], acc[i][v]);
        }
      }
    }
  } else {
    for (int64_t p = 0; p < kc; p++) {
      __m256 bv[NV];
      for (int v = 0; v < NV; v++) bv[v] = _mm256_load_ps(b + 8 * v);
      b += NR;
      const float* ap = a + p * lda;
      for (int i = 0; i < M; i++) {
        const __m256 ai = _mm256_broadcast_ss(ap + i);
        for (int v = 0; v < NV; v++) acc[i][v] = _mm256_fmadd_ps(ai, bv[v], acc[i][v]);
      }
    }
  }
  store_tile<M, NV>(acc, o);
}

using UkFn = void (*)(int64_t, const float*, int64_t, const float*, const float*, const Out&);

template <int M, int NV, bool AROW>
struct Uk {
  static constexpr UkFn fn = ukernel<M, NV, AROW>;
};
UkFn pick(bool arow, int m, int nv) { return uk_pick<Uk, MR>(arow, m, nv); }

void pack_b(bool bt, const float* b, int64_t ldb, int64_t p0, int64_t kc, int64_t j0, int64_t nc, float* dst) {
  if (!bt) {
    const int64_t np = (nc + NR - 1) / NR;
    for (int64_t p = 0; p < kc; p++) {
      const float* s = b + (p0 + p) * ldb + j0;
      for (int64_t q = 0; q < np; q++) {
        const int64_t w = nc - q * NR;
        float* d = dst + q * kc * NR + p * NR;
        if (w >= NR) {
          _mm256_store_ps(d, _mm256_loadu_ps(s + q * NR));
          _mm256_store_ps(d + 8, _mm256_loadu_ps(s + q * NR + 8));
        } else {
          _mm256_store_ps(d, _mm256_maskload_ps(s + q * NR, mask8(w)));
          _mm256_store_ps(d + 8, _mm256_maskload_ps(s + q * NR + 8, mask8(w - 8)));
        }
      }
    }
    return;
  }
  for (int64_t jp = 0; jp < nc; jp += NR) {
    const int64_t w = std::min<int64_t>(NR, nc - jp);
    float* d = dst + jp * kc;
    for (int64_t jh = 0; jh < NR; jh += 8) {
      const int64_t jw = std::max<int64_t>(0, std::min<int64_t>(8, w - jh));
      for (int64_t pb = 0; pb < kc; pb += 8) {
        const int64_t pw = std::min<int64_t>(8, kc - pb);
        const __m256i pm = mask8(pw);
        __m256 r[8];
        for (int j = 0; j < 8; j++)
          r[j] = j < jw ? _mm256_maskload_ps(b + (j0 + jp + jh + j) * ldb + p0 + pb, pm) : _mm256_setzero_ps();
        transpose8(r);
        for (int q = 0; q < pw; q++) _mm256_store_ps(d + (pb + q) * NR + jh, r[q]);
      }
    }
  }
}

void pack_a_t(const float* a, int64_t lda, int mr, int64_t kc, float* dst) {
  const __m256i mk = mask8(mr);
  for (int64_t p = 0; p < kc; p++) _mm256_maskstore_ps(dst + p * MR, mk, _mm256_maskload_ps(a + p * lda, mk));
}

thread_local AlignedBuf<float> t_bpack;
thread_local AlignedBuf<float> t_apack;

void run_block(const Problem& P, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  if (i0 >= i1 || j0 >= j1) return;
  const int64_t kc_max = P.kc, nc_max = P.nc;
  t_bpack.resize(static_cast<size_t>(kc_max * nc_max));
  float* bpk = t_bpack.data();
  float* apk = nullptr;
  if (!P.arow) {
    t_apack.resize(static_cast<size_t>(kc_max * MR + 8));
    apk = t_apack.data();
  }
  for (int64_t jc = j0; jc < j1; jc += nc_max) {
    const int64_t nc = std::min(nc_max, j1 - jc);
    for (int64_t pc = 0; pc < P.k; pc += kc_max) {
      const int64_t kc = std::min(kc_max, P.k - pc);
      pack_b(P.bt, P.b, P.ldb, pc, kc, jc, nc, bpk);
      Out o;
      o.ldc = P.ldc;
      o.alpha = P.alpha;
      o.beta = P.beta;
      o.mode = pc > 0 ? 1 : (P.beta == 0.f ? 0 : (P.beta == 1.f ? 1 : 2));
      o.tc = P.tc;
      for (int64_t ir = i0; ir < i1; ir += MR) {
        const int mr = static_cast<int>(std::min<int64_t>(MR, i1 - ir));
        const float* a;
        int64_t lda;
        const float* pf = nullptr;
        if (P.arow) {
          a = P.a + ir * P.lda + pc;
          lda = P.lda;
          if (ir + MR < i1) pf = a + MR * P.lda;
        } else {
          pack_a_t(P.a + pc * P.lda + ir, P.lda, mr, kc, apk);
          a = apk;
          lda = MR;
        }
        for (int64_t jr = 0; jr < nc; jr += NR) {
          o.nr = static_cast<int>(std::min<int64_t>(NR, nc - jr));
          const int nv = o.nr > 8 ? 2 : 1;
          o.c = P.tc ? P.c + (jc + jr) * P.ldc + ir : P.c + ir * P.ldc + jc + jr;
          pick(P.arow, mr, nv)(kc, a, lda, bpk + jr * kc, jr == 0 ? pf : nullptr, o);
        }
      }
    }
  }
}

void scale_c(int64_t m, int64_t n, float beta, float* c, int64_t ldc) {
  const __m256 vb = _mm256_set1_ps(beta);
  for (int64_t i = 0; i < m; i++) {
    float* r = c + i * ldc;
    for (int64_t j = 0; j < n; j += 8) {
      const __m256i mk = mask8(n - j);
      const __m256 v = beta == 0.f ? _mm256_setzero_ps() : _mm256_mul_ps(vb, _mm256_maskload_ps(r + j, mk));
      _mm256_maskstore_ps(r + j, mk, v);
    }
  }
}

double grid_cost(const Problem& P, int tm, int tn) {
  const int64_t mt = (P.m + MR - 1) / MR, nt = (P.n + NR - 1) / NR;
  const double rows = static_cast<double>((mt + tm - 1) / tm) * MR;
  const double cols = static_cast<double>((nt + tn - 1) / tn) * NR;
  const double nblocks = static_cast<double>((static_cast<int64_t>(cols) + P.nc - 1) / P.nc);
  const double k = static_cast<double>(P.k);
  return rows * cols * k + 8.0 * cols * k + 4.0 * rows * k * nblocks;
}

}  // namespace

void sgemm_avx2(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  sgemm_drive<MR, NR>(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, KC_MAX, L2_BLOCK_BYTES, scale_c,
                      grid_cost, run_block);
}

}  // namespace qf
