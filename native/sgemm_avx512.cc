// fp32 GEMM, AVX-512 (F): C = alpha * op(A) * op(B) + beta * C, row-major.
//
// Blocking (GotoBLAS/BLIS style, one core's view):
//   for jc over n in blocks of nc          (per thread: its own columns)
//     for pc over k in blocks of kc        (kc <= KC_MAX, balanced)
//       pack B[pc:pc+kc, jc:jc+nc] into kc x NR column panels (zero padded)
//       for ir over m in slivers of MR      (A sliver, MR x kc, stays in L1)
//         for jr over the panels            (packed B block stays in L2)
//           microkernel: MR x NR tile of C (+)= A sliver * B panel
// A row-major (no transA) is not packed: the microkernel broadcasts straight
// from the caller's rows (MR row pointers), and the next sliver is
// prefetched into L2 while the current one runs. Transposed A is copied
// sliver by sliver into a compact MR-wide buffer (a plain copy: MR
// contiguous floats per k). B is always packed: its panels are reused by
// every sliver of A.
//
// Orientation: when m is the small side (e.g. a batch-32 fully connected
// layer), packing B would cost more than the multiply-adds it feeds, so the
// problem is solved transposed, C^T = op(B)^T * op(A)^T: the big matrix is
// then streamed through the broadcast side and the small one is packed; the
// microkernel writes its tile transposed (16x16 register transposes).
//
// Microkernel: MR x NR = 14 x 32 -> 28 zmm accumulators (FMA latency 4 x 2
// pipes needs >= 8 independent chains), 2 B vectors and one broadcast per
// row per k step (28 FMAs : 16 loads). Edge tiles use a compile-time smaller
// MR and masked C loads/stores; packed B is zero padded, so nothing outside
// the caller's matrices is read or written.
//
// Threads: C is cut into a tm x tn grid of rectangles (whole tiles), one per
// pool thread, by a cost model (the slowest thread's multiply-adds + its B
// packing + its reads of A). Every C element is summed in the same order
// (k blocks of the same kc, ascending k inside a block, FMA chain) whatever
// the grid or orientation, so results do not depend on the thread count.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <utility>

#include "core.h"
#include "sgemm_driver.h"

// GCC 12 warns about the self-initialised _mm512_undefined_ps() inside the
// permute intrinsics (a false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace qf {
namespace {

constexpr int MR = 14;
constexpr int NR = 32;
constexpr int64_t KC_MAX = 384;
constexpr int64_t L2_BLOCK_BYTES = 448 * 1024;  // packed B block budget (L2 is 1 MB)

inline __mmask16 tail_mask(int64_t r) {
  return r >= 16 ? __mmask16(0xFFFF) : (r <= 0 ? __mmask16(0) : __mmask16((1u << r) - 1u));
}

// In-register 16x16 transpose: r[x] lane y <- r[y] lane x.
inline void transpose16(__m512* r) {
  __m512 t[16];
  for (int j = 0; j < 16; j += 2) {
    t[j] = _mm512_unpacklo_ps(r[j], r[j + 1]);
    t[j + 1] = _mm512_unpackhi_ps(r[j], r[j + 1]);
  }
  for (int j = 0; j < 16; j += 4) {
    r[j] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[j]), _mm512_castps_pd(t[j + 2])));
    r[j + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[j]), _mm512_castps_pd(t[j + 2])));
    r[j + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[j + 1]), _mm512_castps_pd(t[j + 3])));
    r[j + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[j + 1]), _mm512_castps_pd(t[j + 3])));
  }
  // r[4g + s], 128-bit lane L = column 4L + s, rows 4g..4g+3: transpose the 4x4 grid of lanes.
  for (int j = 0; j < 4; j++) {
    t[j] = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88);
    t[4 + j] = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xDD);
    t[8 + j] = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88);
    t[12 + j] = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xDD);
  }
  for (int j = 0; j < 4; j++) {
    r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
    r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xDD);
    r[4 + j] = _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0x88);
    r[12 + j] = _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0xDD);
  }
}

