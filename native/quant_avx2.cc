// AVX2 variants of the quantization kernels: 8 lanes, scalar tails that use
// the same formula. Bit-exact with quant_ref.cc (semantics: quant.h).
#include <immintrin.h>

#include <cmath>

#include "quant.h"

namespace qf {
namespace {

constexpr int kRne = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

// Low byte of each of the 8 dwords, packed into the low 8 bytes.
inline __m128i low_bytes(__m256i v) {
  const __m256i shuf = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,  //
                                        0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
  __m256i b = _mm256_shuffle_epi8(v, shuf);
  b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 1, 1, 1, 1, 1));
  return _mm256_castsi256_si128(b);
}

inline float rne_s(float v) { return std::nearbyint(v); }
inline float clamp_s(float r, float lo, float hi) {
  float v = (r < lo) ? lo : r;
  return (v > hi) ? hi : v;
}

struct Params8 {
  __m256 s, lo, hi;
  __m256i z;
};

template <bool PE>
inline void load_params(const float* scale, const int32_t* zp, int64_t i, __m256 qminf, __m256 qmaxf, Params8& p) {
  if (PE) {
    p.s = _mm256_loadu_ps(scale + i);
    p.z = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(zp + i));
    __m256 zf = _mm256_cvtepi32_ps(p.z);  // exact: |zp| < 2^24
    p.lo = _mm256_sub_ps(qminf, zf);      // exact: small integers
    p.hi = _mm256_sub_ps(qmaxf, zf);
  }
}

template <bool PE>
void quantize_impl(const QuantRun& r) {
  const float* x = r.x;
  uint8_t* out = static_cast<uint8_t*>(r.out);
  const float* scale = r.scale;
  const int32_t* zp = r.zp;
  const __m256 qminf = _mm256_set1_ps(static_cast<float>(r.qmin)), qmaxf = _mm256_set1_ps(static_cast<float>(r.qmax));
  Params8 p;
  p.s = _mm256_set1_ps(r.scale[0]);
  p.z = _mm256_set1_epi32(r.zp[0]);
  p.lo = _mm256_set1_ps(static_cast<float>(r.qmin - r.zp[0]));
  p.hi = _mm256_set1_ps(static_cast<float>(r.qmax - r.zp[0]));
  const int64_t n = r.n;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    load_params<PE>(scale, zp, i, qminf, qmaxf, p);
    __m256 rr = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(x + i), p.s), kRne);
    __m256 rc = _mm256_min_ps(p.hi, _mm256_max_ps(p.lo, rr));
    rc = _mm256_and_ps(rc, _mm256_cmp_ps(rc, rc, _CMP_ORD_Q));  // NaN -> 0 (q = zp)
    __m256i q = _mm256_add_epi32(_mm256_cvttps_epi32(rc), p.z);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out + i), low_bytes(q));
  }
  for (; i < n; i++) {
    const int64_t k = PE ? i : 0;
    const float s = r.scale[k];
    const int32_t zp = r.zp[k];
    const float rc = clamp_s(rne_s(x[i] / s), static_cast<float>(r.qmin - zp), static_cast<float>(r.qmax - zp));
    out[i] = static_cast<uint8_t>((rc != rc) ? zp : static_cast<int32_t>(rc) + zp);
  }
}

template <bool PE, bool MASK>
void fake_quantize_impl(const QuantRun& r) {
  const float* x = r.x;
  float* out = static_cast<float*>(r.out);
  uint8_t* mask = r.mask;
  const float* scale = r.scale;
  const int32_t* zp = r.zp;
  const __m256 qminf = _mm256_set1_ps(static_cast<float>(r.qmin)), qmaxf = _mm256_set1_ps(static_cast<float>(r.qmax));
  Params8 p;
  p.s = _mm256_set1_ps(r.scale[0]);
  p.z = _mm256_set1_epi32(r.zp[0]);
  p.lo = _mm256_set1_ps(static_cast<float>(r.qmin - r.zp[0]));
  p.hi = _mm256_set1_ps(static_cast<float>(r.qmax - r.zp[0]));
  const __m256i one = _mm256_set1_epi32(1);
  const int64_t n = r.n;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    load_params<PE>(scale, zp, i, qminf, qmaxf, p);
    __m256 rr = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(x + i), p.s), kRne);
    __m256 rc = _mm256_min_ps(p.hi, _mm256_max_ps(p.lo, rr));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(rc, p.s));
    if (MASK) {
      __m256 in = _mm256_and_ps(_mm256_cmp_ps(rr, p.lo, _CMP_GE_OQ), _mm256_cmp_ps(rr, p.hi, _CMP_LE_OQ));
      __m256i b = _mm256_and_si256(_mm256_castps_si256(in), one);
      _mm_storel_epi64(reinterpret_cast<__m128i*>(mask + i), low_bytes(b));
    }
  }
  for (; i < n; i++) {
    const int64_t k = PE ? i : 0;
    const float s = r.scale[k];
    const int32_t zp = r.zp[k];
    const float lo = static_cast<float>(r.qmin - zp), hi = static_cast<float>(r.qmax - zp);
    const float q = rne_s(x[i] / s);
    if (MASK) mask[i] = (lo <= q && q <= hi) ? 1 : 0;
    out[i] = clamp_s(q, lo, hi) * s;
  }
}

