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

constexpr int64_t kDwLanes = 16;

// The vector layer of conv_int8_rows.h.
using DwAcc = __m512i;
using DwW = __m512i;
using DwX = __m512i;
using DwTail = __mmask16;
inline DwTail dw_tail(int64_t nl) {
  return nl >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << nl) - 1u);
}
inline DwX dw_xz(int32_t xzp) { return _mm512_set1_epi16(static_cast<int16_t>(xzp)); }
inline DwAcc dw_zero() { return _mm512_setzero_si512(); }
inline DwW dw_wload(const int16_t* w) { return _mm512_load_si512(w); }
template <bool M>
inline DwAcc dw_madd(DwAcc acc, const uint8_t* ap, const uint8_t* bp, DwTail m, DwX xz, DwW w) {
  const __m128i a = M ? _mm_maskz_loadu_epi8(m, ap) : _mm_loadu_si128(reinterpret_cast<const __m128i*>(ap));
  const __m128i b = M ? _mm_maskz_loadu_epi8(m, bp) : _mm_loadu_si128(reinterpret_cast<const __m128i*>(bp));
  const __m256i ab = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_unpacklo_epi8(a, b)), _mm_unpackhi_epi8(a, b), 1);
  return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_sub_epi16(_mm512_cvtepu8_epi16(ab), xz), w));
}
inline void dw_store(const Epilogue& ep, DwAcc acc, int64_t c0, DwTail m, void* out, int64_t idx) {
  epi16(ep, acc, c0, m, out, idx);
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
