// AVX-512 variants of the training-step elementwise kernels (train_ew.h):
// 16 channels per vector, masked tails; reductions keep their per-channel
// double accumulators in registers (channel groups outside, rows inside), so
// each channel is summed in row order as in train_ew_ref.cc (bit-identical).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "train_ew.h"

namespace qf {
namespace tew {
namespace {

inline __mmask16 tail_mask(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u); }
inline __m512d lo_pd(__m512 v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
inline __m512d hi_pd(__m512 v) { return _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)); }
// Full vectors use plain loads/stores: masked stores (and loads) of whole
// vectors are several times slower on this CPU (AMD Zen) than plain ones.
inline __m512 ld(__mmask16 m, const float* p) { return m == 0xFFFF ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(m, p); }
inline void st(__mmask16 m, float* p, __m512 v) {
  if (m == 0xFFFF)
    _mm512_storeu_ps(p, v);
  else
    _mm512_mask_storeu_ps(p, m, v);
}

}  // namespace

// Reductions: channel groups of up to 4 vectors (64 channels) with their
// double accumulators in registers, rows inside: each row's group is one
// contiguous stretch of up to 256 bytes (streams well), and every channel is
// still summed in row order.
namespace {

template <int NV>
void bn_stats_group(const float* x, int64_t C, int64_t c0, const double* center, int64_t r0, int64_t r1, double* s1,
                    double* s2) {
  __mmask16 m[NV];
  __m512d k[2 * NV], a[2 * NV], b[2 * NV];
  for (int v = 0; v < NV; v++) {
    m[v] = tail_mask(C - c0 - 16 * v);
    const __mmask8 ml = static_cast<__mmask8>(m[v] & 0xFF), mh = static_cast<__mmask8>(m[v] >> 8);
    k[2 * v] = _mm512_maskz_loadu_pd(ml, center + c0 + 16 * v);
    k[2 * v + 1] = _mm512_maskz_loadu_pd(mh, center + c0 + 16 * v + 8);
    a[2 * v] = a[2 * v + 1] = b[2 * v] = b[2 * v + 1] = _mm512_setzero_pd();
  }
  const float* p = x + r0 * C + c0;
  for (int64_t r = r0; r < r1; r++, p += C) {
    for (int v = 0; v < NV; v++) {
      const __m512 xv = ld(m[v], p + 16 * v);
      const __m512d d0 = _mm512_sub_pd(lo_pd(xv), k[2 * v]), d1 = _mm512_sub_pd(hi_pd(xv), k[2 * v + 1]);
      a[2 * v] = _mm512_add_pd(a[2 * v], d0);
      a[2 * v + 1] = _mm512_add_pd(a[2 * v + 1], d1);
      b[2 * v] = _mm512_add_pd(b[2 * v], _mm512_mul_pd(d0, d0));
      b[2 * v + 1] = _mm512_add_pd(b[2 * v + 1], _mm512_mul_pd(d1, d1));
    }
  }
  for (int v = 0; v < NV; v++) {
    const __mmask8 ml = static_cast<__mmask8>(m[v] & 0xFF), mh = static_cast<__mmask8>(m[v] >> 8);
    const int64_t c = c0 + 16 * v;
    _mm512_mask_storeu_pd(s1 + c, ml, a[2 * v]);
    _mm512_mask_storeu_pd(s1 + c + 8, mh, a[2 * v + 1]);
    _mm512_mask_storeu_pd(s2 + c, ml, b[2 * v]);
    _mm512_mask_storeu_pd(s2 + c + 8, mh, b[2 * v + 1]);
  }
}

template <int NV>
void bn_grad_sums_group(const float* x, const float* g, int64_t C, int64_t c0, const double* center, int64_t r0,
                        int64_t r1, double* sg, double* sgx) {
  __mmask16 m[NV];
  __m512d k[2 * NV], a[2 * NV], b[2 * NV];
  for (int v = 0; v < NV; v++) {
    m[v] = tail_mask(C - c0 - 16 * v);
    const __mmask8 ml = static_cast<__mmask8>(m[v] & 0xFF), mh = static_cast<__mmask8>(m[v] >> 8);
    k[2 * v] = _mm512_maskz_loadu_pd(ml, center + c0 + 16 * v);
    k[2 * v + 1] = _mm512_maskz_loadu_pd(mh, center + c0 + 16 * v + 8);
    a[2 * v] = a[2 * v + 1] = b[2 * v] = b[2 * v + 1] = _mm512_setzero_pd();
  }
  int64_t o = r0 * C + c0;
  for (int64_t r = r0; r < r1; r++, o += C) {
    for (int v = 0; v < NV; v++) {
      const __m512 xv = ld(m[v], x + o + 16 * v);
      const __m512 gv = ld(m[v], g + o + 16 * v);
      const __m512d g0 = lo_pd(gv), g1 = hi_pd(gv);
      a[2 * v] = _mm512_add_pd(a[2 * v], g0);
      a[2 * v + 1] = _mm512_add_pd(a[2 * v + 1], g1);
      b[2 * v] = _mm512_add_pd(b[2 * v], _mm512_mul_pd(g0, _mm512_sub_pd(lo_pd(xv), k[2 * v])));
      b[2 * v + 1] = _mm512_add_pd(b[2 * v + 1], _mm512_mul_pd(g1, _mm512_sub_pd(hi_pd(xv), k[2 * v + 1])));
    }
  }
  for (int v = 0; v < NV; v++) {
    const __mmask8 ml = static_cast<__mmask8>(m[v] & 0xFF), mh = static_cast<__mmask8>(m[v] >> 8);
    const int64_t c = c0 + 16 * v;
    _mm512_mask_storeu_pd(sg + c, ml, a[2 * v]);
    _mm512_mask_storeu_pd(sg + c + 8, mh, a[2 * v + 1]);
    _mm512_mask_storeu_pd(sgx + c, ml, b[2 * v]);
    _mm512_mask_storeu_pd(sgx + c + 8, mh, b[2 * v + 1]);
  }
}

template <int NV>
void prelu_backward_group(const float* x, const float* g, const uint8_t* mask, float* gi, int64_t C, int64_t c0,
                          const float* slope, int64_t r0, int64_t r1, double* sa) {
  const __m512 zero = _mm512_setzero_ps();
  __mmask16 m[NV];
  __m512 s[NV];
  __m512d a[2 * NV];
  for (int v = 0; v < NV; v++) {
    m[v] = tail_mask(C - c0 - 16 * v);
    s[v] = ld(m[v], slope + c0 + 16 * v);
    a[2 * v] = a[2 * v + 1] = _mm512_setzero_pd();
  }
  int64_t o = r0 * C + c0;
  for (int64_t r = r0; r < r1; r++, o += C) {
    for (int v = 0; v < NV; v++) {
      const __m512 xv = ld(m[v], x + o + 16 * v);
      __m512 gv = ld(m[v], g + o + 16 * v);
      if (mask) {
        const __m128i mb = _mm_maskz_loadu_epi8(m[v], mask + o + 16 * v);
        gv = _mm512_maskz_mov_ps(_mm_test_epi8_mask(mb, mb), gv);
      }
      const __mmask16 pos = _mm512_cmp_ps_mask(xv, zero, _CMP_GT_OQ);
      const __m512 neg = _mm512_mask_blend_ps(pos, xv, zero);
      st(m[v], gi + o + 16 * v, _mm512_mask_blend_ps(pos, _mm512_mul_ps(gv, s[v]), gv));
      a[2 * v] = _mm512_add_pd(a[2 * v], _mm512_mul_pd(lo_pd(gv), lo_pd(neg)));
      a[2 * v + 1] = _mm512_add_pd(a[2 * v + 1], _mm512_mul_pd(hi_pd(gv), hi_pd(neg)));
    }
  }
  for (int v = 0; v < NV; v++) {
    const __mmask8 ml = static_cast<__mmask8>(m[v] & 0xFF), mh = static_cast<__mmask8>(m[v] >> 8);
    _mm512_mask_storeu_pd(sa + c0 + 16 * v, ml, a[2 * v]);
    _mm512_mask_storeu_pd(sa + c0 + 16 * v + 8, mh, a[2 * v + 1]);
  }
}

// Three double sums per channel: groups of up to 2 vectors (12 accumulators) stay in registers.
template <int NV>
void bn_prelu_sums_group(const BnPreluArgs& A, int64_t c0, int64_t r0, int64_t r1, double* sg, double* sgx,
                         double* sa) {
  const int64_t C = A.C;
  const __m512 zero = _mm512_setzero_ps();
  __mmask16 m[NV];
  __m512 va[NV], vb[NV], s[NV];
  __m512d k[2 * NV], a[2 * NV], b[2 * NV], e[2 * NV];
  for (int v = 0; v < NV; v++) {
    m[v] = tail_mask(C - c0 - 16 * v);
    const __mmask8 ml = static_cast<__mmask8>(m[v] & 0xFF), mh = static_cast<__mmask8>(m[v] >> 8);
    k[2 * v] = _mm512_maskz_loadu_pd(ml, A.center + c0 + 16 * v);
    k[2 * v + 1] = _mm512_maskz_loadu_pd(mh, A.center + c0 + 16 * v + 8);
    va[v] = ld(m[v], A.a + c0 + 16 * v);
    vb[v] = ld(m[v], A.b + c0 + 16 * v);
    s[v] = ld(m[v], A.slope + c0 + 16 * v);
    a[2 * v] = a[2 * v + 1] = b[2 * v] = b[2 * v + 1] = e[2 * v] = e[2 * v + 1] = _mm512_setzero_pd();
  }
  int64_t o = r0 * C + c0;
  for (int64_t r = r0; r < r1; r++, o += C) {
    for (int v = 0; v < NV; v++) {
      const __m512 xv = ld(m[v], A.x + o + 16 * v);
      __m512 gv = ld(m[v], A.g + o + 16 * v);
      if (A.mask) {
        const __m128i mb = _mm_maskz_loadu_epi8(m[v], A.mask + o + 16 * v);
        gv = _mm512_maskz_mov_ps(_mm_test_epi8_mask(mb, mb), gv);
      }
      const __m512 y = _mm512_fmadd_ps(xv, va[v], vb[v]);
      const __mmask16 pos = _mm512_cmp_ps_mask(y, zero, _CMP_GT_OQ);
      const __m512 neg = _mm512_mask_blend_ps(pos, y, zero);
      const __m512 gy = _mm512_mask_blend_ps(pos, _mm512_mul_ps(gv, s[v]), gv);
      st(m[v], A.gy + o + 16 * v, gy);
      const __m512d g0 = lo_pd(gy), g1 = hi_pd(gy);
      a[2 * v] = _mm512_add_pd(a[2 * v], g0);
      a[2 * v + 1] = _mm512_add_pd(a[2 * v + 1], g1);
      b[2 * v] = _mm512_add_pd(b[2 * v], _mm512_mul_pd(g0, _mm512_sub_pd(lo_pd(xv), k[2 * v])));
      b[2 * v + 1] = _mm512_add_pd(b[2 * v + 1], _mm512_mul_pd(g1, _mm512_sub_pd(hi_pd(xv), k[2 * v + 1])));
      e[2 * v] = _mm512_add_pd(e[2 * v], _mm512_mul_pd(lo_pd(gv), lo_pd(neg)));
      e[2 * v + 1] = _mm512_add_pd(e[2 * v + 1], _mm512_mul_pd(hi_pd(gv), hi_pd(neg)));
    }
  }
  for (int v = 0; v < NV; v++) {
    const __mmask8 ml = static_cast<__mmask8>(m[v] & 0xFF), mh = static_cast<__mmask8>(m[v] >> 8);
    const int64_t c = c0 + 16 * v;
    _mm512_mask_storeu_pd(sg + c, ml, a[2 * v]);
    _mm512_mask_storeu_pd(sg + c + 8, mh, a[2 * v + 1]);
    _mm512_mask_storeu_pd(sgx + c, ml, b[2 * v]);
    _mm512_mask_storeu_pd(sgx + c + 8, mh, b[2 * v + 1]);
    _mm512_mask_storeu_pd(sa + c, ml, e[2 * v]);
    _mm512_mask_storeu_pd(sa + c + 8, mh, e[2 * v + 1]);
  }
}

inline int group_vectors(int64_t rest) { return rest > 48 ? 4 : rest > 32 ? 3 : rest > 16 ? 2 : 1; }

}  // namespace

