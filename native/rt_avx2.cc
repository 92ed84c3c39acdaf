// AVX2 variants of the runtime's elementwise kernels (rt.h): 8 lanes, scalar
// tails with the same formulas, the same IEEE operations as rt_ref.cc
// (bit-identical).
#include <immintrin.h>

#include <cmath>

#include "rt.h"

namespace qf {
namespace rt {

namespace {

inline float load1(const Operand& o, int64_t i) {
  if (o.type == VType::F32) return static_cast<const float*>(o.data)[i];
  const int32_t q = static_cast<const uint8_t*>(o.data)[i];
  return static_cast<float>(q - o.zp) * o.scale;
}

inline void store1(const Output& o, int64_t i, float y) {
  if (o.type == VType::F32) {
    static_cast<float*>(o.data)[i] = y;
    return;
  }
  const float t = std::nearbyint(y / o.scale) + static_cast<float>(o.zp);
  const float lo = static_cast<float>(o.lo), hi = static_cast<float>(o.hi);
  const float q = t >= lo ? (t < hi ? t : hi) : lo;
  static_cast<uint8_t*>(o.data)[i] = static_cast<uint8_t>(static_cast<int32_t>(q));
}

inline __m256 load8(const Operand& o, int64_t i) {
  if (o.type == VType::F32) return _mm256_loadu_ps(static_cast<const float*>(o.data) + i);
  const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(static_cast<const uint8_t*>(o.data) + i));
  const __m256i q = _mm256_sub_epi32(_mm256_cvtepu8_epi32(b), _mm256_set1_epi32(o.zp));
  return _mm256_mul_ps(_mm256_cvtepi32_ps(q), _mm256_set1_ps(o.scale));
}

inline void store8(const Output& o, int64_t i, __m256 y) {
  if (o.type == VType::F32) {
    _mm256_storeu_ps(static_cast<float*>(o.data) + i, y);
    return;
  }
  __m256 t = _mm256_round_ps(_mm256_div_ps(y, _mm256_set1_ps(o.scale)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  t = _mm256_add_ps(t, _mm256_set1_ps(static_cast<float>(o.zp)));
  t = _mm256_max_ps(t, _mm256_set1_ps(static_cast<float>(o.lo)));  // NaN -> lo (second operand)
  t = _mm256_min_ps(t, _mm256_set1_ps(static_cast<float>(o.hi)));
  const __m256i q = _mm256_cvtps_epi32(t);
  const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(static_cast<uint8_t*>(o.data) + i), _mm_packus_epi16(w, w));
}

inline __m256 affine8(__m256 v, __m256 a, __m256 b) {
  const __m256d v0 = _mm256_cvtps_pd(_mm256_castps256_ps128(v)), v1 = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
  const __m256d a0 = _mm256_cvtps_pd(_mm256_castps256_ps128(a)), a1 = _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1));
  const __m256d b0 = _mm256_cvtps_pd(_mm256_castps256_ps128(b)), b1 = _mm256_cvtps_pd(_mm256_extractf128_ps(b, 1));
  const __m128 y0 = _mm256_cvtpd_ps(_mm256_add_pd(_mm256_mul_pd(v0, a0), b0));
  const __m128 y1 = _mm256_cvtpd_ps(_mm256_add_pd(_mm256_mul_pd(v1, a1), b1));
  return _mm256_insertf128_ps(_mm256_castps128_ps256(y0), y1, 1);
}

inline float affine1(const AffineArgs& g, float v, int64_t c) {
  const double a = g.a ? static_cast<double>(g.a[c]) : 1.0;
  const double b = g.b ? static_cast<double>(g.b[c]) : 0.0;
  float y = static_cast<float>(static_cast<double>(v) * a + b);
  switch (g.act) {
    case AffAct::None: break;
    case AffAct::Relu: y = y > 0.f ? y : 0.f; break;
    case AffAct::Prelu: y = y > 0.f ? y : y * g.slope[c]; break;
    case AffAct::Clamp: y = y < g.lo ? g.lo : (y > g.hi ? g.hi : y); break;
  }
  return y;
}

}  // namespace