// Where and how a tile is written. mode 0: C = alpha*acc; 1: C = alpha*acc + C;
// 2: C = alpha*acc + beta*C. tc: the tile is stored transposed (tile (r, q) at
// c[q*ldc + r] instead of c[r*ldc + q]). pfc: a tile to prefetch (the next
// sliver's), or null.
struct Out {
  float* c;
  const float* pfc;
  int64_t ldc;
  float alpha, beta;
  int mode;
  bool tc;
  bool stream;  // mode 0, C written once and too big to stay cached: non-temporal stores where aligned
  int nr;       // valid tile columns (1..NR)
};

inline __m512 update(__m512 acc, const float* c, __mmask16 mk, __m512 va, __m512 vb, int mode) {
  __m512 r = _mm512_mul_ps(va, acc);
  if (mode == 1) r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(mk, c));
  else if (mode == 2) r = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mk, c), r);
  return r;
}

template <int M>
inline void prefetch_tile(const float* c, int64_t ldc, bool tc, int nr) {
  if (!tc) {
    for (int i = 0; i < M; i++) {
      _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + nr - 1), _MM_HINT_T0);
    }
  } else {
    for (int q = 0; q < nr; q++) _mm_prefetch(reinterpret_cast<const char*>(c + q * ldc), _MM_HINT_T0);
  }
}

// Transposed store from a tile buffer t[M][32] (kept out of line so that the
// microkernel's accumulators never need an address).
template <int M, int NV>
__attribute__((noinline)) void store_tile_t(const float* t, const Out& o) {
  const __m512 va = _mm512_set1_ps(o.alpha), vb = _mm512_set1_ps(o.beta);
  const __mmask16 mk = tail_mask(M);
  for (int v = 0; v < NV; v++) {
    __m512 r[16];
    for (int i = 0; i < 16; i++) r[i] = i < M ? _mm512_load_ps(t + i * NR + 16 * v) : _mm512_setzero_ps();
    transpose16(r);  // r[x] = tile column 16v + x, lanes = tile rows
    const int qn = std::min(16, o.nr - 16 * v);
    for (int x = 0; x < qn; x++) {
      float* c = o.c + (16 * v + x) * o.ldc;
      _mm512_mask_storeu_ps(c, mk, update(r[x], c, mk, va, vb, o.mode));
    }
  }
}

// Prefetch work a microkernel spreads over its k loop (null pointers: none).
// a: the next sliver of row-major A (MR rows, stride lda), into L2.
// b: b_rows rows (stride b_ld) of b_width floats each: B's source for a later block.
struct Prefetch {
  const float* a = nullptr;
  const float* b = nullptr;
  int64_t b_ld = 0, b_rows = 0, b_width = 0;
};