void bn_stats_avx512(const float* x, int64_t C, const double* center, int64_t r0, int64_t r1, double* s1,
                     double* s2) {
  for (int64_t c0 = 0; c0 < C; c0 += 64) {
    switch (group_vectors(C - c0)) {
      case 4: bn_stats_group<4>(x, C, c0, center, r0, r1, s1, s2); break;
      case 3: bn_stats_group<3>(x, C, c0, center, r0, r1, s1, s2); break;
      case 2: bn_stats_group<2>(x, C, c0, center, r0, r1, s1, s2); break;
      default: bn_stats_group<1>(x, C, c0, center, r0, r1, s1, s2); break;
    }
  }
}

void bn_grad_sums_avx512(const float* x, const float* g, int64_t C, const double* center, int64_t r0, int64_t r1,
                         double* sg, double* sgx) {
  for (int64_t c0 = 0; c0 < C; c0 += 64) {
    switch (group_vectors(C - c0)) {
      case 4: bn_grad_sums_group<4>(x, g, C, c0, center, r0, r1, sg, sgx); break;
      case 3: bn_grad_sums_group<3>(x, g, C, c0, center, r0, r1, sg, sgx); break;
      case 2: bn_grad_sums_group<2>(x, g, C, c0, center, r0, r1, sg, sgx); break;
      default: bn_grad_sums_group<1>(x, g, C, c0, center, r0, r1, sg, sgx); break;
    }
  }
}

