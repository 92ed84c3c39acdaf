// AVX2 variants of the learned-range kernels: 8 lanes, scalar tails with the
// same formula. Bit-exact with learned_quant_ref.cc (semantics:
// learned_quant.h). Same structure as learned_quant_avx512.cc: QDrop over tiles
// of 32 segments with one xorshift32 stream per lane; the backward stores each
// sum's float64 terms (+0 where an element does not contribute, which adds
// nothing) per block and adds them in element order.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "learned_quant.h"

namespace qf {
namespace {

constexpr int kRne = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

using VF = __m256;
inline VF vset1(float v) { return _mm256_set1_ps(v); }
constexpr int kWidth = 8;

}  // namespace
}  // namespace qf

#include "learned_quant_lanes.h"

namespace qf {
namespace {

inline __m256 fq8(const FqCtx& c, __m256 x) {
  const __m256 r = _mm256_round_ps(_mm256_div_ps(x, c.s), kRne);
  return _mm256_mul_ps(_mm256_min_ps(c.hi, _mm256_max_ps(c.lo, r)), c.s);
}

// 8 mask bits -> 8 bytes of 0/1.
inline uint64_t spread8(uint32_t b) {
  uint64_t v = 0;
  for (int k = 0; k < 8; k++) v |= static_cast<uint64_t>((b >> k) & 1u) << (8 * k);
  return v;
}

inline void qdrop_panel(const QDropRun& r, const FqCtx& c, int64_t base, int64_t cnt, uint32_t D) {
  const __m256i bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  int64_t t = 0;
  for (; t + 8 <= cnt; t += 8) {
    const uint32_t b = (D >> t) & 0xffu;
    const __m256i sel = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(static_cast<int>(b)), bits), bits);
    const __m256 xv = _mm256_loadu_ps(r.x + base + t);
    _mm256_storeu_ps(r.out + base + t, _mm256_blendv_ps(fq8(c, xv), xv, _mm256_castsi256_ps(sel)));
    const uint64_t bytes = spread8(b);
    std::memcpy(r.drop + base + t, &bytes, 8);
  }
  for (; t < cnt; t++) {
    const int64_t i = base + t;
    if ((D >> t) & 1u) {
      r.drop[i] = 1;
      r.out[i] = r.x[i];
    } else {
      r.drop[i] = 0;
      r.out[i] = fq1(c, r.x[i]);
    }
  }
}

constexpr int kTermBlock = 256;

struct Masks8 {
  __m256 clip, ins, below, above;  // lanes all-ones / zero (below/above/ins: not dropped)
  __m256 d, g;
};

inline Masks8 classify8(const RangeGradRun& r, int64_t i, __m256 s, __m256 lo, __m256 hi) {
  Masks8 k;
  const __m256 xv = _mm256_loadu_ps(r.x + i);
  k.g = _mm256_loadu_ps(r.g + i);
  const __m256 xs = _mm256_div_ps(xv, s);
  const __m256 q = _mm256_round_ps(xs, kRne);
  __m256 below = _mm256_cmp_ps(q, lo, _CMP_LT_OQ);
  __m256 above = _mm256_cmp_ps(q, hi, _CMP_GT_OQ);
  __m256 ins = _mm256_andnot_ps(_mm256_or_ps(below, above), _mm256_castsi256_ps(_mm256_set1_epi32(-1)));
  if (r.drop) {
    int64_t v;
    std::memcpy(&v, r.drop + i, 8);
    const __m256i db = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(v));
    const __m256 dropped = _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_cmpeq_epi32(db, _mm256_setzero_si256()),
                                                                  _mm256_setzero_si256()));
    below = _mm256_andnot_ps(dropped, below);
    above = _mm256_andnot_ps(dropped, above);
    ins = _mm256_andnot_ps(dropped, ins);
  }
  k.below = below;
  k.above = above;
  k.ins = ins;
  k.clip = _mm256_or_ps(below, above);
  k.d = _mm256_sub_ps(q, xs);
  return k;
}

inline __m256d widen_mask(__m128 m) { return _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm_castps_si128(m))); }

}  // namespace