// M x (16*NV) tile: acc = sum_p A(i, p) * B(p, :) over p < kc, then stored per `o`.
// AROW: A(i, p) = a[i*lda + p] (caller's rows); else A(i, p) = a[p*lda + i].
// B(p, 16v + x) = b[p*NR + 16v + x] (a packed panel).
template <int M, int NV, bool AROW>
void ukernel(int64_t kc, const float* __restrict a, int64_t lda, const float* __restrict b, const Prefetch& pf,
             const Out& o) {
  __m512 acc[M][NV];
  for (int i = 0; i < M; i++)
    for (int v = 0; v < NV; v++) acc[i][v] = _mm512_setzero_ps();
  prefetch_tile<M>(o.c, o.ldc, o.tc, o.nr);
  if (o.pfc) prefetch_tile<M>(o.pfc, o.ldc, o.tc, o.nr);
  const float* pfa = AROW ? pf.a : nullptr;
  const float* pfb = pf.b;
  const int64_t pf_per_chunk = pfb ? (pf.b_rows * 16 + kc - 1) / kc : 0;
  for (int64_t p0 = 0; p0 < kc; p0 += 16) {
    if (pfa)
      for (int i = 0; i < M; i++) _mm_prefetch(reinterpret_cast<const char*>(pfa + i * lda + p0), _MM_HINT_T1);
    if (pfb) {
      const int64_t r0 = (p0 / 16) * pf_per_chunk, r1 = std::min(pf.b_rows, r0 + pf_per_chunk);
      for (int64_t r = r0; r < r1; r++) {
        const float* row = pfb + r * pf.b_ld;
        // (T0 measured better than T1/T2 here)
        for (int64_t x = 0; x < pf.b_width; x += 16) _mm_prefetch(reinterpret_cast<const char*>(row + x), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(row + pf.b_width - 1), _MM_HINT_T0);
      }
    }
    const int64_t pe = std::min<int64_t>(kc, p0 + 16);
    for (int64_t p = p0; p < pe; p++) {
      __m512 bv[NV];
      for (int v = 0; v < NV; v++) bv[v] = _mm512_load_ps(b + 16 * v);
      b += NR;
      if (AROW) {
        const float* ap = a + p;
        for (int i = 0; i < M; i++) {
          const __m512 ai = _mm512_set1_ps(ap[i * lda]);
          for (int v = 0; v < NV; v++) acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
        }
      } else {
        const float* ap = a + p * lda;
        for (int i = 0; i < M; i++) {
          const __m512 ai = _mm512_set1_ps(ap[i]);
          for (int v = 0; v < NV; v++) acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
        }
      }
    }
  }
  if (!o.tc) {
    const __m512 va = _mm512_set1_ps(o.alpha), vb = _mm512_set1_ps(o.beta);
    const __mmask16 ml = tail_mask(o.nr - 16 * (NV - 1));
    for (int i = 0; i < M; i++) {
      float* c = o.c + i * o.ldc;
      for (int v = 0; v < NV; v++) {
        const __mmask16 mk = v == NV - 1 ? ml : __mmask16(0xFFFF);
        if (o.stream && mk == 0xFFFF && (reinterpret_cast<uintptr_t>(c + 16 * v) & 63) == 0)
          _mm512_stream_ps(c + 16 * v, _mm512_mul_ps(va, acc[i][v]));
        else
          _mm512_mask_storeu_ps(c + 16 * v, mk, update(acc[i][v], c + 16 * v, mk, va, vb, o.mode));
      }
    }
  } else {
    alignas(64) float t[M * NR];
    for (int i = 0; i < M; i++)
      for (int v = 0; v < NV; v++) _mm512_store_ps(t + i * NR + 16 * v, acc[i][v]);
    store_tile_t<M, NV>(t, o);
  }
}

using UkFn = void (*)(int64_t, const float*, int64_t, const float*, const Prefetch&, const Out&);

template <int M, int NV, bool AROW>
struct Uk {
  static constexpr UkFn fn = ukernel<M, NV, AROW>;
};
UkFn pick(bool arow, int m, int nv) { return uk_pick<Uk, MR>(arow, m, nv); }

