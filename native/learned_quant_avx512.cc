// AVX-512 (F/BW/DQ/VL) variants of the learned-range kernels: 16 lanes.
// Bit-exact with learned_quant_ref.cc (semantics: learned_quant.h).
//
// QDrop: the run is cut into tiles of kLanes x kSeg elements (64 x 256); lane
// j of a tile runs the xorshift32 stream of the tile's j-th segment (start
// states by jumps: T^kSeg between lanes, T^((kLanes - 1) kSeg) from one tile
// to the next), 32 steps at a time, collecting each step's comparison as one
// bit of a 32-bit word per lane (one masked OR per step; four independent
// lane vectors hide the 6-cycle latency of a step). The tile's elements are
// then processed in memory order, the words selecting between x and its
// fake-quantized value. The stream costs ~0.5 instructions per element
// instead of a 6-instruction dependency chain per element.
//
// Backward: per block of 256 elements the vector loop writes gradIn and
// compresses the nonzero float64 terms of each sum into small buffers (in
// element order); the terms of one block are added, in order, while the next
// block is computed (software pipeline, spread evenly over its vectors): the
// sums are the sequential float64 sums of the JS loops. The add chain (3
// cycles per kept term on Zen 4) bounds the speed when few elements are
// dropped. (Compress into a register and store the whole vector:
// compress-to-memory is microcoded and slow on AMD Zen 4.)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "learned_quant.h"

namespace qf {
namespace {

constexpr int kRne = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
constexpr __mmask16 kAll = 0xffff;

inline __mmask16 tail_mask(int64_t left) {
  return left >= 16 ? kAll : static_cast<__mmask16>((1u << left) - 1u);
}
inline __m512 load16(const float* p, __mmask16 m) { return m == kAll ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(m, p); }
inline __m128i load16b(const uint8_t* p, __mmask16 m) {
  return m == kAll ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)) : _mm_maskz_loadu_epi8(m, p);
}
inline void store16(float* p, __mmask16 m, __m512 v) {
  if (m == kAll) _mm512_storeu_ps(p, v);
  else _mm512_mask_storeu_ps(p, m, v);
}
inline void store16b(uint8_t* p, __mmask16 m, __m128i v) {
  if (m == kAll) _mm_storeu_si128(reinterpret_cast<__m128i*>(p), v);
  else _mm_mask_storeu_epi8(p, m, v);
}

using VF = __m512;
inline VF vset1(float v) { return _mm512_set1_ps(v); }
constexpr int kWidth = 16;

}  // namespace
}  // namespace qf

#include "learned_quant_lanes.h"