namespace {

// Flat walk over elements [i0, i1) (i0 at a row start) with 16-lane vectors:
// a masked head up to the output's 64-byte alignment, whole vectors written
// with non-temporal stores, a masked tail. c = channel of the first lane; the
// extended parameter arrays (train_ew.h) make loads at any c < C valid.
template <class Op>
inline void flat_stream(float* out, int64_t C, int64_t i0, int64_t i1, Op op) {
  int64_t i = i0, c = 0;
  auto advance = [&](int64_t n) {
    i += n;
    c += n;
    while (c >= C) c -= C;
  };
  const int64_t mis = static_cast<int64_t>((reinterpret_cast<uintptr_t>(out + i) & 63) / 4);
  if (mis != 0 && i < i1) {
    const int64_t n = std::min<int64_t>(16 - mis, i1 - i);
    const __mmask16 m = tail_mask(n);
    _mm512_mask_storeu_ps(out + i, m, op(i, c, m));
    advance(n);
  }
  for (; i + 16 <= i1;) {
    _mm512_stream_ps(out + i, op(i, c, __mmask16(0xFFFF)));
    advance(16);
  }
  if (i < i1) {
    const __mmask16 m = tail_mask(i1 - i);
    _mm512_mask_storeu_ps(out + i, m, op(i, c, m));
  }
  _mm_sfence();
}

}  // namespace