// Packs op(B)[p0:p0+kc, j0:j0+nc] into panels of kc x NR, zero padded. bt: op(B)[p, j] = b[j*ldb + p],
// else b[p*ldb + j].
void pack_b(bool bt, const float* b, int64_t ldb, int64_t p0, int64_t kc, int64_t j0, int64_t nc, float* dst) {
  if (!bt) {
    // Row by row: each source row segment is contiguous; scatter it over the panels.
    const int64_t np = (nc + NR - 1) / NR;
    for (int64_t p = 0; p < kc; p++) {
      const float* s = b + (p0 + p) * ldb + j0;
      for (int64_t q = 0; q < np; q++) {
        const int64_t w = nc - q * NR;
        float* d = dst + q * kc * NR + p * NR;
        _mm512_store_ps(d, _mm512_maskz_loadu_ps(tail_mask(w), s + q * NR));
        _mm512_store_ps(d + 16, _mm512_maskz_loadu_ps(tail_mask(w - 16), s + q * NR + 16));
      }
    }
    return;
  }
  // Transposed source: 16 x 16 blocks (16 columns j of op(B) = rows of b, 16 values of p).
  for (int64_t jp = 0; jp < nc; jp += NR) {
    const int64_t w = std::min<int64_t>(NR, nc - jp);
    float* d = dst + jp * kc;
    for (int64_t jh = 0; jh < NR; jh += 16) {
      const int64_t jw = std::max<int64_t>(0, std::min<int64_t>(16, w - jh));
      for (int64_t pb = 0; pb < kc; pb += 16) {
        const int64_t pw = std::min<int64_t>(16, kc - pb);
        const __mmask16 pm = tail_mask(pw);
        __m512 r[16];
        for (int j = 0; j < 16; j++)
          r[j] = j < jw ? _mm512_maskz_loadu_ps(pm, b + (j0 + jp + jh + j) * ldb + p0 + pb) : _mm512_setzero_ps();
        transpose16(r);
        for (int q = 0; q < pw; q++) _mm512_store_ps(d + (pb + q) * NR + jh, r[q]);
      }
    }
  }
}

// Packs the A sliver A(i, p) = a[i*lda + p], i < mr, p < kc into dst[p*MR + i]
// (16 x 16 register transposes).
void pack_a_rows(const float* a, int64_t lda, int mr, int64_t kc, float* dst) {
  const __mmask16 im = tail_mask(MR);
  for (int64_t pb = 0; pb < kc; pb += 16) {
    const int64_t pw = std::min<int64_t>(16, kc - pb);
    const __mmask16 pm = tail_mask(pw);
    __m512 r[16];
    for (int i = 0; i < 16; i++) r[i] = i < mr ? _mm512_maskz_loadu_ps(pm, a + i * lda + pb) : _mm512_setzero_ps();
    transpose16(r);
    for (int q = 0; q < pw; q++) _mm512_mask_storeu_ps(dst + (pb + q) * MR, im, r[q]);
  }
}

// Copies the A sliver A(i, p) = a[p*lda + i], i < mr, p < kc into dst[p*MR + i].
void pack_a_t(const float* a, int64_t lda, int mr, int64_t kc, float* dst) {
  const __mmask16 mk = tail_mask(mr);
  for (int64_t p = 0; p < kc; p++) _mm512_mask_storeu_ps(dst + p * MR, mk, _mm512_maskz_loadu_ps(mk, a + p * lda));
}

// Few slivers (a thread's block has at most this many slivers of A): A's
// slivers are packed once per k block ([p][MR], reused by every panel) and B
// is packed one panel at a time, panel-outer and sliver-inner. Each panel's
// source streams from memory once, prefetched while the previous panel is
// in use, so the copy never waits on DRAM; the slivers' A data stays in L2.
constexpr int64_t FEW_SLIVERS = 6;
constexpr int64_t FEW_NC = 256;  // columns per block: the next block's source (kc x FEW_NC) is prefetched into L2

thread_local AlignedBuf<float> t_bpack;
thread_local AlignedBuf<float> t_apack;

// C bigger than this, written once (beta = 0, one k block): non-temporal
// stores, so the write does not first read every line of C from memory.
constexpr double STREAM_C_BYTES = 8e6;

Out make_out(const Problem& P, int64_t pc) {
  Out o;
  o.c = nullptr;
  o.pfc = nullptr;
  o.ldc = P.ldc;
  o.alpha = P.alpha;
  o.beta = P.beta;
  o.mode = pc > 0 ? 1 : (P.beta == 0.f ? 0 : (P.beta == 1.f ? 1 : 2));
  o.tc = P.tc;
  o.stream = o.mode == 0 && P.kc >= P.k && !P.tc && static_cast<double>(P.m) * P.n * 4 > STREAM_C_BYTES;
  o.nr = NR;
  return o;
}

float* tile_ptr(const Problem& P, int64_t i, int64_t j) { return P.tc ? P.c + j * P.ldc + i : P.c + i * P.ldc + j; }

