// AVX-512 (F/BW/DQ/VL) variants of the quantization kernels: 16 lanes.
// Bit-exact with quant_ref.cc (semantics: quant.h): IEEE division, round half
// to even by VRNDSCALEPS (imm 0x08), MAXPS/MINPS operand order matching the
// reference's comparisons.
//
// Memory: main loops use plain (unmasked) loads and stores; masks only for
// the tail (masked stores are slow on AMD Zen 4/5). With `stream` (set by
// quant.cc for outputs too large to stay in cache) the output is written
// with non-temporal stores on 64-byte aligned lines (no read-for-ownership);
// the caller issues the SFENCE once per thread chunk (quant.cc), not once per
// run (runs can be as short as one channel).

// GCC 12 warns about the intentionally undefined registers inside its own
// AVX-512 intrinsics (_mm512_undefined_*) at -O3 -Wall: not our code.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "quant.h"

namespace qf {
namespace {

constexpr int kRne = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
constexpr __mmask16 kAll = 0xffff;

inline __mmask16 tail_mask(int64_t left) {
  return left >= 16 ? kAll : static_cast<__mmask16>((1u << left) - 1u);
}
inline __m512 load16(const float* p, __mmask16 m) { return m == kAll ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(m, p); }
inline __m512i load16i(const int32_t* p, __mmask16 m) {
  return m == kAll ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi32(m, p);
}
inline __m128i load16b(const uint8_t* p, __mmask16 m) {
  return m == kAll ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)) : _mm_maskz_loadu_epi8(m, p);
}
inline void store16(float* p, __mmask16 m, __m512 v) {
  if (m == kAll) _mm512_storeu_ps(p, v);
  else _mm512_mask_storeu_ps(p, m, v);
}
inline void store16b(uint8_t* p, __mmask16 m, __m128i v) {
  if (m == kAll) _mm_storeu_si128(reinterpret_cast<__m128i*>(p), v);
  else _mm_mask_storeu_epi8(p, m, v);
}
// Elements before `p + k` is 64-byte aligned (elements of `size` bytes), at most n.
inline int64_t head_to_line(const void* p, int size, int64_t n) {
  const int64_t h = static_cast<int64_t>((64 - (reinterpret_cast<uintptr_t>(p) & 63)) & 63) / size;
  return h < n ? h : n;
}

// Quantization parameters of one run; per element (PE) they are loaded per vector.
struct QCtx {
  const float* scale;
  const int32_t* zp;
  __m512 qminf, qmaxf, s, lo, hi;
  __m512i z;
};
inline QCtx make_ctx(const QuantRun& r) {
  QCtx c;
  c.scale = r.scale;
  c.zp = r.zp;
  c.qminf = _mm512_set1_ps(static_cast<float>(r.qmin));
  c.qmaxf = _mm512_set1_ps(static_cast<float>(r.qmax));
  c.s = _mm512_set1_ps(r.scale[0]);
  c.z = _mm512_set1_epi32(r.zp[0]);
  c.lo = _mm512_set1_ps(static_cast<float>(r.qmin - r.zp[0]));
  c.hi = _mm512_set1_ps(static_cast<float>(r.qmax - r.zp[0]));
  return c;
}
template <bool PE>
inline void params16(const QCtx& c, int64_t i, __mmask16 m, __m512& s, __m512i& z, __m512& lo, __m512& hi) {
  if (!PE) {
    s = c.s;
    z = c.z;
    lo = c.lo;
    hi = c.hi;
    return;
  }
  // Masked-off lanes get s = 0 (x/0 = NaN or Inf there); they are never stored.
  s = load16(c.scale + i, m);
  z = load16i(c.zp + i, m);
  const __m512 zf = _mm512_cvtepi32_ps(z);  // exact: |zp| < 2^24
  lo = _mm512_sub_ps(c.qminf, zf);          // exact: small integers
  hi = _mm512_sub_ps(c.qmaxf, zf);
}

