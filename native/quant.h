// Quantization kernels (see binding.d.ts, section "quantization").
//
// The element-wise kernels work on "runs": contiguous stretches of a flat
// tensor whose quantization parameters are either one (scale, zeroPoint)
// pair (per tensor, or one channel of a per-channel layout with a long
// `inner`), or one pair per element (per_elem = true: scale[i]/zp[i] are
// arrays aligned with x, built by quant.cc by expanding a short period of
// the channel pattern, e.g. NHWC activations with inner = 1). quant.cc
// walks the layout, splits large tensors over the thread pool and calls
// the chosen variant once per run; the variants only see raw pointers.
//
// Semantics shared by every variant (bit-exact):
//   r   = rne(x / scale)                    IEEE float division, round half to even
//   lo  = float(quantMin - zp), hi = float(quantMax - zp)   (exact: |.| <= 65535 for fake quant)
//   rc  = (r < lo) ? lo : r;  rc = (rc > hi) ? hi : rc      (NaN stays NaN, -0 stays -0)
//   quantize:      q = NaN ? zp : int(rc) + zp
//   fake quantize: out = rc * scale  (= float(q - zp) * scale; NaN x -> NaN),
//                  mask = (lo <= r && r <= hi) ? 1 : 0  (NaN -> 0)
//   dequantize:    out = float(q - zp) * scale
//   backward:      gradIn = mask ? gradOut : +0         (accumulate: mask ? gradIn + gradOut : gradIn)
//   min/max:       NaN ignored; the caller turns a zero result into +0.
#pragma once
#include <cstdint>

#include "core.h"

namespace qf {

// One run of quantize / fakeQuantize. Parameters: scale[0], zp[0] for the
// whole run (per_elem = false) or scale[i], zp[i] per element (per_elem).
struct QuantRun {
  const float* x = nullptr;
  void* out = nullptr;       // quantize: int8/uint8 bytes (the low byte of q); fake: float*
  uint8_t* mask = nullptr;   // fake quantize only; may be null
  int64_t n = 0;
  const float* scale = nullptr;
  const int32_t* zp = nullptr;
  bool per_elem = false;
  int32_t qmin = 0, qmax = 255;
  // Hint: the output will not be read back soon; a variant may use
  // non-temporal stores, and the caller then issues SFENCE before the data is
  // handed to another thread.
  bool stream = false;
};

struct DequantRun {
  const void* q = nullptr;   // int8 or uint8
  bool q_signed = false;
  float* out = nullptr;
  int64_t n = 0;
  const float* scale = nullptr;
  const int32_t* zp = nullptr;
  bool per_elem = false;
  bool stream = false;       // hint: non-temporal stores
};

using QuantizeFn = void (*)(const QuantRun& r);
using FakeQuantizeFn = void (*)(const QuantRun& r);
using DequantizeFn = void (*)(const DequantRun& r);
// gradIn = mask ? gradOut : 0 (mask null: gradIn = gradOut); accumulate adds into gradIn.
// stream: hint for non-temporal stores (caller fences, as for QuantRun::stream).
using FakeQuantizeBackwardFn = void (*)(const float* grad_out, float* grad_in, const uint8_t* mask, int64_t n,
                                        bool accumulate, bool stream);
// per_elem = false: *mn = min(*mn, min of x[0..n)), same for *mx.
// per_elem = true:  mn[i] = min(mn[i], x[i]), mx[i] = max(mx[i], x[i]).
// NaN elements are ignored. (Zero sign of the result is unspecified.)
using MinMaxFn = void (*)(const float* x, int64_t n, float* mn, float* mx, bool per_elem);

const Kernel<QuantizeFn>& quantize_kernel();
const Kernel<DequantizeFn>& dequantize_kernel();
const Kernel<FakeQuantizeFn>& fake_quantize_kernel();
const Kernel<FakeQuantizeBackwardFn>& fake_quantize_backward_kernel();
const Kernel<MinMaxFn>& min_max_kernel();

// Variants (quant_ref.cc, quant_avx2.cc, quant_avx512.cc, quant_neon.cc).
void quantize_ref(const QuantRun& r);
void quantize_avx2(const QuantRun& r);
void quantize_avx512(const QuantRun& r);
void quantize_neon(const QuantRun& r);  // quant_neon.cc (aarch64)
void dequantize_ref(const DequantRun& r);
void dequantize_avx2(const DequantRun& r);
void dequantize_avx512(const DequantRun& r);
void dequantize_neon(const DequantRun& r);
void fake_quantize_ref(const QuantRun& r);
void fake_quantize_avx2(const QuantRun& r);
void fake_quantize_avx512(const QuantRun& r);
void fake_quantize_neon(const QuantRun& r);
void fake_quantize_backward_ref(const float* g, float* gi, const uint8_t* mask, int64_t n, bool accumulate,
                                   bool stream);
void fake_quantize_backward_avx2(const float* g, float* gi, const uint8_t* mask, int64_t n, bool accumulate,
                                   bool stream);
void fake_quantize_backward_avx512(const float* g, float* gi, const uint8_t* mask, int64_t n, bool accumulate,
                                   bool stream);
void min_max_ref(const float* x, int64_t n, float* mn, float* mx, bool per_elem);
void min_max_avx2(const float* x, int64_t n, float* mn, float* mx, bool per_elem);
void min_max_avx512(const float* x, int64_t n, float* mn, float* mx, bool per_elem);
void min_max_neon(const float* x, int64_t n, float* mn, float* mx, bool per_elem);
void fake_quantize_backward_neon(const float* g, float* gi, const uint8_t* mask, int64_t n, bool accumulate,
                                 bool stream);

// ---------------------------------------------------------------- layout
// Element i belongs to channel floor(i / inner) % channels.
struct QuantLayout {
  int64_t n = 0;         // elements
  int64_t channels = 1;
  int64_t inner = 1;
};

// Calls the chosen/forced variants over [0, layout.n) on the thread pool
// (quant.cc). All pointers validated by the caller.
void quantize_tensor(QuantizeFn fn, const QuantLayout& L, const float* x, void* out, const float* scale,
                     const int32_t* zp, int32_t qmin, int32_t qmax);
void fake_quantize_tensor(FakeQuantizeFn fn, const QuantLayout& L, const float* x, float* out, uint8_t* mask,
                          const float* scale, const int32_t* zp, int32_t qmin, int32_t qmax);
void dequantize_tensor(DequantizeFn fn, const QuantLayout& L, const void* q, bool q_signed, float* out,
                       const float* scale, const int32_t* zp);
void fake_quantize_backward_tensor(FakeQuantizeBackwardFn fn, const float* g, float* gi, const uint8_t* mask,
                                   int64_t n, bool accumulate);
// min/max per channel (length channels). Empty or all-NaN channel: +Inf / -Inf.
// A zero result is returned as +0.
void min_max_tensor(MinMaxFn fn, const QuantLayout& L, const float* x, float* mn, float* mx);

// Bit packing: value i at bit offset i*bits of a little-endian bit stream.
// pack writes exactly ceil(n*bits/8) bytes (unused high bits of the last byte = 0).
// Returns the index of the first value >= 2^bits (nothing written) or -1.
int64_t pack_bits(const uint8_t* q, int64_t n, int bits, uint8_t* out);
void unpack_bits(const uint8_t* packed, int64_t n, int bits, uint8_t* out);

}  // namespace qf