// Packed-B path: C'[i0:i1, j0:j1] (i0, j0 multiples of MR / NR; i1, j1 tile multiples or the matrix edge).
void run_block_packed(const Problem& P, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  const int64_t kc_max = P.kc, nc_max = P.nc;
  t_bpack.resize(static_cast<size_t>(kc_max * nc_max));
  float* bpk = t_bpack.data();
  float* apk = nullptr;
  if (!P.arow) {
    t_apack.resize(static_cast<size_t>(kc_max * MR));
    apk = t_apack.data();
  }
  for (int64_t jc = j0; jc < j1; jc += nc_max) {
    const int64_t nc = std::min(nc_max, j1 - jc);
    for (int64_t pc = 0; pc < P.k; pc += kc_max) {
      const int64_t kc = std::min(kc_max, P.k - pc);
      pack_b(P.bt, P.b, P.ldb, pc, kc, jc, nc, bpk);
      Out o = make_out(P, pc);
      for (int64_t ir = i0; ir < i1; ir += MR) {
        const int mr = static_cast<int>(std::min<int64_t>(MR, i1 - ir));
        const bool has_next = ir + MR < i1;
        const float* a;
        int64_t lda;
        const float* pfa = nullptr;
        if (P.arow) {
          a = P.a + ir * P.lda + pc;
          lda = P.lda;
          if (has_next) pfa = a + MR * P.lda;
        } else {
          pack_a_t(P.a + pc * P.lda + ir, P.lda, mr, kc, apk);
          a = apk;
          lda = MR;
        }
        for (int64_t jr = 0; jr < nc; jr += NR) {
          o.nr = static_cast<int>(std::min<int64_t>(NR, nc - jr));
          o.c = tile_ptr(P, ir, jc + jr);
          o.pfc = has_next ? tile_ptr(P, ir + MR, jc + jr) : nullptr;
          Prefetch pf;
          if (jr == 0) pf.a = pfa;
          pick(P.arow, mr, o.nr > 16 ? 2 : 1)(kc, a, lda, bpk + jr * kc, pf, o);
        }
      }
    }
  }
}

// Few-slivers path: panel by panel.
void run_block_panels(const Problem& P, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  const int64_t kc_max = P.kc;
  const int64_t S = (i1 - i0 + MR - 1) / MR;
  t_bpack.resize(static_cast<size_t>(kc_max * FEW_NC));
  float* bpk = t_bpack.data();
  t_apack.resize(static_cast<size_t>(kc_max * MR * S + 16));
  float* apk = t_apack.data();
  // (A transposed source of B, rows of kc contiguous floats, is left to the
  // hardware prefetcher.)
  const int64_t nc_max = FEW_NC;
  for (int64_t jc = j0; jc < j1; jc += nc_max) {
    const int64_t nc = std::min(nc_max, j1 - jc);
    for (int64_t pc = 0; pc < P.k; pc += kc_max) {
      const int64_t kc = std::min(kc_max, P.k - pc);
      for (int64_t s = 0; s < S; s++) {
        const int64_t ir = i0 + s * MR;
        const int mr = static_cast<int>(std::min<int64_t>(MR, i1 - ir));
        if (P.arow) pack_a_rows(P.a + ir * P.lda + pc, P.lda, mr, kc, apk + s * kc * MR);
        else pack_a_t(P.a + pc * P.lda + ir, P.lda, mr, kc, apk + s * kc * MR);
      }
      // The next block's source (the next k block of these columns, else the first
      // k block of the next columns), prefetched row by row over this block's calls.
      int64_t npc = pc + kc, njc = jc, nnc = nc;
      if (npc >= P.k) {
        npc = 0;
        njc = jc + nc;
        nnc = std::min(nc_max, j1 - njc);
      }
      const bool has_next = njc < j1 && !P.bt;
      const int64_t nkc = std::min(kc_max, P.k - npc);
      const int64_t calls = (nc + NR - 1) / NR * S;
      int64_t call = 0;
      Out o = make_out(P, pc);
      pack_b(P.bt, P.b, P.ldb, pc, kc, jc, nc, bpk);
      for (int64_t jr = 0; jr < nc; jr += NR) {
        o.nr = static_cast<int>(std::min<int64_t>(NR, nc - jr));
        for (int64_t s = 0; s < S; s++, call++) {
          const int64_t ir = i0 + s * MR;
          const int mr = static_cast<int>(std::min<int64_t>(MR, i1 - ir));
          Prefetch pf;
          if (has_next) {
            const int64_t r0 = nkc * call / calls, r1 = nkc * (call + 1) / calls;
            pf.b = P.b + (npc + r0) * P.ldb + njc;
            pf.b_ld = P.ldb;
            pf.b_rows = r1 - r0;
            pf.b_width = nnc;
          }
          o.c = tile_ptr(P, ir, jc + jr);
          o.pfc = nullptr;
          pick(false, mr, o.nr > 16 ? 2 : 1)(kc, apk + s * kc * MR, MR, bpk + jr * kc, pf, o);
        }
      }
    }
  }
}

