// u8 x s8 -> s32 GEMM microkernel: AVX-512 VNNI (zmm vpdpbusd).
// Register tile: up to 14 rows x 32 columns (2 panels) of int32 = 28 zmm
// accumulators; per 4-byte k group: 2 panel loads, one dword broadcast of A
// per row, 2 vpdpbusd per row. vpdpbusd does not saturate (u8*s8 sums of 4
// fit int32), so the result is exact (mod 2^32, like every variant).
// A strip (gemm8::Tile) of up to 14 rows and any number of columns is walked
// one register tile at a time; the epilogue runs out of line on the stored
// accumulators (a function per output type / activation), except for plain
// s32 outputs, which are stored straight from the registers.
// GCC 12 warns about the intrinsics headers' own _mm*_undefined_* values.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstring>

#include "gemm_u8s8.h"

namespace qf {
namespace {

using gemm8::Tile;

constexpr int MR = 14;
constexpr int NP = 2;

inline __m512i bcast_a(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

inline __mmask16 col_mask(int c) {
  return c >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (c > 0 ? c : 0)) - 1);
}

// Requantisation scalars (u8/s8): see epi_vec.
struct QuantEpi {
  float recip, os;  // 1 / out_scale, out_scale
  float lo, hi;     // clamp bounds minus out_zp (integers as floats); relu folded into lo
  int32_t zp;
  bool use_recip;   // else always divide
};

// ------------------------------------------------------------------ k loop
// Accumulators are named variables (c<row>_<panel>), not an array: GCC
// keeps a 28-zmm array on the stack. Rows >= R / panels >= P compile away.
#define QF_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13)

struct KArgs {
  const uint8_t* a;
  int64_t lda;
  const int8_t* b;
  int64_t bs;
  int64_t kq_full;
  int tail;
  const uint8_t* pf;  // or null
  int pf_rows;
  const int32_t* init;  // partial sums (ld init_ld) or null
  int64_t init_ld;
  const int32_t* corr;  // when init is null: start from corr[j] - wzp[j] * rowsum[i]
  const int32_t* wzp;   // or null (then rowsum is not read)
  const int32_t* rowsum;
  int32_t* dst;         // Store: accumulators out (16 * P columns), row stride ld
  int64_t ld;
  // F32 / Q epilogue (inline, after the k loop)
  void* out;            // the register tile's first output element
  int64_t ldo;
  __mmask16 m0, m1;     // valid columns of each panel
  const float* scale;   // or null
  const float* bias;    // or null (= +0)
  const float* slope;   // Prelu only
  Act act;
  QuantEpi q;
};

enum class Epi { Store, S32, F32, Q };  // Store: unmasked int32 to dst

struct QConst {
  __m512 recip, os, lo, hi;
  __m512i zp;
  bool use_recip;
};

template <Epi E>
__attribute__((always_inline)) inline void epi_vec(__m512i v, char* dst, __mmask16 m, __m512 sc, bool has_scale,
                                                   __m512 bi, bool add_bias, Act act, __m512 sl, const QConst& qc) {
  // Whole panels use plain stores (masked stores are slower here).
  if (E == Epi::S32) {
    if (m == 0xFFFF)
      _mm512_storeu_si512(dst, v);
    else
      _mm512_mask_storeu_epi32(dst, m, v);
    return;
  }
  const __m512 zero = _mm512_setzero_ps();
  __m512 y = _mm512_cvtepi32_ps(v);
  if (has_scale) y = _mm512_mul_ps(y, sc);
  if (add_bias) y = _mm512_add_ps(y, bi);  // (+0 when there is no bias: -0 -> +0)
  if (act == Act::Prelu) {
    const __mmask16 neg = _mm512_cmp_ps_mask(y, zero, _CMP_LT_OQ);
    y = _mm512_mask_mul_ps(y, neg, y, sl);
  }
  if (E == Epi::F32) {
    if (act == Act::Relu) y = _mm512_max_ps(y, zero);  // y > 0 ? y : +0 (NaN -> 0)
    if (m == 0xFFFF)
      _mm512_storeu_ps(dst, y);
    else
      _mm512_mask_storeu_ps(dst, m, y);
    return;
  }
  // u8/s8: q = y / out_scale; out = clamp(rne(q) + zp, lo, hi), computed as
  // rne(clamp(q, lo - zp, hi - zp)) + zp (equal for integer bounds; NaN ->
  // lo - zp by vmaxps's operand order). Relu is folded into the lower bound
  // (qc.lo): rne(max(y, 0) / s) = rne(max(q, 0)), NaN -> 0 either way.
  // q = y * (1/s), except lanes within 2^-10 of a rounding tie divide (see
  // Tile::out_recip); out_recip = 0: always divide.
  __m512 q;
  if (qc.use_recip) {
    q = _mm512_mul_ps(y, qc.recip);
    const __m512 d = _mm512_reduce_ps(q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);  // q - rne(q)
    const __mmask16 near_tie = _mm512_cmp_ps_mask(_mm512_abs_ps(d), _mm512_set1_ps(0.5f - 0x1p-10f), _CMP_GE_OQ);
    if (near_tie) q = _mm512_mask_div_ps(q, near_tie, y, qc.os);
  } else {
    q = _mm512_div_ps(y, qc.os);
  }
  q = _mm512_max_ps(q, qc.lo);
  q = _mm512_min_ps(q, qc.hi);
  const __m512i qi =
      _mm512_add_epi32(_mm512_cvt_roundps_epi32(q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), qc.zp);
  const __m128i b = _mm512_cvtepi32_epi8(qi);  // values are in range: truncation is exact
  if (m == 0xFFFF)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), b);
  else
    _mm_mask_storeu_epi8(dst, m, b);
}

