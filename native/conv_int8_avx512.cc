// Int8 depthwise convolution, AVX-512 (F/BW/VL): 16 channels per vector.
// Two taps of a channel are interleaved as int16 pairs (x - xzp, w - wzp) and
// multiplied with vpmaddwd: exact int32, bit-identical to dw_u8s8_ref. The
// epilogue is the reference formula vectorised (mul, add, activation, div,
// round-half-even, add zero point, clamp; same NaN handling).
// GCC 12 flags the intrinsics' internal _mm*_undefined_* temporaries.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <cstdint>

#include "conv_int8_zmm.h"

namespace qf {
namespace {

// P pixels x 16 channels from c0. tp[t]: tap t's source for pixel 0 (channel
// 0); pixel p reads tp[t] + p*ss. Output element index of pixel p: o0 + p*C.
template <int P, bool M>
inline void dwq_vec(const uint8_t* const* tp, int64_t ss, const DwU8Prep& pr, int64_t c0, __mmask16 m,
                    const Epilogue& ep, void* out, int64_t o0, int64_t C) {
  __m512i acc[P];
  for (int p = 0; p < P; p++) acc[p] = _mm512_setzero_si512();
  const __m512i xz = _mm512_set1_epi16(static_cast<int16_t>(pr.xzp));
  for (int64_t q = 0; q < pr.npairs; q++) {
    const __m512i wv = _mm512_load_si512(pr.wpair + (q * pr.cpad + c0) * 2);
    const uint8_t* a0 = tp[2 * q] + c0;
    const uint8_t* b0 = tp[2 * q + 1] + c0;
    for (int p = 0; p < P; p++) {
      const __m128i a = M ? _mm_maskz_loadu_epi8(m, a0 + p * ss) : _mm_loadu_si128(reinterpret_cast<const __m128i*>(a0 + p * ss));
      const __m128i b = M ? _mm_maskz_loadu_epi8(m, b0 + p * ss) : _mm_loadu_si128(reinterpret_cast<const __m128i*>(b0 + p * ss));
      const __m256i ab = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_unpacklo_epi8(a, b)), _mm_unpackhi_epi8(a, b), 1);
      const __m512i d = _mm512_sub_epi16(_mm512_cvtepu8_epi16(ab), xz);
      acc[p] = _mm512_add_epi32(acc[p], _mm512_madd_epi16(d, wv));
    }
  }
  for (int p = 0; p < P; p++) epi16(ep, acc[p], c0, m, out, o0 + p * C + c0);
}

template <int P>
void dwq_pixels_p(const uint8_t* const* tp, int64_t ss, const DwU8Prep& pr, const Epilogue& ep, void* out, int64_t o0,
                  int64_t C) {
  int64_t c0 = 0;
  for (; c0 + 16 <= C; c0 += 16) dwq_vec<P, false>(tp, ss, pr, c0, static_cast<__mmask16>(0xFFFF), ep, out, o0, C);
  if (c0 < C) dwq_vec<P, true>(tp, ss, pr, c0, static_cast<__mmask16>((1u << (C - c0)) - 1u), ep, out, o0, C);
}

}  // namespace
}  // namespace qf

#include "conv_int8_rows.h"

namespace qf {

void dw_u8s8_avx512(const ConvGeom& g, const uint8_t* x, const DwU8Prep& pr, const Epilogue& ep, void* out, int64_t r0,
                    int64_t r1) {
  dw_rows(g, x, pr, ep, out, r0, r1);
}

}  // namespace qf
