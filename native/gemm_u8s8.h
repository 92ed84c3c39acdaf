// u8 x s8 -> s32 GEMM with fused epilogues (see binding.d.ts, Int8Epilogue).
// Weights are packed once (PackedS8) into a layout every variant reads.
//
//   out[i, j] = epilogue_j( acc[i, j] ),  i < m, j < n
//   acc[i, j] = sum_{kk < k} (a[i, kk] - a_zp) * (w[j, kk] - w_zp[j])
//
// acc is computed with 32-bit two's-complement wrap-around (every variant
// gives the same bits); it is the exact sum whenever that fits in int32,
// which always holds when k * 255 * (128 + |w_zp|) < 2^31 (e.g. any k up to
// 33025 with |w_zp| <= 127). Internally:
//   acc = sum a*w - a_zp*colsum[j] - w_zp[j]*rowsum_a[i] + k*a_zp*w_zp[j]
//
// Packed layout (PackedS8::panels, 64-byte aligned, zero padded):
//   n_pad = round_up(n, 16), k_pad = round_up(k, 4)
//   The n rows of W (output channels) are cut into panels of 16 channels;
//   inside a panel, k is cut into groups of 4 consecutive k values, and a
//   group stores its 16 channels x 4 bytes contiguously (64 bytes, one zmm):
//     byte offset of w[j, kk] = (j / 16) * (k_pad * 16)      // panel
//                             + (kk / 4) * 64                // k group
//                             + (j % 16) * 4 + (kk % 4)      // channel, byte
//   Padding channels (j >= n) and padding k (kk >= k) hold 0.
//   colsum[j] = sum_kk w[j, kk] (int32, n_pad entries, 0 for padding).
// This is the operand order of vpdpbusd: one broadcast dword of 4 u8
// activations times one 64-byte group gives 16 int32 partial dot products.
//
// Thread safety: gemm_u8s8s32 may be called concurrently (async workers);
// it runs on the shared pool (qf::parallel_run), or inline on the caller
// when called from inside a pool task (e.g. from a convolution's own
// parallel_for).
#pragma once
#include <cstdint>
#include <memory>

#include "core.h"