void channel_affine_avx512(const AffineArgs& A, int64_t r0, int64_t r1) {
  const int64_t C = A.C;
  const __m512 zero = _mm512_setzero_ps();
  if (A.stream) {
    flat_stream(A.y, C, r0 * C, r1 * C, [&](int64_t i, int64_t c, __mmask16 m) {
      __m512 y = ld(m, A.x + i);
      if (A.a) y = _mm512_fmadd_ps(y, _mm512_loadu_ps(A.a + c), _mm512_loadu_ps(A.b + c));
      if (A.slope) {
        const __mmask16 pos = _mm512_cmp_ps_mask(y, zero, _CMP_GT_OQ);
        y = _mm512_mask_blend_ps(pos, _mm512_mul_ps(y, _mm512_loadu_ps(A.slope + c)), y);
      }
      return y;
    });
    return;
  }
  for (int64_t r = r0; r < r1; r++) {
    const float* px = A.x + r * C;
    float* py = A.y + r * C;
    for (int64_t c = 0; c < C; c += 16) {
      const __mmask16 m = tail_mask(C - c);
      __m512 y = ld(m, px + c);
      if (A.a) y = _mm512_fmadd_ps(y, ld(m, A.a + c), ld(m, A.b + c));
      if (A.slope) {
        const __mmask16 pos = _mm512_cmp_ps_mask(y, zero, _CMP_GT_OQ);
        y = _mm512_mask_blend_ps(pos, _mm512_mul_ps(y, ld(m, A.slope + c)), y);
      }
      st(m, py + c, y);
    }
  }
}

