// Learned quantization ranges (binding.d.ts, section "learned ranges"): the
// kernels behind lib/distill/learned-range.ts (LearnedActQuant: learned
// activation range, QDrop) and lib/quant/weight-range.ts
// (ClippedWeightFakeQuant with learned clipping ratios). They compute what the
// JavaScript loops computed, bit for bit.
//
// Semantics shared by every variant (bit-exact with the JS implementation):
//   xs = x / scale                                IEEE float32 division
//   r  = rne(xs)                                  round half to even
//   lo = float(quantMin - zp), hi = float(quantMax - zp)
//   below = r < lo, above = r > hi, inside = neither (NaN x counts as inside)
//
// QDrop forward (one tensor, per-tensor parameters): a xorshift32 stream
//   st ^= st << 13; st ^= st >> 17; st ^= st << 5      (advanced before each element)
// drops element i when st_i < threshold (unsigned): drop[i] = 1, out[i] = x[i];
// else drop[i] = 0, out[i] = clamp(r, lo, hi) * scale (fakeQuantize's formula).
// Element i uses T^(i+1)(seed) where T is one xorshift step: a linear map
// over GF(2)^32, so any position's state is reachable by a jump (a 32x32 bit
// matrix power), which lets the variants and threads generate the stream in
// independent pieces that together equal the sequential stream.
//
// Range backward (one run of one channel): for each element, in order,
//   dropped (drop[i] != 0):   gradIn = gradOut
//   below:                    gradIn = +0, sum_lo += gradOut
//   above:                    gradIn = +0, sum_hi += gradOut
//   inside:                   gradIn = gradOut, sum_s += double(gradOut) * double(r - xs)
// The sums are float64 and accumulated sequentially in element order, as the
// JS loops did (double(gradOut) * double(r - xs) is exact in float64, and
// r - xs is exact in float32). Terms equal to zero may be skipped: a
// sequential sum that starts at +0 is never -0, and adding +-0 to it changes
// nothing (NaN and infinite terms are never skipped).
#pragma once
#include <cstdint>

#include "core.h"

namespace qf {

// Columns of T^(2^p), p = 0..kJumpBits-1 (T = one xorshift32 step):
// jump_table()[p][c] = T^(2^p) e_c.
constexpr int kJumpBits = 56;
using JumpTable = uint32_t[kJumpBits][32];
const JumpTable& jump_table();
// T^k applied to st (k < 2^kJumpBits).
uint32_t xorshift_jump(uint32_t st, uint64_t k);

struct QDropRun {
  const float* x = nullptr;
  float* out = nullptr;
  uint8_t* drop = nullptr;
  int64_t n = 0;
  float scale = 1.0f;
  int32_t zp = 0;
  int32_t qmin = 0, qmax = 255;
  uint64_t threshold = 0;  // drop where the state < threshold; 0..2^32
  uint32_t state = 0;      // xorshift32 state before element 0 of this run
};
// Writes out/drop for the run; returns nothing (the caller jumps to the end state).
using QDropFakeQuantizeFn = void (*)(const QDropRun& r);

struct RangeGradRun {
  const float* x = nullptr;
  const float* g = nullptr;     // gradOut
  float* gi = nullptr;          // gradIn; null: not written
  const uint8_t* drop = nullptr;  // null: nothing dropped
  int64_t n = 0;
  float scale = 1.0f;
  int32_t zp = 0;
  int32_t qmin = 0, qmax = 255;
};
struct RangeGradSums {
  double lo = 0, hi = 0, s = 0;
};
// One run; sums (null: not computed) continue from their values, in element order.
using LearnedRangeBackwardFn = void (*)(const RangeGradRun& r, RangeGradSums* sums);

const Kernel<QDropFakeQuantizeFn>& qdrop_fake_quantize_kernel();
const Kernel<LearnedRangeBackwardFn>& learned_range_backward_kernel();

void qdrop_fake_quantize_ref(const QDropRun& r);
void qdrop_fake_quantize_avx2(const QDropRun& r);
void qdrop_fake_quantize_avx512(const QDropRun& r);
void learned_range_backward_ref(const RangeGradRun& r, RangeGradSums* sums);
void learned_range_backward_avx2(const RangeGradRun& r, RangeGradSums* sums);
void learned_range_backward_avx512(const RangeGradRun& r, RangeGradSums* sums);

}  // namespace qf
