// Elementwise kernels of the training step (see binding.d.ts, section
// "training elementwise"): BatchNorm statistics, BatchNorm backward sums
// and input gradient, per-channel affine (+ fused PReLU), PReLU backward.
// Activations are rows x channels (NHWC flattened: rows = N*H*W).
//
// Each kernel: a scalar reference "_ref" and AVX2 / AVX-512 variants that
// perform the same IEEE operations in the same order per element and per
// channel (bit-identical):
//   bn_stats        s1[c] = sum_r d, s2[c] = sum_r d*d, d = (double)x[r,c] - center[c]
//                   (double; rows summed in order r0, r0+1, ...)
//   bn_grad_sums    sg[c] = sum_r (double)g[r,c], sgx[c] = sum_r (double)g * ((double)x - center[c])
//   channel_affine  y = fmaf(x, a[c], b[c]) (a null: y = x), then, if slope:
//                   y = y > 0 ? y : y * slope[c]   (NaN -> NaN * slope = NaN)
//   bn_backward_dx  t = fmaf(a[c], g, b[c]); if k: t = fmaf(k[c], x - m[c], t)
//   prelu_backward  g' = mask ? (mask[i] ? g : +0) : g   (the clipped straight-through
//                   gradient of a following fake quantizer, fused);
//                   gi = x > 0 ? g' : g' * slope[c];
//                   sa[c] = sum_r (double)g' * (double)(x > 0 ? 0 : x)
//   bn_prelu_sums   BatchNorm backward through a following PReLU (fused; the PReLU input
//                   y is recomputed from the BatchNorm input): y = fmaf(x, a[c], b[c]),
//                   g' = mask ? (mask[i] ? g : +0) : g, gy = y > 0 ? g' : g' * slope[c] (written),
//                   sg[c] = sum_r (double)gy, sgx[c] = sum_r (double)gy * ((double)x - center[c]),
//                   sa[c] = sum_r (double)g' * (double)(y > 0 ? 0 : y): the same values as
//                   channel_affine + prelu_backward + bn_grad_sums (bit-identical)
// Reductions write (not add) their per-channel outputs for rows [r0, r1).
// Per-channel parameter arrays of channel_affine and bn_backward_dx are
// "extended": C + 16 entries, p[C + j] = p[j mod C], so a variant may walk the
// rows as one flat range and load 16 channels from any channel offset.
// `stream`: the output is large; a variant may write it with non-temporal
// stores (then it issues SFENCE before returning). Results are unchanged.
// train_ew.cc splits rows into a FIXED number of blocks that depends only on
// the row count, runs blocks on the pool and adds the block partials in block
// order: results do not depend on the thread count.
//
// Included by ISA-specific files: declarations only, no inline code.
#pragma once
#include <cstdint>

#include "core.h"

namespace qf {
namespace tew {

using BnStatsFn = void (*)(const float* x, int64_t C, const double* center, int64_t r0, int64_t r1, double* s1,
                           double* s2);
using BnGradSumsFn = void (*)(const float* x, const float* g, int64_t C, const double* center, int64_t r0,
                              int64_t r1, double* sg, double* sgx);
struct AffineArgs {
  const float* x = nullptr;
  float* y = nullptr;
  int64_t C = 1;
  const float* a = nullptr;  // null: no affine (y = x)
  const float* b = nullptr;  // with a
  const float* slope = nullptr;  // null: no PReLU
  bool stream = false;
};
using ChannelAffineFn = void (*)(const AffineArgs& A, int64_t r0, int64_t r1);
struct DxArgs {
  const float* x = nullptr;
  const float* g = nullptr;
  float* gi = nullptr;
  int64_t C = 1;
  const float* a = nullptr;
  const float* b = nullptr;
  const float* k = nullptr;  // null: t = fmaf(a, g, b) only (x not read)
  const float* m = nullptr;
  bool stream = false;
};
using BnBackwardDxFn = void (*)(const DxArgs& A, int64_t r0, int64_t r1);
struct BnPreluArgs {
  const float* x = nullptr;
  const float* g = nullptr;
  const uint8_t* mask = nullptr;  // null: g' = g
  float* gy = nullptr;            // may be g (in place), not x
  int64_t C = 1;
  const float* a = nullptr;  // extended
  const float* b = nullptr;  // extended
  const float* slope = nullptr;  // extended
  const double* center = nullptr;  // C entries
};
using BnPreluSumsFn = void (*)(const BnPreluArgs& A, int64_t r0, int64_t r1, double* sg, double* sgx, double* sa);
using PreluBackwardFn = void (*)(const float* x, const float* g, const uint8_t* mask, float* gi, int64_t C,
                                 const float* slope, int64_t r0, int64_t r1, double* sa);

const Kernel<BnStatsFn>& bn_stats_kernel();
const Kernel<BnGradSumsFn>& bn_grad_sums_kernel();
const Kernel<ChannelAffineFn>& channel_affine_kernel();
const Kernel<BnBackwardDxFn>& bn_backward_dx_kernel();
const Kernel<PreluBackwardFn>& prelu_backward_kernel();
const Kernel<BnPreluSumsFn>& bn_prelu_sums_kernel();

#define QF_TEW_DECL(sfx)                                                                                        \
  void bn_stats_##sfx(const float* x, int64_t C, const double* center, int64_t r0, int64_t r1, double* s1,      \
                      double* s2);                                                                              \
  void bn_grad_sums_##sfx(const float* x, const float* g, int64_t C, const double* center, int64_t r0,          \
                          int64_t r1, double* sg, double* sgx);                                                 \
  void channel_affine_##sfx(const AffineArgs& A, int64_t r0, int64_t r1);                                       \
  void bn_backward_dx_##sfx(const DxArgs& A, int64_t r0, int64_t r1);                                           \
  void prelu_backward_##sfx(const float* x, const float* g, const uint8_t* mask, float* gi, int64_t C,           \
                            const float* slope, int64_t r0, int64_t r1, double* sa);                     \
  void bn_prelu_sums_##sfx(const BnPreluArgs& A, int64_t r0, int64_t r1, double* sg, double* sgx, double* sa);
QF_TEW_DECL(ref)
QF_TEW_DECL(avx2)
QF_TEW_DECL(avx512)
#undef QF_TEW_DECL

}  // namespace tew
}  // namespace qf
