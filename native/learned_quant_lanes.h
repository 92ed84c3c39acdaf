// Scalar and layout parts shared by the learned-range kernel variants
// (learned_quant_avx2.cc, learned_quant_avx512.cc): the fake-quantize
// context and its scalar formula, the xorshift32 QDrop stream (step, jump
// tables for kLanes lanes of kSeg-element segments) and the scalar QDrop
// loop. The including file defines, in qf::{anonymous}, VF (its float
// vector), vset1(float) and kWidth (floats per VF) first. File-local.
#pragma once
#include <cmath>
#include <cstdint>

#include "learned_quant.h"

namespace qf {
namespace {

inline float rne_s(float v) { return std::nearbyint(v); }

struct FqCtx {
  VF s, lo, hi;
  float ss, slo, shi;
};
inline FqCtx make_fq(float scale, int32_t zp, int32_t qmin, int32_t qmax) {
  FqCtx c;
  c.ss = scale;
  c.slo = static_cast<float>(qmin - zp);
  c.shi = static_cast<float>(qmax - zp);
  c.s = vset1(c.ss);
  c.lo = vset1(c.slo);
  c.hi = vset1(c.shi);
  return c;
}
inline float fq1(const FqCtx& c, float x) {
  const float q = rne_s(x / c.ss);
  float v = (q < c.slo) ? c.slo : q;
  v = (v > c.shi) ? c.shi : v;
  return v * c.ss;
}

inline uint32_t step1(uint32_t st) {
  st ^= st << 13;
  st ^= st >> 17;
  st ^= st << 5;
  return st;
}

// QDrop tiles: kLanes lanes x kSeg elements; lane j covers elements [j kSeg, (j + 1) kSeg) of a tile.
constexpr int64_t kSeg = 256;
constexpr int kVecs = 4;                 // independent lane vectors (hides the 6-cycle step latency)
constexpr int kLanes = kWidth * kVecs;
constexpr int kPanels = kSeg / 32;
struct Jumps {
  uint32_t seg[32];   // columns of T^kSeg
  uint32_t rest[32];  // columns of T^((kLanes - 1) kSeg): from the end of a lane's segment to its next one
};
const Jumps& jumps() {
  static const Jumps j = [] {
    Jumps v;
    for (int c = 0; c < 32; c++) {
      v.seg[c] = xorshift_jump(uint32_t(1) << c, kSeg);
      v.rest[c] = xorshift_jump(uint32_t(1) << c, (kLanes - 1) * kSeg);
    }
    return v;
  }();
  return j;
}
inline uint32_t matvec(const uint32_t* cols, uint32_t v) {
  uint32_t r = 0;
  for (int c = 0; c < 32; c++) r ^= cols[c] & (0u - ((v >> c) & 1u));
  return r;
}

void qdrop_scalar(const QDropRun& r, const FqCtx& c) {
  uint32_t st = r.state;
  for (int64_t i = 0; i < r.n; i++) {
    st = step1(st);
    if (st < r.threshold) {
      r.drop[i] = 1;
      r.out[i] = r.x[i];
    } else {
      r.drop[i] = 0;
      r.out[i] = fq1(c, r.x[i]);
    }
  }
}

}  // namespace
}  // namespace qf