// 16 quantized values (low bytes of q) from x[i..i+16).
template <bool PE>
inline __m128i quant16(const QCtx& c, const float* x, int64_t i, __mmask16 m) {
  __m512 s, lo, hi;
  __m512i z;
  params16<PE>(c, i, m, s, z, lo, hi);
  const __m512 r = _mm512_roundscale_ps(_mm512_div_ps(load16(x + i, m), s), kRne);
  __m512 rc = _mm512_min_ps(hi, _mm512_max_ps(lo, r));
  rc = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(rc, rc, _CMP_ORD_Q), rc);  // NaN -> 0 (q = zp)
  return _mm512_cvtepi32_epi8(_mm512_add_epi32(_mm512_cvttps_epi32(rc), z));
}

// 16 fake-quantized values from x[i..i+16); *inside = lanes with lo <= r <= hi.
template <bool PE>
inline __m512 fake16(const QCtx& c, const float* x, int64_t i, __mmask16 m, __mmask16* inside) {
  __m512 s, lo, hi;
  __m512i z;
  params16<PE>(c, i, m, s, z, lo, hi);
  const __m512 r = _mm512_roundscale_ps(_mm512_div_ps(load16(x + i, m), s), kRne);
  *inside = _mm512_mask_cmp_ps_mask(_mm512_cmp_ps_mask(r, lo, _CMP_GE_OQ), r, hi, _CMP_LE_OQ);
  return _mm512_mul_ps(_mm512_min_ps(hi, _mm512_max_ps(lo, r)), s);
}

template <bool PE, bool NT>
void quantize_impl(const QuantRun& r) {
  const QCtx c = make_ctx(r);
  const float* x = r.x;
  uint8_t* out = static_cast<uint8_t*>(r.out);
  const int64_t n = r.n;
  int64_t i = 0;
  if (NT) {
    const int64_t h = head_to_line(out, 1, n);
    for (; i < h; i += 16) {
      const __mmask16 m = tail_mask(h - i);
      store16b(out + i, m, quant16<PE>(c, x, i, m));
    }
    i = h;
    for (; i + 64 <= n; i += 64) {
      const __m256i a = _mm256_inserti128_si256(_mm256_castsi128_si256(quant16<PE>(c, x, i, kAll)),
                                                quant16<PE>(c, x, i + 16, kAll), 1);
      const __m256i b = _mm256_inserti128_si256(_mm256_castsi128_si256(quant16<PE>(c, x, i + 32, kAll)),
                                                quant16<PE>(c, x, i + 48, kAll), 1);
      _mm512_stream_si512(reinterpret_cast<__m512i*>(out + i), _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1));
    }
  }
  for (; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    store16b(out + i, m, quant16<PE>(c, x, i, m));
  }
}

template <bool PE, bool MASK, bool NT>
void fake_quantize_impl(const QuantRun& r) {
  const QCtx c = make_ctx(r);
  const float* x = r.x;
  float* out = static_cast<float*>(r.out);
  uint8_t* mask = r.mask;
  const __m128i one = _mm_set1_epi8(1);
  const int64_t n = r.n;
  int64_t i = 0;
  __mmask16 in;
  if (NT) {
    const int64_t h = head_to_line(out, 4, n);
    for (; i < h; i += 16) {
      const __mmask16 m = tail_mask(h - i);
      store16(out + i, m, fake16<PE>(c, x, i, m, &in));
      if (MASK) store16b(mask + i, m, _mm_maskz_mov_epi8(in, one));
    }
    i = h;
    for (; i + 16 <= n; i += 16) {
      _mm512_stream_ps(out + i, fake16<PE>(c, x, i, kAll, &in));
      if (MASK) store16b(mask + i, kAll, _mm_maskz_mov_epi8(in, one));
    }
  }
  for (; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    store16(out + i, m, fake16<PE>(c, x, i, m, &in));
    if (MASK) store16b(mask + i, m, _mm_maskz_mov_epi8(in, one));
  }
}

template <bool PE, bool SIGNED>
inline __m512 dequant16(const uint8_t* q, const float* scale, const int32_t* zp, __m512 s, __m512i z, int64_t i,
                        __mmask16 m) {
  if (PE) {
    s = load16(scale + i, m);
    z = load16i(zp + i, m);
  }
  const __m128i b = load16b(q + i, m);
  const __m512i v = SIGNED ? _mm512_cvtepi8_epi32(b) : _mm512_cvtepu8_epi32(b);
  return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(v, z)), s);
}

