// NHWC convolutions (fp32 forward / backward, u8 x s8 forward).
// Layout: activations NHWC, weights OHWI [cout, kh, kw, c / groups].
//
// Kernel tables (binding.info().variants):
//   conv2d_f32, conv2d_backward_input_f32, conv2d_backward_weight_f32:
//       "gemm" (im2col / col2im + qf::sgemm, conv.cc) and "ref" (direct loops,
//       conv_ref.cc); whole-problem functions, any groups.
//   conv2d_depthwise_f32, conv2d_depthwise_backward_input_f32,
//   conv2d_depthwise_backward_weight_f32: direct kernels for groups = c = cout
//       (avx512, avx2, ref); row-range functions, threaded by conv.cc.
//   conv2d_u8s8_depthwise: int8 depthwise (avx512vnni, avx512, avx2, neondot, neon, ref), row-range.
//   int8 groups = 1 goes through im2col + qf::gemm_u8s8s32 (conv_int8.cc).
//
// This header is included by ISA-specific files: declarations and plain
// structs only, no inline code.
#pragma once
#include <cstdint>

#include "core.h"
#include "gemm_u8s8.h"
#include "sgemm.h"

namespace qf {

struct ConvGeom {
  int64_t n = 1, h = 1, w = 1, c = 1;  // input NHWC
  int64_t cout = 1, kh = 1, kw = 1;
  int64_t sh = 1, sw = 1;                  // strides
  int64_t pt = 0, pl = 0, pb = 0, pr = 0;  // padding top, left, bottom, right
  int64_t dh = 1, dw = 1;                  // dilation
  int64_t groups = 1;
  int64_t oh = 1, ow = 1;  // output size (conv_out_size)
};

// floor((in + p0 + p1 - d*(k-1) - 1) / s) + 1; may be <= 0 (invalid geometry).
int64_t conv_out_size(int64_t in, int64_t k, int64_t s, int64_t p0, int64_t p1, int64_t d);

// ------------------------------------------------------------ fp32, whole problem
// out[n,oy,ox,co] = bias[co] + sum x * w.  bias may be null.
using Conv2dF32Fn = void (*)(const ConvGeom& g, const float* x, const float* w, const float* bias, float* out);
// gin = (accumulate ? gin : 0) + dconv/dx^T gout
using Conv2dBwdInputF32Fn = void (*)(const ConvGeom& g, const float* gout, const float* w, float* gin, bool accumulate);
// gw = (accumulate ? gw : 0) + sum_{n,oy,ox} gout * x ; gb (may be null) likewise with sum gout.
// Deterministic: the result does not depend on the thread count.
using Conv2dBwdWeightF32Fn = void (*)(const ConvGeom& g, const float* x, const float* gout, float* gw, float* gb,
                                      bool accumulate);

const Kernel<Conv2dF32Fn>& conv2d_f32_kernel();
const Kernel<Conv2dBwdInputF32Fn>& conv2d_backward_input_f32_kernel();
const Kernel<Conv2dBwdWeightF32Fn>& conv2d_backward_weight_f32_kernel();

// GEMM-based implementations with an explicit sgemm (the tables' "gemm"
// variants use the chosen sgemm).
void conv2d_f32_gemm_with(SgemmFn sg, const ConvGeom& g, const float* x, const float* w, const float* bias, float* out,
                          bool accumulate);
void conv2d_backward_input_f32_gemm_with(SgemmFn sg, const ConvGeom& g, const float* gout, const float* w, float* gin,
                                         bool accumulate);
void conv2d_backward_weight_f32_gemm_with(SgemmFn sg, const ConvGeom& g, const float* x, const float* gout, float* gw,
                                          float* gb, bool accumulate);

// References (conv_ref.cc): direct loops, float64 accumulation, any groups.
void conv2d_f32_ref(const ConvGeom& g, const float* x, const float* w, const float* bias, float* out);
void conv2d_backward_input_f32_ref(const ConvGeom& g, const float* gout, const float* w, float* gin, bool accumulate);
void conv2d_backward_weight_f32_ref(const ConvGeom& g, const float* x, const float* gout, float* gw, float* gb,
                                    bool accumulate);

// ------------------------------------------------------------ fp32 depthwise (groups = c = cout)
// wt: the weights tap-major, [kh*kw][c] (wt[t*c + ch] = w[ch*kh*kw + t]).
// Forward: output rows r in [r0, r1) of n*oh.
using DwFwdF32Fn = void (*)(const ConvGeom& g, const float* x, const float* wt, const float* bias, float* out,
                            int64_t r0, int64_t r1);
// Backward input: input rows r in [r0, r1) of n*h (gather form: each gin
// element is written by exactly one call).
using DwBwdInputF32Fn = void (*)(const ConvGeom& g, const float* gout, const float* wt, float* gin, bool accumulate,
                                 int64_t r0, int64_t r1);
// Backward weight: adds the contributions of output rows [r0, r1) of n*oh
// into gwt [kh*kw][c] and, when gb is not null, into gb [c].
using DwBwdWeightF32Fn = void (*)(const ConvGeom& g, const float* x, const float* gout, float* gwt, float* gb,
                                  int64_t r0, int64_t r1);

const Kernel<DwFwdF32Fn>& conv2d_depthwise_f32_kernel();
const Kernel<DwBwdInputF32Fn>& conv2d_depthwise_backward_input_f32_kernel();
const Kernel<DwBwdWeightF32Fn>& conv2d_depthwise_backward_weight_f32_kernel();

// One trio per variant: ref (conv_ref.cc), avx2 / avx512 / neon (conv_<isa>.cc over conv_dw_impl.h).
#define QF_DW_F32_DECLARE(sfx)                                                                                   \
  void dw_fwd_f32_##sfx(const ConvGeom& g, const float* x, const float* wt, const float* bias, float* out,       \
                        int64_t r0, int64_t r1);                                                                 \
  void dw_bwd_input_f32_##sfx(const ConvGeom& g, const float* gout, const float* wt, float* gin, bool accumulate, \
                              int64_t r0, int64_t r1);                                                           \
  void dw_bwd_weight_f32_##sfx(const ConvGeom& g, const float* x, const float* gout, float* gwt, float* gb,      \
                               int64_t r0, int64_t r1);
