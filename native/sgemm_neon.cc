// fp32 GEMM for aarch64 Advanced SIMD: C = alpha * op(A) * op(B) + beta * C,
// row-major, the full SgemmFn contract (see sgemm.cc).
//
// Blocked like sgemm_avx2.cc, kept simpler: both operands are packed (any
// transposition, plain loads), so one microkernel serves every case.
// Microkernel MR x NR = 6 x 16: 24 q-register accumulators, 4 B vectors and
// 2 A vectors per k step (vfmaq_laneq_f32). Row blocks of C are spread over
// the pool; each block packs its own kc x nc slab of B (16-column panels,
// zero padded) and 6-row slivers of A. Edge tiles go through a stack tile,
// so nothing outside the caller's matrices is touched.
#include <arm_neon.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "core.h"

namespace qf {
namespace {

constexpr int MR = 6;
constexpr int NR = 16;
constexpr int64_t KC = 256;
constexpr int64_t NC = 1024;  // kc x nc floats of B: 1 MB at most

// op(B)[p0 .. p0+kc, j0 .. j0+nc] -> panels of kc x 16 (zero padded columns).
void pack_b(bool tb, const float* b, int64_t ldb, int64_t p0, int64_t kc, int64_t j0, int64_t nc, float* dst) {
  for (int64_t jp = 0; jp < nc; jp += NR) {
    const int64_t w = std::min<int64_t>(NR, nc - jp);
    float* d = dst + jp * kc;
    for (int64_t p = 0; p < kc; p++, d += NR) {
      if (!tb) {
        const float* s = b + (p0 + p) * ldb + j0 + jp;
        if (w == NR) {
          vst1q_f32(d, vld1q_f32(s));
          vst1q_f32(d + 4, vld1q_f32(s + 4));
          vst1q_f32(d + 8, vld1q_f32(s + 8));
          vst1q_f32(d + 12, vld1q_f32(s + 12));
          continue;
        }
        for (int64_t j = 0; j < w; j++) d[j] = s[j];
      } else {
        const float* s = b + (j0 + jp) * ldb + p0 + p;
        for (int64_t j = 0; j < w; j++) d[j] = s[j * ldb];
      }
      for (int64_t j = w; j < NR; j++) d[j] = 0.f;
    }
  }
}

// op(A)[i0 .. i0+mr, p0 .. p0+kc] -> kc x MR (zero padded rows).
void pack_a(bool ta, const float* a, int64_t lda, int64_t i0, int mr, int64_t p0, int64_t kc, float* dst) {
  for (int64_t p = 0; p < kc; p++, dst += MR) {
    int i = 0;
    if (ta) {
      const float* s = a + (p0 + p) * lda + i0;
      for (; i < mr; i++) dst[i] = s[i];
    } else {
      const float* s = a + i0 * lda + p0 + p;
      for (; i < mr; i++) dst[i] = s[i * lda];
    }
    for (; i < MR; i++) dst[i] = 0.f;
  }
}

// C tile (mr x nr valid) = alpha * acc (+ C when add, + beta * C when first and beta != 0).
void ukernel(int64_t kc, const float* __restrict ap, const float* __restrict bp, float* c, int64_t ldc, int mr, int nr,
             float alpha, float beta, bool first) {
  float32x4_t acc[MR][4];
  for (int i = 0; i < MR; i++)
    for (int v = 0; v < 4; v++) acc[i][v] = vdupq_n_f32(0.f);
  for (int64_t p = 0; p < kc; p++) {
    const float32x4_t b0 = vld1q_f32(bp), b1 = vld1q_f32(bp + 4), b2 = vld1q_f32(bp + 8), b3 = vld1q_f32(bp + 12);
    const float32x4_t a03 = vld1q_f32(ap);
    const float32x2_t a45 = vld1_f32(ap + 4);
#define QF_ROW(i, q, vec, lane)                           \
  acc[i][0] = vfmaq_lane##q##_f32(acc[i][0], b0, vec, lane); \
  acc[i][1] = vfmaq_lane##q##_f32(acc[i][1], b1, vec, lane); \
  acc[i][2] = vfmaq_lane##q##_f32(acc[i][2], b2, vec, lane); \
  acc[i][3] = vfmaq_lane##q##_f32(acc[i][3], b3, vec, lane);
    QF_ROW(0, q, a03, 0)
    QF_ROW(1, q, a03, 1)
    QF_ROW(2, q, a03, 2)
    QF_ROW(3, q, a03, 3)
    QF_ROW(4, , a45, 0)
    QF_ROW(5, , a45, 1)
#undef QF_ROW
    ap += MR;
    bp += NR;
  }
  const float32x4_t va = vdupq_n_f32(alpha), vb = vdupq_n_f32(beta);
  const int mode = !first ? 1 : (beta == 0.f ? 0 : (beta == 1.f ? 1 : 2));
  auto upd = [&](float32x4_t x, const float* cp) {
    float32x4_t r = vmulq_f32(va, x);
    if (mode == 1) r = vaddq_f32(r, vld1q_f32(cp));
    else if (mode == 2) r = vaddq_f32(r, vmulq_f32(vb, vld1q_f32(cp)));
    return r;
  };
  if (nr == NR) {
    for (int i = 0; i < mr; i++)
      for (int v = 0; v < 4; v++) vst1q_f32(c + i * ldc + 4 * v, upd(acc[i][v], c + i * ldc + 4 * v));
    return;
  }
  float tmp[NR];
  for (int i = 0; i < mr; i++) {
    float* cr = c + i * ldc;
    if (mode != 0) std::memcpy(tmp, cr, static_cast<size_t>(nr) * 4);
    for (int v = 0; v < 4; v++) vst1q_f32(tmp + 4 * v, upd(acc[i][v], tmp + 4 * v));
    std::memcpy(cr, tmp, static_cast<size_t>(nr) * 4);
  }
}

thread_local AlignedBuf<float> t_bpack, t_apack;

}  // namespace

void sgemm_neon(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0 || alpha == 0.f) {
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < n; j++) c[i * ldc + j] = beta == 0.f ? 0.f : beta * c[i * ldc + j];
    return;
  }
  const int64_t nkb = (k + KC - 1) / KC, kc_max = (k + nkb - 1) / nkb;
  const int64_t row_tiles = (m + MR - 1) / MR;
  // Enough row tiles per task that packing B (kc x nc per task) stays small beside the FMAs.
  const int64_t grain = 2.0 * m * n * k < 4e6 ? row_tiles : 8;
  parallel_for(row_tiles, grain, [&](int64_t t0, int64_t t1) {
    const int64_t i0 = t0 * MR, i1 = std::min(m, t1 * MR);
    t_bpack.resize(static_cast<size_t>(kc_max * (NC + NR)));
    t_apack.resize(static_cast<size_t>(kc_max * MR));
    float* bpk = t_bpack.data();
    float* apk = t_apack.data();
    for (int64_t jc = 0; jc < n; jc += NC) {
      const int64_t nc = std::min(NC, n - jc);
      for (int64_t pc = 0; pc < k; pc += kc_max) {
        const int64_t kc = std::min(kc_max, k - pc);
        pack_b(trans_b, b, ldb, pc, kc, jc, nc, bpk);
        for (int64_t ir = i0; ir < i1; ir += MR) {
          const int mr = static_cast<int>(std::min<int64_t>(MR, i1 - ir));
          pack_a(trans_a, a, lda, ir, mr, pc, kc, apk);
          for (int64_t jr = 0; jr < nc; jr += NR) {
            const int nr = static_cast<int>(std::min<int64_t>(NR, nc - jr));
            ukernel(kc, apk, bpk + jr * kc, c + ir * ldc + jc + jr, ldc, mr, nr, alpha, beta, pc == 0);
          }
        }
      }
    }
  });
}

}  // namespace qf