template <int R, int P>
__attribute__((noinline)) void reg_tile(const KArgs& k) {
#define QF_DECL(r) __m512i c##r##_0, c##r##_1;
  QF_ROWS(QF_DECL)
#undef QF_DECL
  if (k.init) {
    const int32_t* init = k.init;
    const int64_t ild = k.init_ld;
#define QF_LOAD(r)                                                             \
  if constexpr (R > r) {                                                       \
    c##r##_0 = _mm512_loadu_si512(init + r * ild);                             \
    if constexpr (P > 1) c##r##_1 = _mm512_loadu_si512(init + r * ild + 16);   \
  }
    QF_ROWS(QF_LOAD)
#undef QF_LOAD
  } else {
    // Start from the zero-point corrections (added once, here):
    // corr[j] - w_zp[j] * rowsum[i].
    const __m512i k0 = _mm512_loadu_si512(k.corr);
    __m512i k1;
    if constexpr (P > 1) k1 = _mm512_loadu_si512(k.corr + 16);
    if (k.wzp) {
      const __m512i w0 = _mm512_loadu_si512(k.wzp);
      __m512i w1;
      if constexpr (P > 1) w1 = _mm512_loadu_si512(k.wzp + 16);
      const int32_t* rsp = k.rowsum;
#define QF_INIT(r)                                                                              \
  if constexpr (R > r) {                                                                        \
    const __m512i rs = _mm512_set1_epi32(rsp[r]);                                               \
    c##r##_0 = _mm512_sub_epi32(k0, _mm512_mullo_epi32(w0, rs));                                \
    if constexpr (P > 1) c##r##_1 = _mm512_sub_epi32(k1, _mm512_mullo_epi32(w1, rs));           \
  }
      QF_ROWS(QF_INIT)
#undef QF_INIT
    } else {
#define QF_INIT(r)                      \
  if constexpr (R > r) {                \
    c##r##_0 = k0;                      \
    if constexpr (P > 1) c##r##_1 = k1; \
  }
      QF_ROWS(QF_INIT)
#undef QF_INIT
    }
  }
  const int64_t lda = k.lda;
  const int64_t bs = k.bs;
  const int64_t kq_full = k.kq_full;
  const int8_t* b = k.b;
  // Rows 3i..3i+2 are addressed from base i as [base], [base + lda], [base + 2*lda].
  const uint8_t* pb0 = k.a;
  const uint8_t* pb1 = pb0 + 3 * lda;
  const uint8_t* pb2 = pb0 + 6 * lda;
  const uint8_t* pb3 = pb0 + 9 * lda;
  const uint8_t* pb4 = pb0 + 12 * lda;
#define QF_PTR(r) ((r) / 3 == 0 ? pb0 : (r) / 3 == 1 ? pb1 : (r) / 3 == 2 ? pb2 : (r) / 3 == 3 ? pb3 : pb4) + ((r) % 3) * lda
#define QF_STEP(r)                                                         \
  if constexpr (R > r) {                                                   \
    const __m512i av = BCAST(QF_PTR(r));                                   \
    c##r##_0 = _mm512_dpbusd_epi32(c##r##_0, av, b0);                      \
    if constexpr (P > 1) c##r##_1 = _mm512_dpbusd_epi32(c##r##_1, av, b1); \
  }
#define QF_KLOOP(PREFETCH)                                 \
  for (int64_t q = 0; q < kq_full; q++) {                  \
    const __m512i b0 = _mm512_load_si512(b);               \
    __m512i b1;                                            \
    if constexpr (P > 1) b1 = _mm512_load_si512(b + bs);   \
    QF_ROWS(QF_STEP)                                       \
    PREFETCH                                               \
    pb0 += 4;                                              \
    pb1 += 4;                                              \
    pb2 += 4;                                              \
    pb3 += 4;                                              \
    pb4 += 4;                                              \
    b += 64;                                               \
  }
#define BCAST(p) bcast_a(p)
  if (k.pf) {
    // One line of the next row tile's A per k group: row pr, byte offset pc.
    const uint8_t* pf = k.pf;
    const int pf_rows = k.pf_rows;
    int pr = 0;
    int64_t pc = 0;
    QF_KLOOP({
      _mm_prefetch(reinterpret_cast<const char*>(pf + pr * lda + pc), _MM_HINT_T0);
      pr++;
      if (pr == pf_rows) {
        pr = 0;
        pc += 64;
      }
    })
  } else {
    QF_KLOOP()
  }
#undef BCAST
#undef QF_KLOOP
  if (k.tail) {
    const __mmask16 km = static_cast<__mmask16>((1u << k.tail) - 1);
    const __m512i b0 = _mm512_load_si512(b);
    __m512i b1;
    if constexpr (P > 1) b1 = _mm512_load_si512(b + bs);
#define BCAST(p) _mm512_broadcastd_epi32(_mm_maskz_loadu_epi8(km, p))
    QF_ROWS(QF_STEP)
#undef BCAST
  }
#undef QF_STEP
#undef QF_PTR
  // Plain (unmasked) stores: anything more here (masked stores, an inline
  // epilogue) makes GCC spill the accumulators inside the k loop.
  int32_t* dst = k.dst;
  const int64_t ld = k.ld;
#define QF_STORE(r)                                                          \
  if constexpr (R > r) {                                                     \
    _mm512_storeu_si512(dst + r * ld, c##r##_0);                             \
    if constexpr (P > 1) _mm512_storeu_si512(dst + r * ld + 16, c##r##_1);   \
  }
  QF_ROWS(QF_STORE)
#undef QF_STORE
}

// The epilogue of a register tile from its stored accumulators acc (rows x 32,
// row stride 32): out of line, one function per output kind.
template <Epi E>
__attribute__((noinline)) void epilogue(const int32_t* acc, int rows, int panels, const KArgs& k) {
  // Read every input before the first store (the stores may alias anything).
  constexpr int esz = E == Epi::Q ? 1 : 4;
  char* const out = static_cast<char*>(k.out);
  const int64_t ldb = k.ldo * esz;
  const __mmask16 m[2] = {k.m0, k.m1};
  const bool has_scale = k.scale != nullptr;
  // Without a bias, y + 0 only turns -0 (from a negative scale) into +0: needed
  // for f32 outputs with a scale, invisible after rounding to an integer.
  const bool add_bias = k.bias != nullptr || (E == Epi::F32 && has_scale);
  const Act act = k.act;
  __m512 sc[2], bi[2], sl[2];
  for (int p = 0; p < 2; p++) sc[p] = bi[p] = sl[p] = _mm512_setzero_ps();
  QConst qc;
  if constexpr (E != Epi::S32) {
    for (int p = 0; p < panels; p++) {
      if (has_scale) sc[p] = _mm512_loadu_ps(k.scale + 16 * p);
      if (k.bias) bi[p] = _mm512_loadu_ps(k.bias + 16 * p);
      if (act == Act::Prelu) sl[p] = _mm512_loadu_ps(k.slope + 16 * p);
    }
  }
  if constexpr (E == Epi::Q) {
    qc.use_recip = k.q.use_recip;
    qc.recip = _mm512_set1_ps(k.q.recip);
    qc.os = _mm512_set1_ps(k.q.os);
    qc.lo = _mm512_set1_ps(k.q.lo);
    qc.hi = _mm512_set1_ps(k.q.hi);
    qc.zp = _mm512_set1_epi32(k.q.zp);
  }
  if (panels == 2) {
    for (int r = 0; r < rows; r++) {
      epi_vec<E>(_mm512_load_si512(acc + r * 32), out + r * ldb, m[0], sc[0], has_scale, bi[0], add_bias, act, sl[0], qc);
      epi_vec<E>(_mm512_load_si512(acc + r * 32 + 16), out + r * ldb + 16 * esz, m[1], sc[1], has_scale, bi[1], add_bias, act,
                 sl[1], qc);
    }
  } else {
    for (int r = 0; r < rows; r++)
      epi_vec<E>(_mm512_load_si512(acc + r * 32), out + r * ldb, m[0], sc[0], has_scale, bi[0], add_bias, act, sl[0], qc);
  }
}

// ------------------------------------------------------------------ strip
template <int R>
void run_reg_tile(const KArgs& k, int c) {
  if (c > 16)
    reg_tile<R, 2>(k);
  else
    reg_tile<R, 1>(k);
}

template <int R>
void strip(const Tile& t) {
  const int cols = t.cols;
  const int64_t bs = t.bstride;
  const bool final = t.final, load_part = t.load_part;
  const int64_t ldo = t.ldo;
  const Epi e = !final ? Epi::Store : t.type == OutType::S32 ? Epi::S32 : t.type == OutType::F32 ? Epi::F32 : Epi::Q;
  const int esz = (t.type == OutType::S32 || t.type == OutType::F32) ? 4 : 1;
  alignas(64) int32_t accbuf[MR * 32];
  KArgs k;
  k.a = t.a;
  k.lda = t.lda;
  k.bs = bs;
  k.kq_full = t.kq - (t.tail ? 1 : 0);
  k.tail = t.tail;
  k.init_ld = t.ldp;
  k.rowsum = t.rowsum;
  k.ld = t.ldp;
  k.ldo = ldo;
  k.act = t.act;
  if (e == Epi::Q) {
    k.q.use_recip = t.out_recip != 0.f;
    k.q.recip = t.out_recip;
    k.q.os = t.out_scale;
    float lo = t.lo - t.out_zp, hi = t.hi - t.out_zp;  // exact: small integers
    // Relu: max(q, 0). If then lo > hi (hi < zp), min(max(q, lo), hi) = hi, as
    // clamp(rne(max(q, 0)) + zp) = hi requires.
    if (t.act == Act::Relu && lo < 0.f) lo = 0.f;
    k.q.lo = lo;
    k.q.hi = hi;
    k.q.zp = static_cast<int32_t>(t.out_zp);
  }
  for (int c0 = 0; c0 < cols; c0 += 16 * NP) {
    const int c = cols - c0 < 16 * NP ? cols - c0 : 16 * NP;
    k.b = t.b + (c0 / 16) * bs;
    k.pf = c0 == 0 ? t.pf : nullptr;
    k.pf_rows = t.pf_rows;
    k.init = load_part ? t.part + c0 : nullptr;
    k.corr = t.corr + c0;
    k.wzp = t.wzp ? t.wzp + c0 : nullptr;
    if (e == Epi::Store) {
      k.dst = t.part + c0;
      run_reg_tile<R>(k, c);
      continue;
    }
    k.out = static_cast<char*>(t.out) + c0 * esz;
    if (e == Epi::S32 && (c == 32 || c == 16)) {  // whole panels: straight from the registers
      k.dst = static_cast<int32_t*>(t.out) + c0;
      k.ld = ldo;
      run_reg_tile<R>(k, c);
      continue;
    }
    k.dst = accbuf;
    k.ld = 32;
    run_reg_tile<R>(k, c);
    k.m0 = col_mask(c);
    k.m1 = col_mask(c - 16);
    k.scale = t.scale ? t.scale + c0 : nullptr;
    k.bias = t.bias ? t.bias + c0 : nullptr;
    k.slope = t.slope ? t.slope + c0 : nullptr;
    const int panels = c > 16 ? 2 : 1;
    if (e == Epi::S32)
      epilogue<Epi::S32>(accbuf, R, panels, k);
    else if (e == Epi::F32)
      epilogue<Epi::F32>(accbuf, R, panels, k);
    else
      epilogue<Epi::Q>(accbuf, R, panels, k);
  }
}

void tile(const Tile& t) {
  switch (t.rows) {
    case 1: strip<1>(t); break;
    case 2: strip<2>(t); break;
    case 3: strip<3>(t); break;
    case 4: strip<4>(t); break;
    case 5: strip<5>(t); break;
    case 6: strip<6>(t); break;
    case 7: strip<7>(t); break;
    case 8: strip<8>(t); break;
    case 9: strip<9>(t); break;
    case 10: strip<10>(t); break;
    case 11: strip<11>(t); break;
    case 12: strip<12>(t); break;
    case 13: strip<13>(t); break;
    default: strip<14>(t); break;
  }
}

void rowsum(const uint8_t* a, int64_t lda, int64_t rows, int64_t k, int32_t* out) {
  const __m512i zero = _mm512_setzero_si512();
  for (int64_t r = 0; r < rows; r++) {
    const uint8_t* p = a + r * lda;
    __m512i s = _mm512_setzero_si512();
    int64_t kk = 0;
    for (; kk + 64 <= k; kk += 64) s = _mm512_add_epi64(s, _mm512_sad_epu8(_mm512_loadu_si512(p + kk), zero));
    if (kk < k) {
      const __mmask64 m = (~0ULL) >> (64 - (k - kk));
      s = _mm512_add_epi64(s, _mm512_sad_epu8(_mm512_maskz_loadu_epi8(m, p + kk), zero));
    }
    out[r] = static_cast<int32_t>(static_cast<uint32_t>(_mm512_reduce_add_epi64(s)));
  }
}

const gemm8::Micro kMicro = {MR, NP, tile, rowsum, 2048, 384 * 1024, 256 * 1024};

}  // namespace

void gemm_u8s8s32_avx512vnni(const GemmU8S8Args& args) { gemm8::drive(args, kMicro); }

}  // namespace qf
