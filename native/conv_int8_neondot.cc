// Int8 depthwise convolution, aarch64 + dot product (SDOT, FEAT_DotProd):
// 16 channels (4 vectors of 4) x up to 4 pixels per step over the quad row walk of
// conv_int8_quads.h (as conv_int8_avx512vnni.cc). SDOT is signed x signed, so
// the quads are stored as x ^ 0x80 = x - 128 (s8) and the sums start from
// corr[ch] + 128 * sum(w - wzp) = (128 - xzp) * sum(w - wzp): exact in
// wrapping int32, bit-identical to dw_u8s8_ref. Weights whose w - wZeroPoint
// leaves int8 use dw_u8s8_neon. Epilogue: neon_epilogue.h.
#include <arm_neon.h>

#include <cstdint>
#include <cstring>

#include "conv_int8_quads.h"
#include "neon_epilogue.h"

namespace qf {
namespace {

void quad_fill(uint8_t* d, int64_t cpad, uint8_t zq) {
  std::memset(d, zq ^ 0x80, static_cast<size_t>(cpad * 4));
}

inline uint8x16_t load16(const uint8_t* p, int64_t nl) {
  if (nl >= 16) return vld1q_u8(p);
  uint8_t t[16] = {0};
  std::memcpy(t, p, static_cast<size_t>(nl));
  return vld1q_u8(t);
}

void quad_column(uint8_t* d, const uint8_t* const* rows, int64_t off, int64_t C, int64_t cpad, uint8_t zq) {
  const uint8x16_t z = vdupq_n_u8(zq), flip = vdupq_n_u8(0x80);
  for (int64_t c0 = 0; c0 < cpad; c0 += 16) {
    uint8x16_t v[4];
    for (int i = 0; i < 4; i++) v[i] = rows[i] ? load16(rows[i] + off + c0, C - c0) : z;
    const uint16x8_t ab_lo = vreinterpretq_u16_u8(vzip1q_u8(v[0], v[1]));
    const uint16x8_t ab_hi = vreinterpretq_u16_u8(vzip2q_u8(v[0], v[1]));
    const uint16x8_t cd_lo = vreinterpretq_u16_u8(vzip1q_u8(v[2], v[3]));
    const uint16x8_t cd_hi = vreinterpretq_u16_u8(vzip2q_u8(v[2], v[3]));
    uint8_t* o = d + c0 * 4;
    vst1q_u8(o, veorq_u8(vreinterpretq_u8_u16(vzip1q_u16(ab_lo, cd_lo)), flip));       // channels 0..3
    vst1q_u8(o + 16, veorq_u8(vreinterpretq_u8_u16(vzip2q_u16(ab_lo, cd_lo)), flip));  // 4..7
    vst1q_u8(o + 32, veorq_u8(vreinterpretq_u8_u16(vzip1q_u16(ab_hi, cd_hi)), flip));  // 8..11
    vst1q_u8(o + 48, veorq_u8(vreinterpretq_u8_u16(vzip2q_u16(ab_hi, cd_hi)), flip));  // 12..15
  }
}

template <int P>
void quad_block(const QuadArgs& a) {
  const uint8_t* xq = a.xq;
  const int8_t* wq = a.wq;
  const int64_t ps = a.ps, ks = a.ks, qs = a.qs, wks = a.wks, wqs = a.wqs, kw = a.kw, nqy = a.nqy;
  int32x4_t acc[P][4];
  for (int v = 0; v < 4; v++) {
    const int32x4_t c = vld1q_s32(a.corr + 4 * v);
    for (int p = 0; p < P; p++) acc[p][v] = c;
  }
  for (int64_t kx = 0; kx < kw; kx++)
    for (int64_t qy = 0; qy < nqy; qy++) {
      const int8_t* w = wq + kx * wks + qy * wqs;
      int8x16_t wv[4];
      for (int v = 0; v < 4; v++) wv[v] = vld1q_s8(w + 16 * v);
      const int8_t* s = reinterpret_cast<const int8_t*>(xq + kx * ks + qy * qs);
      for (int p = 0; p < P; p++)
        for (int v = 0; v < 4; v++) acc[p][v] = vdotq_s32(acc[p][v], vld1q_s8(s + p * ps + 16 * v), wv[v]);
    }
  const int64_t nl = a.C - a.c0 < 16 ? a.C - a.c0 : 16;
  for (int p = 0; p < P; p++) {
    const int32x4_t lo[2] = {acc[p][0], acc[p][1]}, hi[2] = {acc[p][2], acc[p][3]};
    const int64_t o = a.o0 + p * a.C + a.c0;
    epi8(*a.ep, lo, a.c0, nl < 8 ? nl : 8, a.out, o);
    if (nl > 8) epi8(*a.ep, hi, a.c0 + 8, nl - 8, a.out, o + 8);
  }
}

}  // namespace

void dw_u8s8_neondot(const ConvGeom& g, const uint8_t* x, const DwU8Prep& pr, const Epilogue& ep, void* out,
                     int64_t r0, int64_t r1) {
  if (!pr.wquad) {
    dw_u8s8_neon(g, x, pr, ep, out, r0, r1);
    return;
  }
  // Start values: corr + 128 * sum of each channel's weight quads (wrapping).
  const int64_t cpad = pr.cpad, nq = g.kw * pr.nqy;
  AlignedBuf<int32_t> c128(static_cast<size_t>(cpad));
  for (int64_t ch = 0; ch < cpad; ch++) {
    uint32_t s = 0;
    for (int64_t k = 0; k < nq; k++)
      for (int i = 0; i < 4; i++) s += static_cast<uint32_t>(pr.wquad[(k * cpad + ch) * 4 + i]);
    c128.data()[ch] = static_cast<int32_t>(static_cast<uint32_t>(pr.corr[ch]) + 128u * s);
  }
  dw_quad_rows<4>(g, x, pr, c128.data(), ep, out, r0, r1);
}

}  // namespace qf
