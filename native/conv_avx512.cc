// Depthwise fp32 convolution kernels, AVX-512 (16 channels per vector): the
// vector layer; the kernels are conv_dw_impl.h. Compiled with -mavx512f/bw/dq/vl.
#include <immintrin.h>

#include <cstdint>

#include "conv.h"

namespace qf {
namespace {

// ---------------------------------------------------------------- vector layer
constexpr int64_t L = 16;
using V = __m512;
struct Mask {
  __mmask16 m;
};
inline Mask tail_mask(int64_t n) { return Mask{static_cast<__mmask16>((1u << n) - 1u)}; }
inline V vzero() { return _mm512_setzero_ps(); }
template <bool M>
inline V vload(const float* p, Mask m) {
  if (M) return _mm512_maskz_loadu_ps(m.m, p);
  return _mm512_loadu_ps(p);
}
template <bool M>
inline void vstore(float* p, V v, Mask m) {
  if (M)
    _mm512_mask_storeu_ps(p, m.m, v);
  else
    _mm512_storeu_ps(p, v);
}
inline V vfma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
inline V vadd(V a, V b) { return _mm512_add_ps(a, b); }
// Taps accumulated together in the weight gradient (registers: kMaxTaps + 2).
constexpr int kMaxTaps = 9;
// Pixels per dw_block_rows call (accumulators + P + G - 1 inputs in registers).
constexpr int kRowsP = 8;

}  // namespace
}  // namespace qf

#define QF_DW_SUFFIX avx512
#include "conv_dw_impl.h"