QF_DW_F32_DECLARE(ref)
QF_DW_F32_DECLARE(avx2)
QF_DW_F32_DECLARE(avx512)
QF_DW_F32_DECLARE(neon)
#undef QF_DW_F32_DECLARE

// Whole-problem depthwise drivers (threaded; deterministic weight gradient).
void conv2d_depthwise_f32_run(DwFwdF32Fn fn, const ConvGeom& g, const float* x, const float* w, const float* bias,
                              float* out);
void conv2d_depthwise_backward_input_f32_run(DwBwdInputF32Fn fn, const ConvGeom& g, const float* gout, const float* w,
                                             float* gin, bool accumulate);
void conv2d_depthwise_backward_weight_f32_run(DwBwdWeightF32Fn fn, const ConvGeom& g, const float* x,
                                              const float* gout, float* gw, float* gb, bool accumulate);

// ------------------------------------------------------------ im2col
// Rows p in [p0, p0 + rows) of the flattened output pixels (n, oy, ox); row
// (p - p0) of dst holds kh*kw*(c/groups) values ordered (ky, kx, ci) for
// group `grp`; taps outside the input read `pad`.
void im2col_f32(const ConvGeom& g, const float* x, int64_t grp, int64_t p0, int64_t rows, float* dst, float pad);
void im2col_u8(const ConvGeom& g, const uint8_t* x, int64_t grp, int64_t p0, int64_t rows, uint8_t* dst, uint8_t pad);

// ------------------------------------------------------------ int8
// groups = 1: im2col (padding reads xzp) + gemm_u8s8s32 (fn: a variant of
// gemm_u8s8s32_kernel()). w: packed [cout, kh*kw*c]. out: [n*oh*ow, cout] of ep.type.
void conv2d_u8s8_gemm(GemmU8S8Fn fn, const ConvGeom& g, const uint8_t* x, int32_t xzp, const PackedS8* w,
                      const int32_t* wzp, const Epilogue& ep, void* out);

