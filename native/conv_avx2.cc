// Depthwise fp32 convolution kernels, AVX2 + FMA (8 channels per vector):
// the vector layer; the kernels are conv_dw_impl.h. Compiled with -mavx2 -mfma.
#include <immintrin.h>

#include <cstdint>

#include "conv.h"

namespace qf {
namespace {

// ---------------------------------------------------------------- vector layer
constexpr int64_t L = 8;
using V = __m256;
struct Mask {
  __m256i m;
};
inline Mask tail_mask(int64_t n) {
  return Mask{_mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))};
}
inline V vzero() { return _mm256_setzero_ps(); }
template <bool M>
inline V vload(const float* p, Mask m) {
  if (M) return _mm256_maskload_ps(p, m.m);
  return _mm256_loadu_ps(p);
}
template <bool M>
inline void vstore(float* p, V v, Mask m) {
  if (M)
    _mm256_maskstore_ps(p, m.m, v);
  else
    _mm256_storeu_ps(p, v);
}
inline V vfma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
inline V vadd(V a, V b) { return _mm256_add_ps(a, b); }
// Taps accumulated together in the weight gradient (16 ymm registers).
constexpr int kMaxTaps = 9;
// Pixels per dw_block_rows call (16 ymm: 4 accumulators + 4 + G - 1 inputs + 1 weight).
constexpr int kRowsP = 4;

}  // namespace
}  // namespace qf

#define QF_DW_SUFFIX avx2
#include "conv_dw_impl.h"
