// u8 x s8 -> s32 GEMM microkernel: AVX-512 VNNI (zmm vpdpbusd).
// Register tile: up to 14 rows x 32 columns (2 panels) of int32 = 28 zmm
// accumulators; per 4-byte k group: 2 panel loads, one dword broadcast of A
// per row, 2 vpdpbusd per row. vpdpbusd does not saturate (u8*s8 sums of 4
// fit int32), so the result is exact (mod 2^32, like every variant).
// GCC 12 warns about the intrinsics headers' own _mm*_undefined_* values.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstring>
#include <type_traits>

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

// Accumulators are named variables (c<row>_<panel>), not an array: GCC
// keeps a 28-zmm array on the stack. Rows >= R / panels >= P compile away.
#define QF_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13)

// Per-tile epilogue constants of one panel.
struct PanelEpi {
  __m512i corr, wz;
  __m512 sc, bi, sl;
  __mmask16 cm;
};

template <bool kWzp, bool kScale>
__attribute__((always_inline)) inline __m512 affine(const Tile& t, const PanelEpi& e, __m512i v) {
  __m512 y = _mm512_cvtepi32_ps(v);
  if (kScale) y = _mm512_mul_ps(y, e.sc);
  y = _mm512_add_ps(y, e.bi);
  if (t.act == Act::Relu) {
    y = _mm512_max_ps(y, _mm512_setzero_ps());  // y > 0 ? y : +0 (NaN -> 0)
  } else if (t.act == Act::Prelu) {
    const __mmask16 neg = _mm512_cmp_ps_mask(y, _mm512_setzero_ps(), _CMP_LT_OQ);
    y = _mm512_mask_mul_ps(y, neg, y, e.sl);
  }
  return y;
}

