// AVX2 variants of the training-step elementwise kernels (train_ew.h): 8
// channels per vector, masked tails (vmaskmov), the same operations in the
// same order as train_ew_ref.cc (bit-identical).
#include <immintrin.h>

#include "train_ew.h"

namespace qf {
namespace tew {
namespace {

inline __m256i tail_mask(int64_t n) {
  const int32_t k = n >= 8 ? 8 : static_cast<int32_t>(n);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline __m256i mask_lo64(__m256i m) { return _mm256_cvtepi32_epi64(_mm256_castsi256_si128(m)); }
inline __m256i mask_hi64(__m256i m) { return _mm256_cvtepi32_epi64(_mm256_extracti128_si256(m, 1)); }
inline __m256d lo_pd(__m256 v) { return _mm256_cvtps_pd(_mm256_castps256_ps128(v)); }
inline __m256d hi_pd(__m256 v) { return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)); }
// All-ones lanes where the byte mask is nonzero (min(n, 8) bytes read).
inline __m256 mask8(const uint8_t* p, int64_t n) {
  __m128i b;
  if (n >= 8) {
    b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  } else {
    alignas(16) uint8_t t[16] = {0};
    for (int64_t i = 0; i < n; i++) t[i] = p[i];
    b = _mm_load_si128(reinterpret_cast<const __m128i*>(t));
  }
  const __m256i w = _mm256_cvtepu8_epi32(b);
  return _mm256_castsi256_ps(_mm256_xor_si256(_mm256_cmpeq_epi32(w, _mm256_setzero_si256()), _mm256_set1_epi32(-1)));
}

}  // namespace

void bn_stats_avx2(const float* x, int64_t C, const double* center, int64_t r0, int64_t r1, double* s1,
                   double* s2) {
  for (int64_t c0 = 0; c0 < C; c0 += 8) {
    const __m256i m = tail_mask(C - c0), ml = mask_lo64(m), mh = mask_hi64(m);
    const __m256d k0 = _mm256_maskload_pd(center + c0, ml), k1 = _mm256_maskload_pd(center + c0 + 4, mh);
    __m256d a0 = _mm256_setzero_pd(), a1 = a0, b0 = a0, b1 = a0;
    const float* p = x + r0 * C + c0;
    for (int64_t r = r0; r < r1; r++, p += C) {
      const __m256 v = _mm256_maskload_ps(p, m);
      const __m256d d0 = _mm256_sub_pd(lo_pd(v), k0), d1 = _mm256_sub_pd(hi_pd(v), k1);
      a0 = _mm256_add_pd(a0, d0);
      a1 = _mm256_add_pd(a1, d1);
      b0 = _mm256_add_pd(b0, _mm256_mul_pd(d0, d0));
      b1 = _mm256_add_pd(b1, _mm256_mul_pd(d1, d1));
    }
    _mm256_maskstore_pd(s1 + c0, ml, a0);
    _mm256_maskstore_pd(s1 + c0 + 4, mh, a1);
    _mm256_maskstore_pd(s2 + c0, ml, b0);
    _mm256_maskstore_pd(s2 + c0 + 4, mh, b1);
  }
}

void bn_grad_sums_avx2(const float* x, const float* g, int64_t C, const double* center, int64_t r0, int64_t r1,
                       double* sg, double* sgx) {
  for (int64_t c0 = 0; c0 < C; c0 += 8) {
    const __m256i m = tail_mask(C - c0), ml = mask_lo64(m), mh = mask_hi64(m);
    const __m256d k0 = _mm256_maskload_pd(center + c0, ml), k1 = _mm256_maskload_pd(center + c0 + 4, mh);
    __m256d a0 = _mm256_setzero_pd(), a1 = a0, b0 = a0, b1 = a0;
    const int64_t off = r0 * C + c0;
    const float* px = x + off;
    const float* pg = g + off;
    for (int64_t r = r0; r < r1; r++, px += C, pg += C) {
      const __m256 v = _mm256_maskload_ps(px, m);
      const __m256 gv = _mm256_maskload_ps(pg, m);
      const __m256d g0 = lo_pd(gv), g1 = hi_pd(gv);
      a0 = _mm256_add_pd(a0, g0);
      a1 = _mm256_add_pd(a1, g1);
      b0 = _mm256_add_pd(b0, _mm256_mul_pd(g0, _mm256_sub_pd(lo_pd(v), k0)));
      b1 = _mm256_add_pd(b1, _mm256_mul_pd(g1, _mm256_sub_pd(hi_pd(v), k1)));
    }
    _mm256_maskstore_pd(sg + c0, ml, a0);
    _mm256_maskstore_pd(sg + c0 + 4, mh, a1);
    _mm256_maskstore_pd(sgx + c0, ml, b0);
    _mm256_maskstore_pd(sgx + c0 + 4, mh, b1);
  }
}

void channel_affine_avx2(const AffineArgs& A, int64_t r0, int64_t r1) {
  const int64_t C = A.C;
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t r = r0; r < r1; r++) {
    const float* px = A.x + r * C;
    float* py = A.y + r * C;
    int64_t c = 0;
    for (; c + 8 <= C; c += 8) {
      __m256 y = _mm256_loadu_ps(px + c);
      if (A.a) y = _mm256_fmadd_ps(y, _mm256_loadu_ps(A.a + c), _mm256_loadu_ps(A.b + c));
      if (A.slope) {
        const __m256 pos = _mm256_cmp_ps(y, zero, _CMP_GT_OQ);
        y = _mm256_blendv_ps(_mm256_mul_ps(y, _mm256_loadu_ps(A.slope + c)), y, pos);
      }
      _mm256_storeu_ps(py + c, y);
    }
    if (c < C) {
      const __m256i m = tail_mask(C - c);
      __m256 y = _mm256_maskload_ps(px + c, m);
      if (A.a) y = _mm256_fmadd_ps(y, _mm256_maskload_ps(A.a + c, m), _mm256_maskload_ps(A.b + c, m));
      if (A.slope) {
        const __m256 pos = _mm256_cmp_ps(y, zero, _CMP_GT_OQ);
        y = _mm256_blendv_ps(_mm256_mul_ps(y, _mm256_maskload_ps(A.slope + c, m)), y, pos);
      }
      _mm256_maskstore_ps(py + c, m, y);
    }
  }
}

