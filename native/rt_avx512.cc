// AVX-512 variants of the runtime's elementwise kernels (rt.h): 16 lanes,
// masked tails, the same IEEE operations as rt_ref.cc (bit-identical).
#include <immintrin.h>

// gcc 12 reports false "maybe-uninitialized" warnings inside its own AVX-512 conversion intrinsics.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "rt.h"

namespace qf {
namespace rt {

namespace {

inline __mmask16 tail_mask(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u); }

inline __m512 load16(const Operand& o, int64_t i, __mmask16 m) {
  if (o.type == VType::F32) return _mm512_maskz_loadu_ps(m, static_cast<const float*>(o.data) + i);
  const __m128i b = _mm_maskz_loadu_epi8(m, static_cast<const uint8_t*>(o.data) + i);
  const __m512i q = _mm512_sub_epi32(_mm512_cvtepu8_epi32(b), _mm512_set1_epi32(o.zp));
  return _mm512_mul_ps(_mm512_cvtepi32_ps(q), _mm512_set1_ps(o.scale));
}

inline void store16(const Output& o, int64_t i, __m512 y, __mmask16 m) {
  if (o.type == VType::F32) {
    _mm512_mask_storeu_ps(static_cast<float*>(o.data) + i, m, y);
    return;
  }
  __m512 t = _mm512_roundscale_ps(_mm512_div_ps(y, _mm512_set1_ps(o.scale)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  t = _mm512_add_ps(t, _mm512_set1_ps(static_cast<float>(o.zp)));
  t = _mm512_max_ps(t, _mm512_set1_ps(static_cast<float>(o.lo)));  // NaN -> lo (second operand)
  t = _mm512_min_ps(t, _mm512_set1_ps(static_cast<float>(o.hi)));
  const __m128i b = _mm512_cvtusepi32_epi8(_mm512_cvtps_epi32(t));
  _mm_mask_storeu_epi8(static_cast<uint8_t*>(o.data) + i, m, b);
}

// y = float((double)v * a + b) on 16 lanes.
inline __m512 affine16(__m512 v, __m512 a, __m512 b) {
  const __m512d v0 = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
  const __m512d v1 = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  const __m512d a0 = _mm512_cvtps_pd(_mm512_castps512_ps256(a));
  const __m512d a1 = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
  const __m512d b0 = _mm512_cvtps_pd(_mm512_castps512_ps256(b));
  const __m512d b1 = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(b), 1)));
  const __m256 y0 = _mm512_cvtpd_ps(_mm512_add_pd(_mm512_mul_pd(v0, a0), b0));
  const __m256 y1 = _mm512_cvtpd_ps(_mm512_add_pd(_mm512_mul_pd(v1, a1), b1));
  return _mm512_insertf32x8(_mm512_castps256_ps512(y0), y1, 1);
}

}  // namespace

void rt_add_avx512(const AddArgs& g, int64_t i0, int64_t i1) {
  for (int64_t i = i0; i < i1; i += 16) {
    const __mmask16 m = tail_mask(i1 - i);
    const __m512 y = _mm512_add_ps(load16(g.a, i, m), load16(g.b, i, m));
    store16(g.out, i, y, m);
  }
}

void rt_affine_avx512(const AffineArgs& g, int64_t r0, int64_t r1) {
  const int64_t C = g.channels;
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t r = r0; r < r1; r++) {
    for (int64_t c = 0; c < C; c += 16) {
      const __mmask16 m = tail_mask(C - c);
      const int64_t i = r * C + c;
      __m512 y = load16(g.x, i, m);
      if (g.a || g.b) {
        const __m512 a = g.a ? _mm512_maskz_loadu_ps(m, g.a + c) : _mm512_set1_ps(1.f);
        const __m512 b = g.b ? _mm512_maskz_loadu_ps(m, g.b + c) : zero;
        y = affine16(y, a, b);
      }
      switch (g.act) {
        case AffAct::None: break;
        case AffAct::Relu: y = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(y, zero, _CMP_GT_OQ), y); break;
        case AffAct::Prelu: {
          const __mmask16 pos = _mm512_cmp_ps_mask(y, zero, _CMP_GT_OQ);
          y = _mm512_mask_blend_ps(pos, _mm512_mul_ps(y, _mm512_maskz_loadu_ps(m, g.slope + c)), y);
          break;
        }
        case AffAct::Clamp: {
          const __m512 lo = _mm512_set1_ps(g.lo), hi = _mm512_set1_ps(g.hi);
          y = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(y, lo, _CMP_LT_OQ), y, lo);
          y = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(y, hi, _CMP_GT_OQ), y, hi);
          break;
        }
      }
      store16(g.out, i, y, m);
    }
  }
}