// Epilogue of one 16-column piece of row r: v = raw dot products.
template <bool kWzp, bool kScale>
__attribute__((always_inline)) inline void epi_store(const Tile& t, const PanelEpi& e, int r, int p, __m512i v) {
  v = _mm512_add_epi32(v, e.corr);
  if (kWzp) v = _mm512_sub_epi32(v, _mm512_mullo_epi32(e.wz, _mm512_set1_epi32(t.rowsum[r])));
  switch (t.type) {
    case OutType::S32:
      _mm512_mask_storeu_epi32(static_cast<int32_t*>(t.out) + r * t.ldo + 16 * p, e.cm, v);
      break;
    case OutType::F32:
      _mm512_mask_storeu_ps(static_cast<float*>(t.out) + r * t.ldo + 16 * p, e.cm, affine<kWzp, kScale>(t, e, v));
      break;
    default: {
      const __m512 x = affine<kWzp, kScale>(t, e, v);
      __m512 y;
      if (t.out_recip != 0.f) {
        // q = x * (1/s); lanes within 2^-10 of a rounding tie divide (see Tile::out_recip).
        const __m512 q = _mm512_mul_ps(x, _mm512_set1_ps(t.out_recip));
        y = _mm512_roundscale_ps(q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        const __m512 d = _mm512_abs_ps(_mm512_sub_ps(q, y));
        const __mmask16 near_tie = _mm512_cmp_ps_mask(d, _mm512_set1_ps(0.5f - 0x1p-10f), _CMP_GE_OQ);
        if (near_tie) {
          const __m512 qd = _mm512_mask_div_ps(q, near_tie, x, _mm512_set1_ps(t.out_scale));
          y = _mm512_roundscale_ps(qd, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        }
      } else {
        y = _mm512_div_ps(x, _mm512_set1_ps(t.out_scale));
        y = _mm512_roundscale_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      }
      y = _mm512_add_ps(y, _mm512_set1_ps(t.out_zp));
      y = _mm512_max_ps(y, _mm512_set1_ps(t.lo));  // NaN -> lo
      y = _mm512_min_ps(y, _mm512_set1_ps(t.hi));
      _mm512_mask_cvtepi32_storeu_epi8(static_cast<int8_t*>(t.out) + r * t.ldo + 16 * p, e.cm,
                                       _mm512_cvttps_epi32(y));
    }
  }
}

template <int R, int P>
__attribute__((always_inline)) inline void tile_kernel(const Tile& t) {
#define QF_DECL(r) __m512i c##r##_0, c##r##_1;
  QF_ROWS(QF_DECL)
#undef QF_DECL
  if (t.load_part) {
#define QF_LOAD(r)                                                          \
  if constexpr (R > r) {                                                    \
    c##r##_0 = _mm512_loadu_si512(t.part + r * t.ldp);                      \
    if constexpr (P > 1) c##r##_1 = _mm512_loadu_si512(t.part + r * t.ldp + 16); \
  }
    QF_ROWS(QF_LOAD)
#undef QF_LOAD
  } else {
#define QF_ZERO(r)                                            \
  if constexpr (R > r) {                                      \
    c##r##_0 = _mm512_setzero_si512();                        \
    if constexpr (P > 1) c##r##_1 = _mm512_setzero_si512();   \
  }
    QF_ROWS(QF_ZERO)
#undef QF_ZERO
  }
  const int64_t lda = t.lda;
  const int64_t bs = t.bstride;
  const int64_t kq_full = t.kq - (t.tail ? 1 : 0);
  const int8_t* b = t.b;
  // Rows 3i..3i+2 are addressed from base i as [base], [base + lda], [base + 2*lda].
  const uint8_t* pb0 = t.a;
  const uint8_t* pb1 = pb0 + 3 * lda;
  const uint8_t* pb2 = pb0 + 6 * lda;
  const uint8_t* pb3 = pb0 + 9 * lda;
  const uint8_t* pb4 = pb0 + 12 * lda;
#define QF_PTR(r) ((r) / 3 == 0 ? pb0 : (r) / 3 == 1 ? pb1 : (r) / 3 == 2 ? pb2 : (r) / 3 == 3 ? pb3 : pb4) + ((r) % 3) * lda
#define QF_STEP(r)                                                   \
  if constexpr (R > r) {                                             \
    const __m512i av = BCAST(QF_PTR(r));                             \
    c##r##_0 = _mm512_dpbusd_epi32(c##r##_0, av, b0);                \
    if constexpr (P > 1) c##r##_1 = _mm512_dpbusd_epi32(c##r##_1, av, b1); \
  }
#define QF_KLOOP(PREFETCH)                          \
  for (int64_t q = 0; q < kq_full; q++) {           \
    const __m512i b0 = _mm512_load_si512(b);        \
    __m512i b1;                                     \
    if constexpr (P > 1) b1 = _mm512_load_si512(b + bs); \
    QF_ROWS(QF_STEP)                                \
    PREFETCH                                        \
    pb0 += 4;                                       \
    pb1 += 4;                                       \
    pb2 += 4;                                       \
    pb3 += 4;                                       \
    pb4 += 4;                                       \
    b += 64;                                        \
  }
#define BCAST(p) bcast_a(p)
  if (t.pf) {
    // One line of the next row tile's A per k group: row pr, byte offset pc.
    const uint8_t* pf = t.pf;
    const int pf_rows = t.pf_rows;
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
  if (t.tail) {
    const __mmask16 km = static_cast<__mmask16>((1u << t.tail) - 1);
    const __m512i b0 = _mm512_load_si512(b);
    __m512i b1;
    if constexpr (P > 1) b1 = _mm512_load_si512(b + bs);
#define BCAST(p) _mm512_broadcastd_epi32(_mm_maskz_loadu_epi8(km, p))
    QF_ROWS(QF_STEP)
#undef BCAST
  }
#undef QF_STEP
#undef QF_PTR

  if (!t.final) {
#define QF_STORE(r)                                                          \
  if constexpr (R > r) {                                                     \
    _mm512_storeu_si512(t.part + r * t.ldp, c##r##_0);                       \
    if constexpr (P > 1) _mm512_storeu_si512(t.part + r * t.ldp + 16, c##r##_1); \
  }
    QF_ROWS(QF_STORE)
#undef QF_STORE
    return;
  }

  PanelEpi e[P];
  for (int p = 0; p < P; p++) {
    const int c = t.cols - 16 * p;
    e[p].cm = c >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (c > 0 ? c : 0)) - 1);
    e[p].corr = _mm512_loadu_si512(t.corr + 16 * p);
    e[p].wz = t.wzp ? _mm512_loadu_si512(t.wzp + 16 * p) : _mm512_setzero_si512();
    if (t.type != OutType::S32) {
      e[p].sc = t.scale ? _mm512_loadu_ps(t.scale + 16 * p) : _mm512_set1_ps(1.f);
      e[p].bi = _mm512_loadu_ps(t.bias + 16 * p);
      e[p].sl = t.act == Act::Prelu ? _mm512_loadu_ps(t.slope + 16 * p) : _mm512_setzero_ps();
    }
  }
#define QF_EPI(r)                                        \
  if constexpr (R > r) {                                 \
    epi_store<W, S>(t, e[0], r, 0, c##r##_0);            \
    if constexpr (P > 1) epi_store<W, S>(t, e[1], r, 1, c##r##_1); \
  }
  if (t.wzp) {
    if (t.scale) {
      constexpr bool W = true, S = true;
      QF_ROWS(QF_EPI)
    } else {
      constexpr bool W = true, S = false;
      QF_ROWS(QF_EPI)
    }
  } else {
    if (t.scale) {
      constexpr bool W = false, S = true;
      QF_ROWS(QF_EPI)
    } else {
      constexpr bool W = false, S = false;
      QF_ROWS(QF_EPI)
    }
  }
#undef QF_EPI
}

template <int R>
void tile_rows(const Tile& t) {
  if (t.panels == 2)
    tile_kernel<R, 2>(t);
  else
    tile_kernel<R, 1>(t);
}

void tile(const Tile& t) {
  switch (t.rows) {
    case 1: tile_rows<1>(t); break;
    case 2: tile_rows<2>(t); break;
    case 3: tile_rows<3>(t); break;
    case 4: tile_rows<4>(t); break;
    case 5: tile_rows<5>(t); break;
    case 6: tile_rows<6>(t); break;
    case 7: tile_rows<7>(t); break;
    case 8: tile_rows<8>(t); break;
    case 9: tile_rows<9>(t); break;
    case 10: tile_rows<10>(t); break;
    case 11: tile_rows<11>(t); break;
    case 12: tile_rows<12>(t); break;
    case 13: tile_rows<13>(t); break;
    default: tile_rows<14>(t); break;
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
