// Int8 depthwise convolution, aarch64 Advanced SIMD (baseline): 8 channels
// per step over the row walk of conv_int8_rows.h (as conv_int8_avx2.cc). The
// int16 tap pairs are de-interleaved (vld2q_s16) and x - xZeroPoint is
// widened to int16 (vsubl_u8), then multiplied and accumulated in int32
// (vmlal): exact, wrapping like dw_u8s8_ref, so bit-identical to it; the
// epilogue is neon_epilogue.h. NEON has no masked loads: channel tails go
// through a stack buffer.
#include <arm_neon.h>

#include <cstdint>
#include <cstring>

#include "conv.h"
#include "neon_epilogue.h"

namespace qf {
namespace {

constexpr int64_t kDwLanes = 8;

template <bool M>
inline uint8x8_t load8(const uint8_t* p, int64_t nl) {
  if (!M) return vld1_u8(p);
  uint8_t t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::memcpy(t, p, static_cast<size_t>(nl));
  return vld1_u8(t);
}

// The vector layer of conv_int8_rows.h.
struct DwAcc {
  int32x4_t v[2];  // channels 0..3, 4..7
};
using DwW = int16x8x2_t;  // val[i]: tap 2q + i of 8 channels
using DwX = uint8x8_t;
using DwTail = int64_t;
inline DwTail dw_tail(int64_t nl) { return nl; }
inline DwX dw_xz(int32_t xzp) { return vdup_n_u8(static_cast<uint8_t>(xzp)); }
inline DwAcc dw_zero() { return DwAcc{{vdupq_n_s32(0), vdupq_n_s32(0)}}; }
inline DwW dw_wload(const int16_t* w) { return vld2q_s16(w); }
template <bool M>
inline DwAcc dw_madd(DwAcc acc, const uint8_t* a, const uint8_t* b, DwTail nl, DwX xz, DwW w) {
  const int16x8_t da = vreinterpretq_s16_u16(vsubl_u8(load8<M>(a, nl), xz));  // x - xzp, exact in int16
  const int16x8_t db = vreinterpretq_s16_u16(vsubl_u8(load8<M>(b, nl), xz));
  acc.v[0] = vmlal_s16(acc.v[0], vget_low_s16(da), vget_low_s16(w.val[0]));
  acc.v[1] = vmlal_high_s16(acc.v[1], da, w.val[0]);
  acc.v[0] = vmlal_s16(acc.v[0], vget_low_s16(db), vget_low_s16(w.val[1]));
  acc.v[1] = vmlal_high_s16(acc.v[1], db, w.val[1]);
  return acc;
}
inline void dw_store(const Epilogue& ep, DwAcc acc, int64_t c0, DwTail nl, void* out, int64_t idx) {
  epi8(ep, acc.v, c0, nl, out, idx);
}

}  // namespace
}  // namespace qf

#include "conv_int8_rows.h"

namespace qf {

void dw_u8s8_neon(const ConvGeom& g, const uint8_t* x, const DwU8Prep& pr, const Epilogue& ep, void* out, int64_t r0,
                  int64_t r1) {
  dw_rows(g, x, pr, ep, out, r0, r1);
}

}  // namespace qf