// Depthwise (groups = c = cout), int8 direct kernels.
// acc[c] = sum_{taps} (x - xzp) * (w[c,t] - wzp[c]) (int32, wrapping), padding
// reads xzp, then the epilogue ep (per channel c).
struct DwU8Prep {
  int32_t xzp = 0;
  const int8_t* w = nullptr;     // raw weights [c][kh*kw]
  const int32_t* wzp = nullptr;  // [c] or null
  // For the SIMD variants (only set when every w - wzp fits int16):
  // wpair[(q * cpad + ch) * 2 + i] = w[ch, 2q + i] - wzp[ch] (int16; 0 past the
  // last tap or channel), q < npairs = ceil(kh*kw / 2), cpad = c rounded up to 16.
  const int16_t* wpair = nullptr;
  int64_t npairs = 0, cpad = 0;
  // zbuf_len >= 8 * sw * c + cpad bytes, all xzp: what out-of-bounds taps read.
  const uint8_t* zbuf = nullptr;
  int64_t zbuf_len = 0;
  // For the VNNI / SDOT variants (only set when every w - wzp fits int8): quads of
  // kernel rows per column, wquad[((kx * nqy + qy) * cpad + ch) * 4 + i] =
  // w[ch, (4*qy + i), kx] - wzp[ch] (0 past the last row or channel),
  // nqy = ceil(kh / 4); corr[ch] = -xzp * sum_t (w[ch,t] - wzp[ch]) (wrapping).
  const int8_t* wquad = nullptr;
  int64_t nqy = 0;
  const int32_t* corr = nullptr;
};
using DwU8S8Fn = void (*)(const ConvGeom& g, const uint8_t* x, const DwU8Prep& p, const Epilogue& ep, void* out,
                          int64_t r0, int64_t r1);
const Kernel<DwU8S8Fn>& conv2d_u8s8_depthwise_kernel();
void dw_u8s8_ref(const ConvGeom& g, const uint8_t* x, const DwU8Prep& p, const Epilogue& ep, void* out, int64_t r0,
                 int64_t r1);
void dw_u8s8_avx2(const ConvGeom& g, const uint8_t* x, const DwU8Prep& p, const Epilogue& ep, void* out, int64_t r0,
                  int64_t r1);
void dw_u8s8_avx512(const ConvGeom& g, const uint8_t* x, const DwU8Prep& p, const Epilogue& ep, void* out,
                    int64_t r0, int64_t r1);
void dw_u8s8_avx512vnni(const ConvGeom& g, const uint8_t* x, const DwU8Prep& p, const Epilogue& ep, void* out,
                        int64_t r0, int64_t r1);
void dw_u8s8_neon(const ConvGeom& g, const uint8_t* x, const DwU8Prep& p, const Epilogue& ep, void* out, int64_t r0,
                  int64_t r1);
void dw_u8s8_neondot(const ConvGeom& g, const uint8_t* x, const DwU8Prep& p, const Epilogue& ep, void* out,
                     int64_t r0, int64_t r1);
// Packs the weights and runs fn on the pool. w: [c][kh*kw] int8.
void conv2d_u8s8_depthwise_run(DwU8S8Fn fn, const ConvGeom& g, const uint8_t* x, int32_t xzp, const int8_t* w,
                               const int32_t* wzp, const Epilogue& ep, void* out);

// ------------------------------------------------------------ N-API helpers (conv.cc; binding files only)
bool conv_is_depthwise(const ConvGeom& g);  // groups == c == cout
namespace napi {
class Args;
struct ConvSizes {
  int64_t x = 0, w = 0, out = 0;  // n*h*w*c, cout*kh*kw*(c/groups), n*oh*ow*cout
};
// Reads and validates the Conv2dGeometry fields (TypeError / RangeError naming them).
ConvGeom parse_conv_geom(const Args& a, ConvSizes* sizes);
}  // namespace napi

}  // namespace qf