void rt_add_avx2(const AddArgs& g, int64_t i0, int64_t i1) {
  int64_t i = i0;
  for (; i + 8 <= i1; i += 8) store8(g.out, i, _mm256_add_ps(load8(g.a, i), load8(g.b, i)));
  for (; i < i1; i++) store1(g.out, i, load1(g.a, i) + load1(g.b, i));
}

void rt_affine_avx2(const AffineArgs& g, int64_t r0, int64_t r1) {
  const int64_t C = g.channels;
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t r = r0; r < r1; r++) {
    int64_t c = 0;
    for (; c + 8 <= C; c += 8) {
      const int64_t i = r * C + c;
      __m256 y = load8(g.x, i);
      if (g.a || g.b) {
        const __m256 a = g.a ? _mm256_loadu_ps(g.a + c) : _mm256_set1_ps(1.f);
        const __m256 b = g.b ? _mm256_loadu_ps(g.b + c) : zero;
        y = affine8(y, a, b);
      }
      switch (g.act) {
        case AffAct::None: break;
        case AffAct::Relu: y = _mm256_and_ps(_mm256_cmp_ps(y, zero, _CMP_GT_OQ), y); break;
        case AffAct::Prelu:
          y = _mm256_blendv_ps(_mm256_mul_ps(y, _mm256_loadu_ps(g.slope + c)), y, _mm256_cmp_ps(y, zero, _CMP_GT_OQ));
          break;
        case AffAct::Clamp: {
          const __m256 lo = _mm256_set1_ps(g.lo), hi = _mm256_set1_ps(g.hi);
          y = _mm256_blendv_ps(y, lo, _mm256_cmp_ps(y, lo, _CMP_LT_OQ));
          y = _mm256_blendv_ps(y, hi, _mm256_cmp_ps(y, hi, _CMP_GT_OQ));
          break;
        }
      }
      store8(g.out, i, y);
    }
    for (; c < C; c++) {
      const int64_t i = r * C + c;
      store1(g.out, i, affine1(g, load1(g.x, i), c));
    }
  }
}