void qdrop_fake_quantize_avx2(const QDropRun& r) {
  const FqCtx c = make_fq(r.scale, r.zp, r.qmin, r.qmax);
  const int64_t n = r.n;
  if (n < kLanes * 64) {
    qdrop_scalar(r, c);
    return;
  }
  const Jumps& J = jumps();
  alignas(32) uint32_t st[kLanes];
  st[0] = r.state;
  for (int j = 1; j < kLanes; j++) st[j] = matvec(J.seg, st[j - 1]);
  __m256i S[kVecs];
  for (int v = 0; v < kVecs; v++) S[v] = _mm256_load_si256(reinterpret_cast<const __m256i*>(st + 8 * v));
  const bool all = r.threshold > 0xffffffffull;
  const __m256i sign = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  const __m256i T = _mm256_xor_si256(_mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(all ? 0 : r.threshold))), sign);
  alignas(32) uint32_t w[kPanels][kLanes];
  for (int64_t t0 = 0; t0 < n; t0 += kLanes * kSeg) {
    for (int p = 0; p < kPanels; p++) {
      __m256i acc[kVecs];
      for (int v = 0; v < kVecs; v++) acc[v] = _mm256_setzero_si256();
      for (int t = 0; t < 32; t++) {
        const __m256i bit = _mm256_set1_epi32(static_cast<int>(1u << t));
        for (int v = 0; v < kVecs; v++) {
          __m256i x = S[v];
          x = _mm256_xor_si256(x, _mm256_slli_epi32(x, 13));
          x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 17));
          x = _mm256_xor_si256(x, _mm256_slli_epi32(x, 5));
          S[v] = x;
          const __m256i lt = all ? _mm256_set1_epi32(-1) : _mm256_cmpgt_epi32(T, _mm256_xor_si256(x, sign));  // x < T unsigned
          acc[v] = _mm256_or_si256(acc[v], _mm256_and_si256(lt, bit));
        }
      }
      for (int v = 0; v < kVecs; v++) _mm256_store_si256(reinterpret_cast<__m256i*>(w[p] + 8 * v), acc[v]);
    }
    for (int j = 0; j < kLanes; j++) {
      const int64_t base = t0 + j * kSeg;
      if (base >= n) break;
      const int64_t len = std::min<int64_t>(kSeg, n - base);
      for (int p = 0; p * 32 < len; p++) qdrop_panel(r, c, base + p * 32, std::min<int64_t>(32, len - p * 32), w[p][j]);
    }
    for (int v = 0; v < kVecs; v++) {
      __m256i acc = _mm256_setzero_si256();
      for (int b = 0; b < 32; b++) {
        const __m256i bit = _mm256_set1_epi32(static_cast<int>(1u << b));
        const __m256i m = _mm256_cmpeq_epi32(_mm256_and_si256(S[v], bit), bit);
        acc = _mm256_xor_si256(acc, _mm256_and_si256(m, _mm256_set1_epi32(static_cast<int>(J.rest[b]))));
      }
      S[v] = acc;
    }
  }
}

void learned_range_backward_avx2(const RangeGradRun& r, RangeGradSums* sums) {
  const __m256 s = _mm256_set1_ps(r.scale);
  const float slo = static_cast<float>(r.qmin - r.zp), shi = static_cast<float>(r.qmax - r.zp);
  const __m256 lo = _mm256_set1_ps(slo), hi = _mm256_set1_ps(shi);
  const int64_t n8 = r.n / 8 * 8;
  if (!sums) {
    if (!r.gi) return;
    for (int64_t i = 0; i < n8; i += 8) {
      const Masks8 k = classify8(r, i, s, lo, hi);
      _mm256_storeu_ps(r.gi + i, _mm256_andnot_ps(k.clip, k.g));
    }
    RangeGradRun t = r;
    t.x += n8;
    t.g += n8;
    t.gi += n8;
    if (t.drop) t.drop += n8;
    t.n -= n8;
    learned_range_backward_ref(t, nullptr);
    return;
  }
  alignas(32) double ts[kTermBlock], tl[kTermBlock], th[kTermBlock];
  double sl = sums->lo, sh = sums->hi, ss = sums->s;
  for (int64_t b = 0; b < n8; b += kTermBlock) {
    const int64_t e = std::min<int64_t>(n8, b + kTermBlock);
    for (int64_t i = b; i < e; i += 8) {
      const Masks8 k = classify8(r, i, s, lo, hi);
      if (r.gi) _mm256_storeu_ps(r.gi + i, _mm256_andnot_ps(k.clip, k.g));
      const __m256d g0 = _mm256_cvtps_pd(_mm256_castps256_ps128(k.g)), g1 = _mm256_cvtps_pd(_mm256_extractf128_ps(k.g, 1));
      const __m256d d0 = _mm256_cvtps_pd(_mm256_castps256_ps128(k.d)), d1 = _mm256_cvtps_pd(_mm256_extractf128_ps(k.d, 1));
      const int64_t o = i - b;
      _mm256_store_pd(ts + o, _mm256_and_pd(_mm256_mul_pd(g0, d0), widen_mask(_mm256_castps256_ps128(k.ins))));
      _mm256_store_pd(ts + o + 4, _mm256_and_pd(_mm256_mul_pd(g1, d1), widen_mask(_mm256_extractf128_ps(k.ins, 1))));
      _mm256_store_pd(tl + o, _mm256_and_pd(g0, widen_mask(_mm256_castps256_ps128(k.below))));
      _mm256_store_pd(tl + o + 4, _mm256_and_pd(g1, widen_mask(_mm256_extractf128_ps(k.below, 1))));
      _mm256_store_pd(th + o, _mm256_and_pd(g0, widen_mask(_mm256_castps256_ps128(k.above))));
      _mm256_store_pd(th + o + 4, _mm256_and_pd(g1, widen_mask(_mm256_extractf128_ps(k.above, 1))));
    }
    for (int64_t k = 0; k < e - b; k++) {
      ss += ts[k];
      sl += tl[k];
      sh += th[k];
    }
  }
  RangeGradSums tail{sl, sh, ss};
  RangeGradRun t = r;
  t.x += n8;
  t.g += n8;
  if (t.gi) t.gi += n8;
  if (t.drop) t.drop += n8;
  t.n -= n8;
  learned_range_backward_ref(t, &tail);
  *sums = tail;
}

}  // namespace qf