namespace {

inline __m512 act16(const AffAct act, __m512 y, const float* slope, int64_t c, __mmask16 m, float lo, float hi) {
  const __m512 zero = _mm512_setzero_ps();
  switch (act) {
    case AffAct::None: return y;
    case AffAct::Relu: return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(y, zero, _CMP_GT_OQ), y);
    case AffAct::Prelu: {
      const __mmask16 pos = _mm512_cmp_ps_mask(y, zero, _CMP_GT_OQ);
      return _mm512_mask_blend_ps(pos, _mm512_mul_ps(y, _mm512_maskz_loadu_ps(m, slope + c)), y);
    }
    case AffAct::Clamp: {
      const __m512 l = _mm512_set1_ps(lo), h = _mm512_set1_ps(hi);
      y = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(y, l, _CMP_LT_OQ), y, l);
      return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(y, h, _CMP_GT_OQ), y, h);
    }
  }
  return y;
}

// P output pixels (consecutive ox of one row) x NB vectors of 16 output channels from vector v0.
template <int P, int NB, bool CHECK>
inline void ci_pixels(const ConvInputArgs& A, int64_t n, int64_t oy, int64_t ox0, int64_t v0, int64_t ky0, int64_t ky1) {
  const ConvGeom& g = A.g;
  const int64_t C = g.c, cpad = A.cpad;
  __m512 acc[P][NB];
  for (int p = 0; p < P; p++)
    for (int k = 0; k < NB; k++) acc[p][k] = _mm512_setzero_ps();
  for (int64_t ky = ky0; ky < ky1; ky++) {
    const int64_t iy = oy * g.sh - g.pt + ky * g.dh;
    const uint8_t* rowp = A.x + (n * g.h + iy) * g.w * C;
    for (int64_t kx = 0; kx < g.kw; kx++) {
      const float* wr = A.wt + (ky * g.kw + kx) * C * cpad + v0 * 16;
      const uint8_t* px[P];
      bool ok[P];
      for (int p = 0; p < P; p++) {
        const int64_t ix = (ox0 + p) * g.sw - g.pl + kx * g.dw;
        ok[p] = !CHECK || (ix >= 0 && ix < g.w);
        px[p] = rowp + ix * C;
      }
      for (int64_t ci = 0; ci < C; ci++) {
        __m512 wv[NB];
        for (int k = 0; k < NB; k++) wv[k] = _mm512_load_ps(wr + ci * cpad + k * 16);
        const float* tab = A.table + ci * 256;
        for (int p = 0; p < P; p++) {
          if (CHECK && !ok[p]) continue;
          const __m512 v = _mm512_set1_ps(tab[px[p][ci]]);
          for (int k = 0; k < NB; k++) acc[p][k] = _mm512_fmadd_ps(v, wv[k], acc[p][k]);
        }
      }
    }
  }
  const __m512 zero = _mm512_setzero_ps();
  for (int k = 0; k < NB; k++) {
    const int64_t j0 = (v0 + k) * 16;
    const __mmask16 m = tail_mask(g.cout - j0);
    const __m512 cb = A.cbias ? _mm512_maskz_loadu_ps(m, A.cbias + j0) : zero;
    const __m512 a = A.a ? _mm512_maskz_loadu_ps(m, A.a + j0) : _mm512_set1_ps(1.f);
    const __m512 b = A.b ? _mm512_maskz_loadu_ps(m, A.b + j0) : zero;
    for (int p = 0; p < P; p++) {
      __m512 y = acc[p][k];
      if (A.cbias) y = _mm512_add_ps(y, cb);
      if (A.a || A.b) y = affine16(y, a, b);
      y = act16(A.act, y, A.slope, j0, m, A.lo, A.hi);
      store16(A.out, ((n * g.oh + oy) * g.ow + ox0 + p) * g.cout + j0, y, m);
    }
  }
}

template <int P, bool CHECK>
inline void ci_all(const ConvInputArgs& A, int64_t n, int64_t oy, int64_t ox0, int64_t ky0, int64_t ky1) {
  const int64_t nv = A.cpad / 16;
  int64_t v = 0;
  for (; v + 4 <= nv; v += 4) ci_pixels<P, 4, CHECK>(A, n, oy, ox0, v, ky0, ky1);
  switch (nv - v) {
    case 3: ci_pixels<P, 3, CHECK>(A, n, oy, ox0, v, ky0, ky1); break;
    case 2: ci_pixels<P, 2, CHECK>(A, n, oy, ox0, v, ky0, ky1); break;
    case 1: ci_pixels<P, 1, CHECK>(A, n, oy, ox0, v, ky0, ky1); break;
    default: break;
  }
}

}  // namespace
}  // namespace rt
}  // namespace qf

#include "rt_conv_rows.h"

namespace qf {
namespace rt {

void rt_conv_input_avx512(const ConvInputArgs& A, int64_t r0, int64_t r1) { ci_rows(A, r0, r1); }

}  // namespace rt
}  // namespace qf