namespace {

inline __m256 act8(AffAct act, __m256 y, const float* slope, float lo, float hi) {
  const __m256 zero = _mm256_setzero_ps();
  switch (act) {
    case AffAct::None: return y;
    case AffAct::Relu: return _mm256_and_ps(_mm256_cmp_ps(y, zero, _CMP_GT_OQ), y);
    case AffAct::Prelu: return _mm256_blendv_ps(_mm256_mul_ps(y, _mm256_loadu_ps(slope)), y, _mm256_cmp_ps(y, zero, _CMP_GT_OQ));
    case AffAct::Clamp: {
      const __m256 l = _mm256_set1_ps(lo), h = _mm256_set1_ps(hi);
      y = _mm256_blendv_ps(y, l, _mm256_cmp_ps(y, l, _CMP_LT_OQ));
      return _mm256_blendv_ps(y, h, _mm256_cmp_ps(y, h, _CMP_GT_OQ));
    }
  }
  return y;
}

// P pixels x NB vectors of 8 channels from channel j0v (a multiple of 8).
template <int P, int NB, bool CHECK>
inline void ci8_pixels(const ConvInputArgs& A, int64_t n, int64_t oy, int64_t ox0, int64_t j0v, int64_t ky0, int64_t ky1) {
  const ConvGeom& g = A.g;
  const int64_t C = g.c, cpad = A.cpad;
  __m256 acc[P][NB];
  for (int p = 0; p < P; p++)
    for (int k = 0; k < NB; k++) acc[p][k] = _mm256_setzero_ps();
  for (int64_t ky = ky0; ky < ky1; ky++) {
    const int64_t iy = oy * g.sh - g.pt + ky * g.dh;
    const uint8_t* rowp = A.x + (n * g.h + iy) * g.w * C;
    for (int64_t kx = 0; kx < g.kw; kx++) {
      const float* wr = A.wt + (ky * g.kw + kx) * C * cpad + j0v;
      const uint8_t* px[P];
      bool ok[P];
      for (int p = 0; p < P; p++) {
        const int64_t ix = (ox0 + p) * g.sw - g.pl + kx * g.dw;
        ok[p] = !CHECK || (ix >= 0 && ix < g.w);
        px[p] = rowp + ix * C;
      }
      for (int64_t ci = 0; ci < C; ci++) {
        __m256 wv[NB];
        for (int k = 0; k < NB; k++) wv[k] = _mm256_load_ps(wr + ci * cpad + k * 8);
        const float* tab = A.table + ci * 256;
        for (int p = 0; p < P; p++) {
          if (CHECK && !ok[p]) continue;
          const __m256 v = _mm256_set1_ps(tab[px[p][ci]]);
          for (int k = 0; k < NB; k++) acc[p][k] = _mm256_fmadd_ps(v, wv[k], acc[p][k]);
        }
      }
    }
  }
  alignas(32) float tmp[8];
  for (int k = 0; k < NB; k++) {
    const int64_t j0 = j0v + k * 8;
    const int64_t valid = g.cout - j0 < 8 ? g.cout - j0 : 8;
    if (valid <= 0) break;
    for (int p = 0; p < P; p++) {
      const int64_t o = ((n * g.oh + oy) * g.ow + ox0 + p) * g.cout + j0;
      __m256 y = acc[p][k];
      if (valid == 8) {
        if (A.cbias) y = _mm256_add_ps(y, _mm256_loadu_ps(A.cbias + j0));
        if (A.a || A.b) y = affine8(y, A.a ? _mm256_loadu_ps(A.a + j0) : _mm256_set1_ps(1.f), A.b ? _mm256_loadu_ps(A.b + j0) : _mm256_setzero_ps());
        y = act8(A.act, y, A.slope ? A.slope + j0 : nullptr, A.lo, A.hi);
        store8(A.out, o, y);
      } else {
        _mm256_store_ps(tmp, y);
        for (int64_t l = 0; l < valid; l++) {
          const int64_t j = j0 + l;
          float v = A.cbias ? tmp[l] + A.cbias[j] : tmp[l];
          if (A.a || A.b) {
            const double a = A.a ? static_cast<double>(A.a[j]) : 1.0;
            const double b = A.b ? static_cast<double>(A.b[j]) : 0.0;
            v = static_cast<float>(static_cast<double>(v) * a + b);
          }
          switch (A.act) {
            case AffAct::None: break;
            case AffAct::Relu: v = v > 0.f ? v : 0.f; break;
            case AffAct::Prelu: v = v > 0.f ? v : v * A.slope[j]; break;
            case AffAct::Clamp: v = v < A.lo ? A.lo : (v > A.hi ? A.hi : v); break;
          }
          store1(A.out, o + l, v);
        }
      }
    }
  }
}

template <int P, bool CHECK>
inline void ci_all(const ConvInputArgs& A, int64_t n, int64_t oy, int64_t ox0, int64_t ky0, int64_t ky1) {
  const int64_t nv = (A.g.cout + 7) / 8;
  int64_t v = 0;
  for (; v + 2 <= nv; v += 2) ci8_pixels<P, 2, CHECK>(A, n, oy, ox0, v * 8, ky0, ky1);
  if (v < nv) ci8_pixels<P, 1, CHECK>(A, n, oy, ox0, v * 8, ky0, ky1);
}

}  // namespace
}  // namespace rt
}  // namespace qf

#include "rt_conv_rows.h"

namespace qf {
namespace rt {

void rt_conv_input_avx2(const ConvInputArgs& A, int64_t r0, int64_t r1) { ci_rows(A, r0, r1); }

}  // namespace rt
}  // namespace qf