void bn_backward_dx_avx2(const DxArgs& A, int64_t r0, int64_t r1) {
  const int64_t C = A.C;
  for (int64_t r = r0; r < r1; r++) {
    const int64_t o = r * C;
    for (int64_t c = 0; c < C; c += 8) {
      const __m256i m = tail_mask(C - c);
      __m256 t = _mm256_fmadd_ps(_mm256_maskload_ps(A.a + c, m), _mm256_maskload_ps(A.g + o + c, m),
                                 _mm256_maskload_ps(A.b + c, m));
      if (A.k) {
        const __m256 xm = _mm256_sub_ps(_mm256_maskload_ps(A.x + o + c, m), _mm256_maskload_ps(A.m + c, m));
        t = _mm256_fmadd_ps(_mm256_maskload_ps(A.k + c, m), xm, t);
      }
      _mm256_maskstore_ps(A.gi + o + c, m, t);
    }
  }
}

void prelu_backward_avx2(const float* x, const float* g, const uint8_t* mask, float* gi, int64_t C,
                         const float* slope, int64_t r0, int64_t r1, double* sa) {
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t c0 = 0; c0 < C; c0 += 8) {
    const __m256i m = tail_mask(C - c0), ml = mask_lo64(m), mh = mask_hi64(m);
    const __m256 s = _mm256_maskload_ps(slope + c0, m);
    __m256d a0 = _mm256_setzero_pd(), a1 = a0;
    int64_t o = r0 * C + c0;
    for (int64_t r = r0; r < r1; r++, o += C) {
      const __m256 xv = _mm256_maskload_ps(x + o, m);
      __m256 gv = _mm256_maskload_ps(g + o, m);
      if (mask) gv = _mm256_and_ps(gv, mask8(mask + o, C - c0));
      const __m256 pos = _mm256_cmp_ps(xv, zero, _CMP_GT_OQ);
      const __m256 neg = _mm256_blendv_ps(xv, zero, pos);
      _mm256_maskstore_ps(gi + o, m, _mm256_blendv_ps(_mm256_mul_ps(gv, s), gv, pos));
      a0 = _mm256_add_pd(a0, _mm256_mul_pd(lo_pd(gv), lo_pd(neg)));
      a1 = _mm256_add_pd(a1, _mm256_mul_pd(hi_pd(gv), hi_pd(neg)));
    }
    _mm256_maskstore_pd(sa + c0, ml, a0);
    _mm256_maskstore_pd(sa + c0 + 4, mh, a1);
  }
}