namespace qf {
namespace {

// fakeQuantize's formula and operand order (quant_avx512.cc).
inline __m512 fq16(const FqCtx& c, __m512 x) {
  const __m512 r = _mm512_roundscale_ps(_mm512_div_ps(x, c.s), kRne);
  return _mm512_mul_ps(_mm512_min_ps(c.hi, _mm512_max_ps(c.lo, r)), c.s);
}

// Elements [base, base + cnt) (cnt <= 32) with drop bits D (bit t: element base + t).
inline void qdrop_panel(const QDropRun& r, const FqCtx& c, int64_t base, int64_t cnt, uint32_t D) {
  const __m128i one = _mm_set1_epi8(1);
  for (int h = 0; h < 2; h++) {
    const int64_t left = cnt - 16 * h;
    if (left <= 0) break;
    const int64_t off = base + 16 * h;
    const __mmask16 m = tail_mask(left);
    const __mmask16 d = static_cast<__mmask16>(D >> (16 * h)) & m;
    const __m512 xv = load16(r.x + off, m);
    store16(r.out + off, m, _mm512_mask_blend_ps(d, fq16(c, xv), xv));
    store16b(r.drop + off, m, _mm_maskz_mov_epi8(d, one));
  }
}

// ---------------------------------------------------------------- backward
constexpr int kTermBlock = 256;

struct BackCtx {
  __m512 s, lo, hi;
};

// gradIn only (no sums): gi = (dropped or inside) ? g : +0.
void backward_gi_only(const RangeGradRun& r, const BackCtx& c) {
  for (int64_t i = 0; i < r.n; i += 16) {
    const __mmask16 m = tail_mask(r.n - i);
    const __m512 xv = load16(r.x + i, m);
    const __m512 gv = load16(r.g + i, m);
    const __m512 q = _mm512_roundscale_ps(_mm512_div_ps(xv, c.s), kRne);
    __mmask16 clip = _mm512_cmp_ps_mask(q, c.lo, _CMP_LT_OQ) | _mm512_cmp_ps_mask(q, c.hi, _CMP_GT_OQ);
    if (r.drop) {
      const __m128i db = load16b(r.drop + i, m);
      clip &= static_cast<__mmask16>(~_mm_test_epi8_mask(db, db));
    }
    store16(r.gi + i, m, _mm512_and_ps(gv, _mm512_castsi512_ps(_mm512_movm_epi32(static_cast<__mmask16>(~clip)))));
  }
}

// Compresses the lanes of v selected by k (in order) to buf + cnt; buf has 8 slots of slack.
inline void push8(double* buf, int& cnt, __mmask8 k, __m512d v) {
  _mm512_storeu_pd(buf + cnt, _mm512_maskz_compress_pd(k, v));
  cnt += __builtin_popcount(k);
}

template <bool GI, bool DROP>
void backward_sums(const RangeGradRun& r, const BackCtx& c, RangeGradSums* sums) {
  // Software pipeline: the terms of block k are added (in order) while block
  // k + 1 is computed, 16 per vector step, so the add chain overlaps the
  // vector work instead of following it.
  alignas(64) double bufa[kTermBlock + 8], bufb[kTermBlock + 8], tl[kTermBlock + 8], th[kTermBlock + 8];
  double* cur = bufa;
  double* prev = bufb;
  int pc = 0;
  double sl = sums->lo, sh = sums->hi, ss = sums->s;
  const __m512d zero = _mm512_setzero_pd();
  for (int64_t b = 0; b < r.n; b += kTermBlock) {
    const int64_t e = std::min<int64_t>(r.n, b + kTermBlock);
    int cs = 0, cl = 0, ch = 0, k = 0;
    const int quota = (pc + 15) >> 4;  // the previous block's terms, spread evenly over this block's 16 vectors
    for (int64_t i = b; i < e; i += 16) {
      const __mmask16 m = tail_mask(e - i);
      const __m512 xv = load16(r.x + i, m);
      const __m512 gv = load16(r.g + i, m);
      const __m512 xs = _mm512_div_ps(xv, c.s);
      const __m512 q = _mm512_roundscale_ps(xs, kRne);
      const __mmask16 below = _mm512_cmp_ps_mask(q, c.lo, _CMP_LT_OQ) & m;
      const __mmask16 above = _mm512_cmp_ps_mask(q, c.hi, _CMP_GT_OQ) & m;
      __mmask16 keep = m;  // not dropped
      if (DROP) {
        const __m128i db = load16b(r.drop + i, m);
        keep &= static_cast<__mmask16>(~_mm_test_epi8_mask(db, db));
      }
      const __mmask16 clip = (below | above) & keep;
      if (GI) store16(r.gi + i, m, _mm512_and_ps(gv, _mm512_castsi512_ps(_mm512_movm_epi32(static_cast<__mmask16>(~clip)))));
      const __mmask16 ins = static_cast<__mmask16>(~(below | above)) & keep;
      const __m512 d = _mm512_sub_ps(q, xs);  // exact in float32
      const __m512d g0 = _mm512_cvtps_pd(_mm512_castps512_ps256(gv));
      const __m512d g1 = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(gv), 1)));
      const __m512d d0 = _mm512_cvtps_pd(_mm512_castps512_ps256(d));
      const __m512d d1 = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(d), 1)));
      const __m512d p0 = _mm512_mul_pd(g0, d0), p1 = _mm512_mul_pd(g1, d1);  // exact in float64
      push8(cur, cs, _mm512_mask_cmp_pd_mask(static_cast<__mmask8>(ins), p0, zero, _CMP_NEQ_UQ), p0);
      push8(cur, cs, _mm512_mask_cmp_pd_mask(static_cast<__mmask8>(ins >> 8), p1, zero, _CMP_NEQ_UQ), p1);
      if (clip) {
        const __mmask16 ml = below & keep, mh = above & keep;
        push8(tl, cl, _mm512_mask_cmp_pd_mask(static_cast<__mmask8>(ml), g0, zero, _CMP_NEQ_UQ), g0);
        push8(tl, cl, _mm512_mask_cmp_pd_mask(static_cast<__mmask8>(ml >> 8), g1, zero, _CMP_NEQ_UQ), g1);
        push8(th, ch, _mm512_mask_cmp_pd_mask(static_cast<__mmask8>(mh), g0, zero, _CMP_NEQ_UQ), g0);
        push8(th, ch, _mm512_mask_cmp_pd_mask(static_cast<__mmask8>(mh >> 8), g1, zero, _CMP_NEQ_UQ), g1);
      }
      const int lim = std::min(pc, k + quota);
      for (; k < lim; k++) ss += prev[k];
    }
    for (; k < pc; k++) ss += prev[k];
    for (int j = 0; j < cl; j++) sl += tl[j];
    for (int j = 0; j < ch; j++) sh += th[j];
    double* t = cur;
    cur = prev;
    prev = t;
    pc = cs;
  }
  for (int k = 0; k < pc; k++) ss += prev[k];
  sums->lo = sl;
  sums->hi = sh;
  sums->s = ss;
}

}  // namespace