template <bool PE, bool SIGNED, bool NT>
void dequantize_impl(const DequantRun& r) {
  const uint8_t* q = static_cast<const uint8_t*>(r.q);
  float* out = r.out;
  const float* scale = r.scale;
  const int32_t* zp = r.zp;
  const __m512 s = _mm512_set1_ps(scale[0]);
  const __m512i z = _mm512_set1_epi32(zp[0]);
  const int64_t n = r.n;
  int64_t i = 0;
  if (NT) {
    const int64_t h = head_to_line(out, 4, n);
    for (; i < h; i += 16) {
      const __mmask16 m = tail_mask(h - i);
      store16(out + i, m, dequant16<PE, SIGNED>(q, scale, zp, s, z, i, m));
    }
    i = h;
    for (; i + 16 <= n; i += 16) _mm512_stream_ps(out + i, dequant16<PE, SIGNED>(q, scale, zp, s, z, i, kAll));
  }
  for (; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    store16(out + i, m, dequant16<PE, SIGNED>(q, scale, zp, s, z, i, m));
  }
}

// gradIn for 16 lanes (see quant.h); `gi` is read only when accumulating.
template <bool MASK, bool ACC>
inline __m512 grad16(const float* g, const float* gi, const uint8_t* mask, int64_t i, __mmask16 m) {
  const __m512 v = load16(g + i, m);
  if (!MASK) return ACC ? _mm512_add_ps(load16(gi + i, m), v) : v;
  const __m128i mb = load16b(mask + i, m);
  const __mmask16 pass = _mm_test_epi8_mask(mb, mb);
  // AND with a lane mask rather than a zero-masking move: GCC folds the latter
  // into a masked load of g, which is ~1.4x slower on AMD Zen 5 here.
  if (!ACC) return _mm512_and_ps(v, _mm512_castsi512_ps(_mm512_movm_epi32(pass)));
  const __m512 a = load16(gi + i, m);
  return _mm512_mask_add_ps(a, pass, a, v);  // a where the mask is 0
}

template <bool MASK, bool ACC, bool NT>
void backward_impl(const float* g, float* gi, const uint8_t* mask, int64_t n) {
  int64_t i = 0;
  if (NT) {
    const int64_t h = head_to_line(gi, 4, n);
    for (; i < h; i += 16) {
      const __mmask16 m = tail_mask(h - i);
      store16(gi + i, m, grad16<MASK, ACC>(g, gi, mask, i, m));
    }
    i = h;
    for (; i + 16 <= n; i += 16) _mm512_stream_ps(gi + i, grad16<MASK, ACC>(g, gi, mask, i, kAll));
  }
  for (; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    store16(gi + i, m, grad16<MASK, ACC>(g, gi, mask, i, m));
  }
}

}  // namespace

void quantize_avx512(const QuantRun& r) {
  if (r.stream) {
    if (r.per_elem) quantize_impl<true, true>(r);
    else quantize_impl<false, true>(r);
  } else {
    if (r.per_elem) quantize_impl<true, false>(r);
    else quantize_impl<false, false>(r);
  }
}

void fake_quantize_avx512(const QuantRun& r) {
  // In place, the lines are already owned by the cache: plain stores.
  const bool nt = r.stream && r.out != static_cast<const void*>(r.x);
  const int k = (r.per_elem ? 4 : 0) | (r.mask ? 2 : 0) | (nt ? 1 : 0);
  switch (k) {
    case 0: fake_quantize_impl<false, false, false>(r); break;
    case 1: fake_quantize_impl<false, false, true>(r); break;
    case 2: fake_quantize_impl<false, true, false>(r); break;
    case 3: fake_quantize_impl<false, true, true>(r); break;
    case 4: fake_quantize_impl<true, false, false>(r); break;
    case 5: fake_quantize_impl<true, false, true>(r); break;
    case 6: fake_quantize_impl<true, true, false>(r); break;
    default: fake_quantize_impl<true, true, true>(r); break;
  }
}

