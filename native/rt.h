// quantface runtime: small elementwise kernels for integer inference and
// the program executor that runs a compiled model in one native call
// (lib/runtime/compile.ts builds the programs). See binding.d.ts, section
// "runtime".
//
// Kernels (each: a scalar reference "_ref" and ISA variants, bit-identical):
//   rt_add     out = a + b, each operand u8 (dequantized as float(q - zp) * s)
//              or f32; out u8 (clamp(rne(y / s) + zp, lo, hi)) or f32.
//   rt_affine  per channel (last dimension): y = float((double)x * a[c] + b[c]),
//              then relu / prelu / clamp, out u8 or f32 (as rt_add).
//   rt_lut     per channel table lookup of u8 values: u8 or f32 tables [C][256].
// Every float operation is a separately rounded IEEE operation, in the order
// the engine's JavaScript modules compute it (so results match the
// fake-quantized training forward bit for bit).
//
// This header is included by ISA-specific files: declarations and plain
// structs only, no inline code.
#pragma once
#include <cstdint>

#include "conv.h"
#include "core.h"

namespace qf {
namespace rt {

enum class VType : int { U8 = 0, F32 = 1 };

// A tensor operand of an elementwise kernel. U8: real value = float(q - zp) * scale.
struct Operand {
  VType type = VType::F32;
  const void* data = nullptr;
  float scale = 1.f;
  int32_t zp = 0;
};

// An output operand. U8: q = clamp(rne(y / scale) + zp, lo, hi) (float ops;
// NaN -> lo, +-Infinity clamp), lo <= zp <= hi not required.
struct Output {
  VType type = VType::F32;
  void* data = nullptr;
  float scale = 1.f;
  int32_t zp = 0;
  int32_t lo = 0, hi = 255;
};

// ------------------------------------------------------------------ add
struct AddArgs {
  Operand a, b;
  Output out;
};
// Elements [i0, i1).
using AddFn = void (*)(const AddArgs& args, int64_t i0, int64_t i1);
const Kernel<AddFn>& rt_add_kernel();
void rt_add_ref(const AddArgs& args, int64_t i0, int64_t i1);
void rt_add_avx2(const AddArgs& args, int64_t i0, int64_t i1);
void rt_add_avx512(const AddArgs& args, int64_t i0, int64_t i1);

// ------------------------------------------------------------------ affine
enum class AffAct : int { None = 0, Relu = 1, Prelu = 2, Clamp = 3 };
// rows x channels values (channels = the last dimension).
//   v = x (f32) or float(q - zp) * scale (u8)
//   y = float((double)v * (double)a[c] + (double)b[c])   (a null: 1, b null: 0)
//   Relu: y = y > 0 ? y : 0 (NaN -> 0); Prelu: y = y > 0 ? y : y * slope[c]
//   (NaN stays NaN); Clamp: y = y < lo ? lo : (y > hi ? hi : y) (NaN stays NaN)
//   out (see Output).
struct AffineArgs {
  int64_t channels = 1;
  Operand x;
  const float* a = nullptr;
  const float* b = nullptr;
  AffAct act = AffAct::None;
  const float* slope = nullptr;
  float lo = 0.f, hi = 0.f;
  Output out;
};
// Rows [r0, r1).
using AffineFn = void (*)(const AffineArgs& args, int64_t r0, int64_t r1);
const Kernel<AffineFn>& rt_affine_kernel();
void rt_affine_ref(const AffineArgs& args, int64_t r0, int64_t r1);
void rt_affine_avx2(const AffineArgs& args, int64_t r0, int64_t r1);
void rt_affine_avx512(const AffineArgs& args, int64_t r0, int64_t r1);

// ------------------------------------------------------------------ lut
// rows x channels u8 values x; out[r, c] = table[c * 256 + x[r, c]], out
// and table u8 or f32 (out_type).
struct LutArgs {
  int64_t channels = 1;
  const uint8_t* x = nullptr;
  const void* table = nullptr;
  VType out_type = VType::U8;
  void* out = nullptr;
};
using LutFn = void (*)(const LutArgs& args, int64_t r0, int64_t r1);
const Kernel<LutFn>& rt_lut_kernel();
void rt_lut_ref(const LutArgs& args, int64_t r0, int64_t r1);

// ------------------------------------------------------------------ conv_input
// The network's first convolution, straight from the raw u8 input crop:
// x' = table[ci * 256 + u] (the exact preprocessed float input), then an fp32
// direct convolution (groups = 1; taps outside the input are 0, as the float
// model pads its preprocessed input), then the rt_affine epilogue:
//   acc = sum over taps (ky, kx) in order, then ci: acc = fma(x', w, acc)
//   y = acc + cbias[j] (if cbias); y = float((double)y * a[j] + b[j]) (if a or b);
//   activation; out (u8 quantized or f32), NHWC [n, oh, ow, cout].
// w is repacked: wt[((ky * kw + kx) * c + ci) * cpad + j], cpad = cout rounded
// up to 16, zero padded. Every variant computes the same fma sequence per
// output (bit-identical).
struct ConvInputArgs {
  ConvGeom g;
  const uint8_t* x = nullptr;
  const float* table = nullptr;
  const float* wt = nullptr;
  int64_t cpad = 0;
  const float* cbias = nullptr;
  const float* a = nullptr;
  const float* b = nullptr;
  AffAct act = AffAct::None;
  const float* slope = nullptr;
  float lo = 0.f, hi = 0.f;
  Output out;
};
// Output rows [r0, r1) of n * oh.
using ConvInputFn = void (*)(const ConvInputArgs& args, int64_t r0, int64_t r1);
const Kernel<ConvInputFn>& rt_conv_input_kernel();
void rt_conv_input_ref(const ConvInputArgs& args, int64_t r0, int64_t r1);
void rt_conv_input_avx2(const ConvInputArgs& args, int64_t r0, int64_t r1);
void rt_conv_input_avx512(const ConvInputArgs& args, int64_t r0, int64_t r1);

// Threaded drivers (baseline code, rt.cc).
void rt_add_run(AddFn fn, const AddArgs& args, int64_t count);
void rt_affine_run(AffineFn fn, const AffineArgs& args, int64_t rows);
void rt_lut_run(LutFn fn, const LutArgs& args, int64_t rows);
void rt_conv_input_run(ConvInputFn fn, const ConvInputArgs& args);

}  // namespace rt
}  // namespace qf