void bn_prelu_sums_avx2(const BnPreluArgs& A, int64_t r0, int64_t r1, double* sg, double* sgx, double* sa) {
  const int64_t C = A.C;
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t c0 = 0; c0 < C; c0 += 8) {
    const __m256i m = tail_mask(C - c0), ml = mask_lo64(m), mh = mask_hi64(m);
    const __m256d k0 = _mm256_maskload_pd(A.center + c0, ml), k1 = _mm256_maskload_pd(A.center + c0 + 4, mh);
    const __m256 va = _mm256_maskload_ps(A.a + c0, m), vb = _mm256_maskload_ps(A.b + c0, m);
    const __m256 s = _mm256_maskload_ps(A.slope + c0, m);
    __m256d a0 = _mm256_setzero_pd(), a1 = a0, b0 = a0, b1 = a0, e0 = a0, e1 = a0;
    int64_t o = r0 * C + c0;
    for (int64_t r = r0; r < r1; r++, o += C) {
      const __m256 xv = _mm256_maskload_ps(A.x + o, m);
      __m256 gv = _mm256_maskload_ps(A.g + o, m);
      if (A.mask) gv = _mm256_and_ps(gv, mask8(A.mask + o, C - c0));
      const __m256 y = _mm256_fmadd_ps(xv, va, vb);
      const __m256 pos = _mm256_cmp_ps(y, zero, _CMP_GT_OQ);
      const __m256 neg = _mm256_blendv_ps(y, zero, pos);
      const __m256 gy = _mm256_blendv_ps(_mm256_mul_ps(gv, s), gv, pos);
      _mm256_maskstore_ps(A.gy + o, m, gy);
      const __m256d g0 = lo_pd(gy), g1 = hi_pd(gy);
      a0 = _mm256_add_pd(a0, g0);
      a1 = _mm256_add_pd(a1, g1);
      b0 = _mm256_add_pd(b0, _mm256_mul_pd(g0, _mm256_sub_pd(lo_pd(xv), k0)));
      b1 = _mm256_add_pd(b1, _mm256_mul_pd(g1, _mm256_sub_pd(hi_pd(xv), k1)));
      e0 = _mm256_add_pd(e0, _mm256_mul_pd(lo_pd(gv), lo_pd(neg)));
      e1 = _mm256_add_pd(e1, _mm256_mul_pd(hi_pd(gv), hi_pd(neg)));
    }
    _mm256_maskstore_pd(sg + c0, ml, a0);
    _mm256_maskstore_pd(sg + c0 + 4, mh, a1);
    _mm256_maskstore_pd(sgx + c0, ml, b0);
    _mm256_maskstore_pd(sgx + c0 + 4, mh, b1);
    _mm256_maskstore_pd(sa + c0, ml, e0);
    _mm256_maskstore_pd(sa + c0 + 4, mh, e1);
  }
}

}  // namespace tew
}  // namespace qf
