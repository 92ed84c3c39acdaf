// u8 x s8 -> s32 GEMM with fused epilogues (see binding.d.ts, Int8Epilogue).
// Weights are packed once (PackedS8) into a layout every variant reads.
#pragma once
#include <cstdint>
#include <memory>

#include "core.h"

namespace qf {

enum class OutType : int { S32 = 0, F32 = 1, U8 = 2, S8 = 3 };
enum class Act : int { None = 0, Relu = 1, Prelu = 2 };

struct Epilogue {
  OutType type = OutType::S32;
  const float* scale = nullptr;  // [n] or null (= 1)
  const float* bias = nullptr;   // [n] or null (= 0)
  Act act = Act::None;
  const float* slope = nullptr;  // [n] for Prelu
  float out_scale = 1.f;         // u8/s8: q = clamp(rne(y / out_scale) + out_zp, clamp_min, clamp_max)
  int32_t out_zp = 0;
  int32_t clamp_min = 0, clamp_max = 255;
};

// Packed int8 weights: n rows (output channels) of k values.
// Layout is owned by gemm_u8s8*.cc (documented there); colsum[j] = sum_k w[j,k].
struct PackedS8 {
  int64_t n = 0, k = 0;
  int64_t n_pad = 0, k_pad = 0;
  AlignedBuf<int8_t> panels;
  AlignedBuf<int32_t> colsum;
  size_t bytes() const;
};

std::unique_ptr<PackedS8> pack_s8(const int8_t* w, int64_t n, int64_t k, int64_t ldw);

struct GemmU8S8Args {
  int64_t m = 0;
  const uint8_t* a = nullptr;  // m x k, row stride lda
  int64_t lda = 0;
  int32_t a_zp = 0;
  const PackedS8* w = nullptr;
  const int32_t* w_zp = nullptr;  // [n] or null
  void* out = nullptr;            // m x n of ep.type, row stride ldo (elements)
  int64_t ldo = 0;
  Epilogue ep;
};

using GemmU8S8Fn = void (*)(const GemmU8S8Args& args);
const Kernel<GemmU8S8Fn>& gemm_u8s8s32_kernel();

inline void gemm_u8s8s32(const GemmU8S8Args& args) { gemm_u8s8s32_kernel().chosen().fn(args); }

// The epilogue for one value (reference semantics; used by scalar paths).
void epilogue_ref(const Epilogue& ep, int64_t j, int32_t acc, void* out, int64_t index);

}  // namespace qf