void run_block(const Problem& P, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  if (i0 >= i1 || j0 >= j1) return;
  if ((i1 - i0 + MR - 1) / MR <= FEW_SLIVERS) run_block_panels(P, i0, i1, j0, j1);
  else run_block_packed(P, i0, i1, j0, j1);
  _mm_sfence();  // order any non-temporal C stores before the caller (or the joining thread) reads C
}

// C = beta * C (k == 0 or alpha == 0): C not read when beta == 0.
void scale_c(int64_t m, int64_t n, float beta, float* c, int64_t ldc) {
  const __m512 vb = _mm512_set1_ps(beta);
  for (int64_t i = 0; i < m; i++) {
    float* r = c + i * ldc;
    for (int64_t j = 0; j < n; j += 16) {
      const __mmask16 mk = tail_mask(n - j);
      const __m512 v = beta == 0.f ? _mm512_setzero_ps() : _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(mk, r + j));
      _mm512_mask_storeu_ps(r + j, mk, v);
    }
  }
}

// Estimated cost (in multiply-add units, 32 per cycle) of the slowest thread
// for a tm x tn grid: its multiply-adds, packing B (a copy ~2 units per
// element, a transposing copy ~6, +6 when B is too big for the caches and the
// copy waits on memory, i.e. unless the few-slivers path prefetches it), reading A
// (~2 per element per n block; a transposed A copied in strips across rows
// >= 1 KB apart waits on memory: ~10), and ~2000 per microkernel call.
double grid_cost(const Problem& P, int tm, int tn) {
  const int64_t mt = (P.m + MR - 1) / MR, nt = (P.n + NR - 1) / NR;
  const int64_t slivers = (mt + tm - 1) / tm;
  const double rows = static_cast<double>(std::min(P.m, slivers * MR));
  const double cols = static_cast<double>(std::min(P.n, (nt + tn - 1) / tn * NR));
  const double nblocks = std::ceil(cols / static_cast<double>(P.nc));
  const double k = static_cast<double>(P.k);
  const bool few = slivers <= FEW_SLIVERS;  // B copies overlap with compute (prefetched)
  const bool b_big = static_cast<double>(P.n) * k * 4 > 8e6;
  const double wb = (P.bt ? 6.0 : 2.0) + (b_big && !few ? 6.0 : 0.0);
  const double wa = P.arow || P.lda < 256 ? 2.0 : 10.0;
  return rows * cols * k + wb * cols * k + wa * rows * k * nblocks + 2000.0 * slivers * std::ceil(cols / NR) * std::ceil(k / static_cast<double>(P.kc));
}

}  // namespace

void sgemm_avx512(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                  int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  sgemm_drive<MR, NR>(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, KC_MAX, L2_BLOCK_BYTES, scale_c,
                      grid_cost, run_block);
}

}  // namespace qf