void dequantize_avx512(const DequantRun& r) {
  const int k = (r.per_elem ? 4 : 0) | (r.q_signed ? 2 : 0) | (r.stream ? 1 : 0);
  switch (k) {
    case 0: dequantize_impl<false, false, false>(r); break;
    case 1: dequantize_impl<false, false, true>(r); break;
    case 2: dequantize_impl<false, true, false>(r); break;
    case 3: dequantize_impl<false, true, true>(r); break;
    case 4: dequantize_impl<true, false, false>(r); break;
    case 5: dequantize_impl<true, false, true>(r); break;
    case 6: dequantize_impl<true, true, false>(r); break;
    default: dequantize_impl<true, true, true>(r); break;
  }
}

void fake_quantize_backward_avx512(const float* g, float* gi, const uint8_t* mask, int64_t n, bool accumulate,
                                   bool stream) {
  if (mask == nullptr && !accumulate && g == gi) return;  // in place, straight through: nothing to do
  // Streaming only helps when gradIn is not read (no accumulate) and not gradOut itself.
  const bool nt = stream && !accumulate && g != gi;
  if (mask == nullptr) {
    if (accumulate) backward_impl<false, true, false>(g, gi, mask, n);
    else if (nt) backward_impl<false, false, true>(g, gi, mask, n);
    else backward_impl<false, false, false>(g, gi, mask, n);
  } else {
    if (accumulate) backward_impl<true, true, false>(g, gi, mask, n);
    else if (nt) backward_impl<true, false, true>(g, gi, mask, n);
    else backward_impl<true, false, false>(g, gi, mask, n);
  }
}

void min_max_avx512(const float* x, int64_t n, float* mn, float* mx, bool per_elem) {
  // MINPS(x, acc) returns acc when x is NaN: NaN inputs are ignored.
  int64_t i = 0;
  if (per_elem) {
    for (; i < n; i += 16) {
      const __mmask16 m = tail_mask(n - i);
      const __m512 v = load16(x + i, m);
      store16(mn + i, m, _mm512_min_ps(v, load16(mn + i, m)));
      store16(mx + i, m, _mm512_max_ps(v, load16(mx + i, m)));
    }
    return;
  }
  __m512 a0 = _mm512_set1_ps(*mn), a1 = a0, a2 = a0, a3 = a0;
  __m512 b0 = _mm512_set1_ps(*mx), b1 = b0, b2 = b0, b3 = b0;
  for (; i + 64 <= n; i += 64) {
    const __m512 v0 = _mm512_loadu_ps(x + i), v1 = _mm512_loadu_ps(x + i + 16);
    const __m512 v2 = _mm512_loadu_ps(x + i + 32), v3 = _mm512_loadu_ps(x + i + 48);
    a0 = _mm512_min_ps(v0, a0);
    b0 = _mm512_max_ps(v0, b0);
    a1 = _mm512_min_ps(v1, a1);
    b1 = _mm512_max_ps(v1, b1);
    a2 = _mm512_min_ps(v2, a2);
    b2 = _mm512_max_ps(v2, b2);
    a3 = _mm512_min_ps(v3, a3);
    b3 = _mm512_max_ps(v3, b3);
  }
  for (; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    const __m512 v = load16(x + i, m);
    a0 = _mm512_mask_min_ps(a0, m, v, a0);
    b0 = _mm512_mask_max_ps(b0, m, v, b0);
  }
  a0 = _mm512_min_ps(_mm512_min_ps(a0, a1), _mm512_min_ps(a2, a3));
  b0 = _mm512_max_ps(_mm512_max_ps(b0, b1), _mm512_max_ps(b2, b3));
  alignas(64) float ta[16], tb[16];
  _mm512_store_ps(ta, a0);
  _mm512_store_ps(tb, b0);
  float a = ta[0], b = tb[0];
  for (int j = 1; j < 16; j++) {
    if (ta[j] < a) a = ta[j];
    if (tb[j] > b) b = tb[j];
  }
  *mn = a;
  *mx = b;
}

}  // namespace qf
