// Depthwise fp32 convolution kernels, aarch64 Advanced SIMD (4 channels per
// vector): the vector layer; the kernels are conv_dw_impl.h. NEON has no
// masked loads/stores: channel tails go through a 4-float stack buffer.
#include <arm_neon.h>

#include <cstdint>
#include <cstring>

namespace qf {
namespace {

// ---------------------------------------------------------------- vector layer
constexpr int64_t L = 4;
using V = float32x4_t;
struct Mask {
  int64_t n;
};
inline Mask tail_mask(int64_t n) { return Mask{n}; }
inline V vzero() { return vdupq_n_f32(0.f); }
template <bool M>
inline V vload(const float* p, Mask m) {
  if (M) {
    float t[4] = {0.f, 0.f, 0.f, 0.f};
    std::memcpy(t, p, static_cast<size_t>(m.n) * 4);
    return vld1q_f32(t);
  }
  return vld1q_f32(p);
}
template <bool M>
inline void vstore(float* p, V v, Mask m) {
  if (M) {
    float t[4];
    vst1q_f32(t, v);
    std::memcpy(p, t, static_cast<size_t>(m.n) * 4);
  } else {
    vst1q_f32(p, v);
  }
}
inline V vfma(V a, V b, V c) { return vfmaq_f32(c, a, b); }
inline V vadd(V a, V b) { return vaddq_f32(a, b); }
// Taps accumulated together in the weight gradient (registers: kMaxTaps + 2).
constexpr int kMaxTaps = 9;
// Pixels per dw_block_rows call (accumulators + P + G - 1 inputs in registers).
constexpr int kRowsP = 8;

}  // namespace
}  // namespace qf

#define QF_DW_SUFFIX neon
#include "conv_dw_impl.h"