namespace qf {

enum class OutType : int { S32 = 0, F32 = 1, U8 = 2, S8 = 3 };
enum class Act : int { None = 0, Relu = 1, Prelu = 2 };

// Epilogue, per output value (reference semantics: epilogue_ref):
//   S32: out = acc (scale/bias/act ignored)
//   else y = float(acc); y = y * scale[j] (if scale); y = y + (bias ? bias[j] : 0.f)
//        Relu: y = y > 0 ? y : 0   (NaN -> 0; -0 -> +0)
//        Prelu: y = y < 0 ? y * slope[j] : y
//        F32: out = y
//        U8/S8: t = rne(y / out_scale) + float(out_zp) (float ops);
//               q = t >= clamp_min ? min(t, clamp_max) : clamp_min  (NaN -> clamp_min)
// Every float op is a separately rounded IEEE single op (no FMA).
struct Epilogue {
  OutType type = OutType::S32;
  const float* scale = nullptr;  // [n] or null (= 1)
  const float* bias = nullptr;   // [n] or null (= 0)
  Act act = Act::None;
  const float* slope = nullptr;  // [n] for Prelu
  float out_scale = 1.f;         // u8/s8: q = clamp(rne(y / out_scale) + out_zp, clamp_min, clamp_max)
  int32_t out_zp = 0;
  int32_t clamp_min = 0, clamp_max = 255;  // must lie within the out type's range
};

// Packed int8 weights: n rows (output channels) of k values.
// Layout: see the top of this file; colsum[j] = sum_k w[j,k].
struct PackedS8 {
  int64_t n = 0, k = 0;
  int64_t n_pad = 0, k_pad = 0;
  AlignedBuf<int8_t> panels;
  AlignedBuf<int32_t> colsum;
  size_t bytes() const;  // bytes of panels (n_pad * k_pad)
};

// w: n x k int8, row j (output channel) at w + j * ldw, ldw >= k; n, k >= 1.
std::unique_ptr<PackedS8> pack_s8(const int8_t* w, int64_t n, int64_t k, int64_t ldw);

struct GemmU8S8Args {
  int64_t m = 0;
  const uint8_t* a = nullptr;  // m x k, row stride lda (>= k)
  int64_t lda = 0;
  int32_t a_zp = 0;
  const PackedS8* w = nullptr;
  const int32_t* w_zp = nullptr;  // [n] or null
  void* out = nullptr;            // m x n of ep.type, row stride ldo (elements, >= n)
  int64_t ldo = 0;
  Epilogue ep;
};

using GemmU8S8Fn = void (*)(const GemmU8S8Args& args);
const Kernel<GemmU8S8Fn>& gemm_u8s8s32_kernel();

inline void gemm_u8s8s32(const GemmU8S8Args& args) { gemm_u8s8s32_kernel().chosen().fn(args); }

// The epilogue for one value (reference semantics; used by scalar paths).
// index: element index into out (of ep.type).
void epilogue_ref(const Epilogue& ep, int64_t j, int32_t acc, void* out, int64_t index);

// The variants (registered in gemm_u8s8s32_kernel(), best first).
void gemm_u8s8s32_avx512vnni(const GemmU8S8Args& args);
void gemm_u8s8s32_avxvnni(const GemmU8S8Args& args);
void gemm_u8s8s32_avx2(const GemmU8S8Args& args);
void gemm_u8s8s32_neondot(const GemmU8S8Args& args);  // aarch64
void gemm_u8s8s32_neon(const GemmU8S8Args& args);     // aarch64
void gemm_u8s8s32_ref(const GemmU8S8Args& args);

// ------------------------------------------------------------------ internals
// One blocked, threaded driver (gemm_u8s8.cc, baseline code) calls an ISA
// microkernel per register tile through plain function pointers.
namespace gemm8 {

// A strip: `rows` rows of A times `cols` consecutive output columns (a
// multiple of 16 columns, but for the last strip of the output), within one
// k block. A kernel walks it in register tiles.
struct Tile {
  const uint8_t* a = nullptr;  // row 0 of the strip, at the k block's first byte
  int64_t lda = 0;
  const int8_t* b = nullptr;   // panel of the strip's first column, at the k block's first group
  int64_t bstride = 0;         // bytes from one panel to the next (k_pad * 16)
  int64_t kq = 0;              // 4-byte k groups in this block (the last one partial when tail > 0)
  int tail = 0;                // 0, or 1..3: valid bytes of the last group (A is not read past them)
  int rows = 0;                // 1..mr
  int cols = 0;                // columns of the strip
  bool load_part = false;      // start from the partial sums in part (else from 0)
  bool final = false;          // apply the epilogue and write out (else store partial sums to part)
  const uint8_t* pf = nullptr; // or: A rows (stride lda) to prefetch while this tile runs
  int pf_rows = 0;
  int32_t* part = nullptr;     // rows x cols int32 partial sums (kernel-defined content), row stride ldp
  int64_t ldp = 0;
  // Epilogue inputs, already offset to the strip's first column / row.
  // All per-column arrays are readable up to a multiple of 16 entries (padded).
  // corr, wzp and rowsum are set for every strip: a kernel applies
  // acc += corr[j] - wzp[j] * rowsum[i] once, either when it starts from 0
  // (!load_part) or in the epilogue; the rest is for final strips only.
  const int32_t* corr = nullptr;    // k*a_zp*w_zp[j] - a_zp*colsum[j]
  const int32_t* wzp = nullptr;     // null when every w_zp is 0
  const int32_t* rowsum = nullptr;  // sum_k a[i, k] for the strip's rows (when wzp)
  const float* scale = nullptr;     // null = 1
  const float* bias = nullptr;      // null = +0 (y + 0: -0 becomes +0)
  const float* slope = nullptr;     // Prelu only
  OutType type = OutType::S32;
  Act act = Act::None;
  float out_scale = 1.f, out_zp = 0.f, lo = 0.f, hi = 0.f;
  // 1 / out_scale when 2^-125 <= out_scale <= 2^125, else 0. A variant may
  // compute q = y * out_recip instead of y / out_scale only where that gives
  // the same rne(): |q - rne(q)| < 0.5 - 2^-10 (the two differ by < 2^-10
  // while |q| < 2^12, and both saturate the clamp beyond); other lanes divide.
  float out_recip = 0.f;
  void* out = nullptr;  // element (row 0, col 0) of the strip
  int64_t ldo = 0;
};

struct Micro {
  int mr;  // max rows of a register tile
  int np;  // 16-column panels of a register tile (strips are multiples of 16*np columns but the last)
  void (*tile)(const Tile& t);  // one strip
  // rowsum[r] = sum_{kk<k} a[r*lda + kk] (wrap-around int32), r < rows.
  void (*rowsum)(const uint8_t* a, int64_t lda, int64_t rows, int64_t k, int32_t* out);
  // Cache budgets (bytes) for the blocking: max k block, B block, A block.
  int64_t kc_max, b_budget, a_budget;
};

void drive(const GemmU8S8Args& args, const Micro& micro);

// Calls fn once per 16-column piece of strip t (pointers advanced; pf kept
// for the first piece only): for kernels whose register tile is one panel.
void for_each_panel(const Tile& t, void (*fn)(const Tile& piece));

}  // namespace gemm8

}  // namespace qf
