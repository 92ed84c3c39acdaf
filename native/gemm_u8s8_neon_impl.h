// u8 x s8 -> s32 GEMM microkernel for aarch64, one source for two variants:
//   gemm_u8s8_neon.cc    (baseline Advanced SIMD): each 64-byte k group of a
//     panel is de-interleaved by k (vld4q_s8: 16 channels per k byte),
//     widened to int16 and multiplied by lane (smlal), exact in int32;
//   gemm_u8s8_neondot.cc (+dotprod, QF_GEMM8_DOT): SDOT on the packed layout
//     as it is (4 channels x 4 k per vector); A is made signed (a ^ 0x80 =
//     a - 128) and 128 * sum_k w is added back per k block, which is exact in
//     wrap-around int32 arithmetic.
// Both keep acc[r][v] = columns 4v..4v+3 of row r and share the epilogue,
// which follows epilogue_ref op for op (neon_epilogue.h).
// Include from exactly one .cc per variant: everything here is file-local.
#pragma once
#include <arm_neon.h>

#include <cstring>

#include "gemm_u8s8.h"
#include "neon_epilogue.h"

namespace qf {
namespace {

using gemm8::Tile;

constexpr int MR = 4;

// Epilogue of R rows x 16 columns (acc[r][v]: columns 4v..4v+3).
template <int R>
inline void epilogue(const Tile& t, int32x4_t (&acc)[R][4]) {
  for (int v = 0; v < 4; v++) {
    const int32x4_t corr = vld1q_s32(t.corr + 4 * v);
    for (int r = 0; r < R; r++) acc[r][v] = vaddq_s32(acc[r][v], corr);
    if (t.wzp) {
      const int32x4_t wz = vld1q_s32(t.wzp + 4 * v);
      for (int r = 0; r < R; r++) acc[r][v] = vsubq_s32(acc[r][v], vmulq_n_s32(wz, t.rowsum[r]));
    }
  }
  const int cn = t.cols < 16 ? t.cols : 16;
  if (t.type == OutType::S32) {
    int32_t* o = static_cast<int32_t*>(t.out);
    for (int r = 0; r < R; r++) {
      int32_t* d = o + r * t.ldo;
      if (cn == 16) {
        for (int v = 0; v < 4; v++) vst1q_s32(d + 4 * v, acc[r][v]);
      } else {
        int32_t tmp[16];
        for (int v = 0; v < 4; v++) vst1q_s32(tmp + 4 * v, acc[r][v]);
        std::memcpy(d, tmp, static_cast<size_t>(cn) * 4);
      }
    }
    return;
  }
  const float32x4_t zero = vdupq_n_f32(0.f);
  float32x4_t y[R][4];
  for (int v = 0; v < 4; v++) {
    const float32x4_t sc = t.scale ? vld1q_f32(t.scale + 4 * v) : vdupq_n_f32(1.f);
    const float32x4_t bi = t.bias ? vld1q_f32(t.bias + 4 * v) : zero;
    const float32x4_t sl = t.act == Act::Prelu ? vld1q_f32(t.slope + 4 * v) : zero;
    for (int r = 0; r < R; r++) y[r][v] = epi_act(acc[r][v], t.scale != nullptr, sc, bi, t.act, sl);
  }
  if (t.type == OutType::F32) {
    float* o = static_cast<float*>(t.out);
    for (int r = 0; r < R; r++) {
      float* d = o + r * t.ldo;
      if (cn == 16) {
        for (int v = 0; v < 4; v++) vst1q_f32(d + 4 * v, y[r][v]);
      } else {
        float tmp[16];
        for (int v = 0; v < 4; v++) vst1q_f32(tmp + 4 * v, y[r][v]);
        std::memcpy(d, tmp, static_cast<size_t>(cn) * 4);
      }
    }
    return;
  }
  const float32x4_t os = vdupq_n_f32(t.out_scale), zp = vdupq_n_f32(t.out_zp);
  const float32x4_t lo = vdupq_n_f32(t.lo), hi = vdupq_n_f32(t.hi);
  uint8_t* o = static_cast<uint8_t*>(t.out);
  for (int r = 0; r < R; r++) {
    int16x4_t h[4];
    for (int v = 0; v < 4; v++) h[v] = epi_quant(y[r][v], os, zp, lo, hi);
    const uint8x16_t b8 = vreinterpretq_u8_s8(vcombine_s8(vmovn_s16(vcombine_s16(h[0], h[1])),
                                                          vmovn_s16(vcombine_s16(h[2], h[3]))));
    uint8_t* d = o + r * t.ldo;
    if (cn == 16) {
      vst1q_u8(d, b8);
    } else {
      uint8_t tmp[16];
      vst1q_u8(tmp, b8);
      std::memcpy(d, tmp, static_cast<size_t>(cn));
    }
  }
}

// One 16-column panel of R rows.
template <int R>
void tile_kernel(const Tile& t) {
  int32x4_t acc[R][4];
  for (int r = 0; r < R; r++)
    for (int v = 0; v < 4; v++) acc[r][v] = vdupq_n_s32(0);
  const int64_t lda = t.lda;
  const int64_t kq_full = t.kq - (t.tail ? 1 : 0);
  const uint8_t* a = t.a;
  const int8_t* b = t.b;
#if defined(QF_GEMM8_DOT)
  int32x4_t wsum[4];
  for (int v = 0; v < 4; v++) wsum[v] = vdupq_n_s32(0);
  const int8x16_t ones = vdupq_n_s8(1);
  const uint32x4_t flip = vdupq_n_u32(0x80808080u);
  auto step = [&](const uint8_t* const (&ap)[R]) {
    int8x16_t bv[4];
    for (int v = 0; v < 4; v++) {
      bv[v] = vld1q_s8(b + 16 * v);
      wsum[v] = vdotq_s32(wsum[v], bv[v], ones);
    }
    for (int r = 0; r < R; r++) {
      uint32_t w4;
      std::memcpy(&w4, ap[r], 4);
      const int8x16_t av = vreinterpretq_s8_u32(veorq_u32(vdupq_n_u32(w4), flip));
      for (int v = 0; v < 4; v++) acc[r][v] = vdotq_s32(acc[r][v], bv[v], av);
    }
  };
#else
  auto step = [&](const uint8_t* const (&ap)[R]) {
    const int8x16x4_t bk = vld4q_s8(b);  // bk.val[kk]: the 16 channels' byte kk
    int16x8_t bw[4][2];
    for (int kk = 0; kk < 4; kk++) {
      bw[kk][0] = vmovl_s8(vget_low_s8(bk.val[kk]));
      bw[kk][1] = vmovl_high_s8(bk.val[kk]);
    }
    for (int r = 0; r < R; r++) {
      uint32_t w4;
      std::memcpy(&w4, ap[r], 4);
      const int16x4_t av = vreinterpret_s16_u16(vget_low_u16(vmovl_u8(vreinterpret_u8_u32(vdup_n_u32(w4)))));
      acc[r][0] = vmlal_lane_s16(acc[r][0], vget_low_s16(bw[0][0]), av, 0);
      acc[r][1] = vmlal_high_lane_s16(acc[r][1], bw[0][0], av, 0);
      acc[r][2] = vmlal_lane_s16(acc[r][2], vget_low_s16(bw[0][1]), av, 0);
      acc[r][3] = vmlal_high_lane_s16(acc[r][3], bw[0][1], av, 0);
      acc[r][0] = vmlal_lane_s16(acc[r][0], vget_low_s16(bw[1][0]), av, 1);
      acc[r][1] = vmlal_high_lane_s16(acc[r][1], bw[1][0], av, 1);
      acc[r][2] = vmlal_lane_s16(acc[r][2], vget_low_s16(bw[1][1]), av, 1);
      acc[r][3] = vmlal_high_lane_s16(acc[r][3], bw[1][1], av, 1);
      acc[r][0] = vmlal_lane_s16(acc[r][0], vget_low_s16(bw[2][0]), av, 2);
      acc[r][1] = vmlal_high_lane_s16(acc[r][1], bw[2][0], av, 2);
      acc[r][2] = vmlal_lane_s16(acc[r][2], vget_low_s16(bw[2][1]), av, 2);
      acc[r][3] = vmlal_high_lane_s16(acc[r][3], bw[2][1], av, 2);
      acc[r][0] = vmlal_lane_s16(acc[r][0], vget_low_s16(bw[3][0]), av, 3);
      acc[r][1] = vmlal_high_lane_s16(acc[r][1], bw[3][0], av, 3);
      acc[r][2] = vmlal_lane_s16(acc[r][2], vget_low_s16(bw[3][1]), av, 3);
      acc[r][3] = vmlal_high_lane_s16(acc[r][3], bw[3][1], av, 3);
    }
  };
#endif
  const uint8_t* ap[R];
  for (int64_t q = 0; q < kq_full; q++) {
    for (int r = 0; r < R; r++) ap[r] = a + r * lda;
    step(ap);
    a += 4;
    b += 64;
  }
  if (t.tail) {
    uint8_t tmp[R][4];
    for (int r = 0; r < R; r++) {
      std::memset(tmp[r], 0, 4);
      std::memcpy(tmp[r], a + r * lda, static_cast<size_t>(t.tail));
      ap[r] = tmp[r];
    }
    step(ap);
  }
#if defined(QF_GEMM8_DOT)
  // Padding bytes (A's tail, W's zero padding) add 0 to both sums: W is 0 there.
  for (int v = 0; v < 4; v++) {
    const int32x4_t fix = vreinterpretq_s32_u32(vshlq_n_u32(vreinterpretq_u32_s32(wsum[v]), 7));
    for (int r = 0; r < R; r++) acc[r][v] = vaddq_s32(acc[r][v], fix);
  }
#endif
  if (t.load_part)
    for (int r = 0; r < R; r++)
      for (int v = 0; v < 4; v++) acc[r][v] = vaddq_s32(acc[r][v], vld1q_s32(t.part + r * t.ldp + 4 * v));
  if (!t.final) {
    for (int r = 0; r < R; r++)
      for (int v = 0; v < 4; v++) vst1q_s32(t.part + r * t.ldp + 4 * v, acc[r][v]);
    return;
  }
  epilogue<R>(t, acc);
}

void piece(const Tile& t) {
  switch (t.rows) {
    case 1: tile_kernel<1>(t); break;
    case 2: tile_kernel<2>(t); break;
    case 3: tile_kernel<3>(t); break;
    default: tile_kernel<4>(t); break;
  }
}

void tile(const Tile& t) { gemm8::for_each_panel(t, piece); }

void rowsum(const uint8_t* a, int64_t lda, int64_t rows, int64_t k, int32_t* out) {
  for (int64_t r = 0; r < rows; r++) {
    const uint8_t* p = a + r * lda;
    uint64_t tot = 0;
    int64_t kk = 0;
    for (; kk + 16 <= k; kk += 16) tot += vaddlvq_u8(vld1q_u8(p + kk));
    for (; kk < k; kk++) tot += p[kk];
    out[r] = static_cast<int32_t>(static_cast<uint32_t>(tot));
  }
}

const gemm8::Micro kMicro = {MR, 1, tile, rowsum, 2048, 384 * 1024, 256 * 1024};

}  // namespace
}  // namespace qf