void bn_backward_dx_avx512(const DxArgs& A, int64_t r0, int64_t r1) {
  const int64_t C = A.C;
  if (A.stream) {
    flat_stream(A.gi, C, r0 * C, r1 * C, [&](int64_t i, int64_t c, __mmask16 m) {
      __m512 t = _mm512_fmadd_ps(_mm512_loadu_ps(A.a + c), ld(m, A.g + i), _mm512_loadu_ps(A.b + c));
      if (A.k) {
        const __m512 xm = _mm512_sub_ps(ld(m, A.x + i), _mm512_loadu_ps(A.m + c));
        t = _mm512_fmadd_ps(_mm512_loadu_ps(A.k + c), xm, t);
      }
      return t;
    });
    return;
  }
  for (int64_t r = r0; r < r1; r++) {
    const int64_t o = r * C;
    for (int64_t c = 0; c < C; c += 16) {
      const __mmask16 m = tail_mask(C - c);
      __m512 t = _mm512_fmadd_ps(ld(m, A.a + c), ld(m, A.g + o + c), ld(m, A.b + c));
      if (A.k) {
        const __m512 xm = _mm512_sub_ps(ld(m, A.x + o + c), ld(m, A.m + c));
        t = _mm512_fmadd_ps(ld(m, A.k + c), xm, t);
      }
      st(m, A.gi + o + c, t);
    }
  }
}

void prelu_backward_avx512(const float* x, const float* g, const uint8_t* mask, float* gi, int64_t C,
                           const float* slope, int64_t r0, int64_t r1, double* sa) {
  for (int64_t c0 = 0; c0 < C; c0 += 64) {
    switch (group_vectors(C - c0)) {
      case 4: prelu_backward_group<4>(x, g, mask, gi, C, c0, slope, r0, r1, sa); break;
      case 3: prelu_backward_group<3>(x, g, mask, gi, C, c0, slope, r0, r1, sa); break;
      case 2: prelu_backward_group<2>(x, g, mask, gi, C, c0, slope, r0, r1, sa); break;
      default: prelu_backward_group<1>(x, g, mask, gi, C, c0, slope, r0, r1, sa); break;
    }
  }
}

void bn_prelu_sums_avx512(const BnPreluArgs& A, int64_t r0, int64_t r1, double* sg, double* sgx, double* sa) {
  for (int64_t c0 = 0; c0 < A.C; c0 += 32) {
    if (A.C - c0 > 16)
      bn_prelu_sums_group<2>(A, c0, r0, r1, sg, sgx, sa);
    else
      bn_prelu_sums_group<1>(A, c0, r0, r1, sg, sgx, sa);
  }
}

}  // namespace tew
}  // namespace qf