template <bool PE, bool SIGNED>
void dequantize_impl(const DequantRun& r) {
  const uint8_t* q = static_cast<const uint8_t*>(r.q);
  float* out = r.out;
  __m256 s = _mm256_set1_ps(r.scale[0]);
  __m256i z = _mm256_set1_epi32(r.zp[0]);
  const int64_t n = r.n;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    if (PE) {
      s = _mm256_loadu_ps(r.scale + i);
      z = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r.zp + i));
    }
    __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + i));
    __m256i v = SIGNED ? _mm256_cvtepi8_epi32(b) : _mm256_cvtepu8_epi32(b);
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(v, z)), s));
  }
  for (; i < n; i++) {
    const int64_t k = PE ? i : 0;
    const int32_t v = SIGNED ? static_cast<int32_t>(static_cast<const int8_t*>(r.q)[i]) : static_cast<int32_t>(q[i]);
    out[i] = static_cast<float>(v - r.zp[k]) * r.scale[k];
  }
}

}  // namespace

void quantize_avx2(const QuantRun& r) {
  if (r.per_elem) quantize_impl<true>(r);
  else quantize_impl<false>(r);
}

void fake_quantize_avx2(const QuantRun& r) {
  if (r.per_elem) {
    if (r.mask) fake_quantize_impl<true, true>(r);
    else fake_quantize_impl<true, false>(r);
  } else {
    if (r.mask) fake_quantize_impl<false, true>(r);
    else fake_quantize_impl<false, false>(r);
  }
}

void dequantize_avx2(const DequantRun& r) {
  if (r.per_elem) {
    if (r.q_signed) dequantize_impl<true, true>(r);
    else dequantize_impl<true, false>(r);
  } else {
    if (r.q_signed) dequantize_impl<false, true>(r);
    else dequantize_impl<false, false>(r);
  }
}

void fake_quantize_backward_avx2(const float* g, float* gi, const uint8_t* mask, int64_t n, bool accumulate,
                                   bool /*stream*/) {
  int64_t i = 0;
  if (mask == nullptr) {
    if (!accumulate && g == gi) return;  // in place, straight through: nothing to do
    for (; i + 8 <= n; i += 8) {
      __m256 v = _mm256_loadu_ps(g + i);
      if (accumulate) v = _mm256_add_ps(_mm256_loadu_ps(gi + i), v);
      _mm256_storeu_ps(gi + i, v);
    }
    for (; i < n; i++) gi[i] = accumulate ? gi[i] + g[i] : g[i];
    return;
  }
  const __m256i zero = _mm256_setzero_si256();
  for (; i + 8 <= n; i += 8) {
    __m256i mb = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(mask + i)));
    __m256 stop = _mm256_castsi256_ps(_mm256_cmpeq_epi32(mb, zero));
    __m256 v = _mm256_loadu_ps(g + i);
    if (accumulate) {
      __m256 a = _mm256_loadu_ps(gi + i);
      _mm256_storeu_ps(gi + i, _mm256_blendv_ps(_mm256_add_ps(a, v), a, stop));
    } else {
      _mm256_storeu_ps(gi + i, _mm256_andnot_ps(stop, v));
    }
  }
  for (; i < n; i++) {
    const bool pass = mask[i] != 0;
    if (accumulate) {
      if (pass) gi[i] = gi[i] + g[i];
    } else {
      gi[i] = pass ? g[i] : 0.0f;
    }
  }
}

void min_max_avx2(const float* x, int64_t n, float* mn, float* mx, bool per_elem) {
  // MINPS(x, acc) returns acc when x is NaN: NaN inputs are ignored.
  int64_t i = 0;
  if (per_elem) {
    for (; i + 8 <= n; i += 8) {
      __m256 v = _mm256_loadu_ps(x + i);
      _mm256_storeu_ps(mn + i, _mm256_min_ps(v, _mm256_loadu_ps(mn + i)));
      _mm256_storeu_ps(mx + i, _mm256_max_ps(v, _mm256_loadu_ps(mx + i)));
    }
    for (; i < n; i++) {
      const float v = x[i];
      if (v < mn[i]) mn[i] = v;
      if (v > mx[i]) mx[i] = v;
    }
    return;
  }
  __m256 a0 = _mm256_set1_ps(*mn), a1 = a0, a2 = a0, a3 = a0;
  __m256 b0 = _mm256_set1_ps(*mx), b1 = b0, b2 = b0, b3 = b0;
  for (; i + 32 <= n; i += 32) {
    __m256 v0 = _mm256_loadu_ps(x + i), v1 = _mm256_loadu_ps(x + i + 8);
    __m256 v2 = _mm256_loadu_ps(x + i + 16), v3 = _mm256_loadu_ps(x + i + 24);
    a0 = _mm256_min_ps(v0, a0); b0 = _mm256_max_ps(v0, b0);
    a1 = _mm256_min_ps(v1, a1); b1 = _mm256_max_ps(v1, b1);
    a2 = _mm256_min_ps(v2, a2); b2 = _mm256_max_ps(v2, b2);
    a3 = _mm256_min_ps(v3, a3); b3 = _mm256_max_ps(v3, b3);
  }
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i);
    a0 = _mm256_min_ps(v, a0);
    b0 = _mm256_max_ps(v, b0);
  }
  a0 = _mm256_min_ps(_mm256_min_ps(a0, a1), _mm256_min_ps(a2, a3));
  b0 = _mm256_max_ps(_mm256_max_ps(b0, b1), _mm256_max_ps(b2, b3));
  alignas(32) float ta[8], tb[8];
  _mm256_store_ps(ta, a0);
  _mm256_store_ps(tb, b0);
  float a = ta[0], b = tb[0];
  for (int j = 1; j < 8; j++) {
    if (ta[j] < a) a = ta[j];
    if (tb[j] > b) b = tb[j];
  }
  for (; i < n; i++) {
    const float v = x[i];
    if (v < a) a = v;
    if (v > b) b = v;
  }
  *mn = a;
  *mx = b;
}

}  // namespace qf