void qdrop_fake_quantize_avx512(const QDropRun& r) {
  const FqCtx c = make_fq(r.scale, r.zp, r.qmin, r.qmax);
  const int64_t n = r.n;
  if (n < kLanes * 64) {
    qdrop_scalar(r, c);
    return;
  }
  const Jumps& J = jumps();
  alignas(64) uint32_t st[kLanes];
  st[0] = r.state;
  for (int j = 1; j < kLanes; j++) st[j] = matvec(J.seg, st[j - 1]);
  __m512i S[kVecs];
  for (int v = 0; v < kVecs; v++) S[v] = _mm512_load_si512(st + 16 * v);
  const bool all = r.threshold > 0xffffffffull;
  const __m512i T = _mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(all ? 0 : r.threshold)));
  alignas(64) uint32_t w[kPanels][kLanes];
  for (int64_t t0 = 0; t0 < n; t0 += kLanes * kSeg) {
    // 1. The drop bits of the tile (registers only): bit t of w[p][j] drops element t0 + j kSeg + 32 p + t.
    for (int p = 0; p < kPanels; p++) {
      __m512i acc[kVecs];
      for (int v = 0; v < kVecs; v++) acc[v] = _mm512_setzero_si512();
      for (int t = 0; t < 32; t++) {
        const __m512i bit = _mm512_set1_epi32(static_cast<int>(1u << t));
        for (int v = 0; v < kVecs; v++) {
          __m512i x = S[v];
          x = _mm512_xor_si512(x, _mm512_slli_epi32(x, 13));
          x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 17));
          x = _mm512_xor_si512(x, _mm512_slli_epi32(x, 5));
          S[v] = x;
          const __mmask16 k = all ? kAll : _mm512_cmplt_epu32_mask(x, T);
          acc[v] = _mm512_mask_or_epi32(acc[v], k, acc[v], bit);
        }
      }
      for (int v = 0; v < kVecs; v++) _mm512_store_si512(w[p] + 16 * v, acc[v]);
    }
    // 2. The tile's elements in memory order.
    for (int j = 0; j < kLanes; j++) {
      const int64_t base = t0 + j * kSeg;
      if (base >= n) break;
      const int64_t len = std::min<int64_t>(kSeg, n - base);
      for (int p = 0; p * 32 < len; p++) qdrop_panel(r, c, base + p * 32, std::min<int64_t>(32, len - p * 32), w[p][j]);
    }
    // 3. Each lane moves from the end of its segment to its segment of the next tile.
    for (int v = 0; v < kVecs; v++) {
      __m512i acc = _mm512_setzero_si512();
      for (int b = 0; b < 32; b++) {
        const __mmask16 k = _mm512_test_epi32_mask(S[v], _mm512_set1_epi32(static_cast<int>(1u << b)));
        acc = _mm512_mask_xor_epi32(acc, k, acc, _mm512_set1_epi32(static_cast<int>(J.rest[b])));
      }
      S[v] = acc;
    }
  }
}

void learned_range_backward_avx512(const RangeGradRun& r, RangeGradSums* sums) {
  BackCtx c;
  c.s = _mm512_set1_ps(r.scale);
  c.lo = _mm512_set1_ps(static_cast<float>(r.qmin - r.zp));
  c.hi = _mm512_set1_ps(static_cast<float>(r.qmax - r.zp));
  if (!sums) {
    if (r.gi) backward_gi_only(r, c);
    return;
  }
  const int k = (r.gi ? 2 : 0) | (r.drop ? 1 : 0);
  switch (k) {
    case 0: backward_sums<false, false>(r, c, sums); break;
    case 1: backward_sums<false, true>(r, c, sums); break;
    case 2: backward_sums<true, false>(r, c, sums); break;
    default: backward_sums<true, true>(r, c, sums); break;
  }
}

}  // namespace qf
