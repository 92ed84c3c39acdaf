// u8 x s8 -> s32 GEMM microkernel: AVX2 only (no VNNI). vpmaddubsw would
// saturate its int16 pair sums (255*127*2 > 32767), so this widens both
// operands to int16 (vpmovzxbw / vpmovsxbw) and multiplies with vpmaddwd,
// which is exact. Register tile: up to 2 rows x 16 columns; each k group of
// a panel is widened to 4 ymm (4 columns x 4 k each); vpmaddwd leaves two
// partial sums per column, added pairwise (vphaddd) at the end of the tile.
// GCC 12 warns about the intrinsics headers' own _mm*_undefined_* values.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstring>

#include "gemm_u8s8_ymm.h"

namespace qf {
namespace {

constexpr int MR = 2;

inline __m256i bcast_a16(const uint8_t* p) {  // (a0 a1 a2 a3) x 4 as int16
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_cvtepu8_epi16(_mm_set1_epi32(v));
}

template <int R>
void tile_kernel(const Tile& t) {
  __m256i acc[R][4];
  for (int r = 0; r < R; r++)
    for (int g = 0; g < 4; g++) acc[r][g] = _mm256_setzero_si256();
  const int64_t lda = t.lda;
  const int64_t kq_full = t.kq - (t.tail ? 1 : 0);
  const uint8_t* a = t.a;
  const int8_t* b = t.b;
  auto step = [&](const __m256i (&av)[R]) {
    for (int g = 0; g < 4; g++) {
      const __m256i bw = _mm256_cvtepi8_epi16(_mm_load_si128(reinterpret_cast<const __m128i*>(b + 16 * g)));
      for (int r = 0; r < R; r++) acc[r][g] = _mm256_add_epi32(acc[r][g], _mm256_madd_epi16(av[r], bw));
    }
  };
  for (int64_t q = 0; q < kq_full; q++) {
    __m256i av[R];
    for (int r = 0; r < R; r++) av[r] = bcast_a16(a + r * lda);
    step(av);
    a += 4;
    b += 64;
  }
  if (t.tail) {
    __m256i av[R];
    for (int r = 0; r < R; r++) {
      uint8_t tmp[4] = {0, 0, 0, 0};
      std::memcpy(tmp, a + r * lda, static_cast<size_t>(t.tail));
      av[r] = bcast_a16(tmp);
    }
    step(av);
  }
  // acc[r][g] lanes: (col 4g, pair 0/1), (col 4g+1, ..) | (col 4g+2, ..), (col 4g+3, ..)
  __m256i res[R][2];
  for (int r = 0; r < R; r++)
    for (int h = 0; h < 2; h++) {
      res[r][h] = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[r][2 * h], acc[r][2 * h + 1]), 0xD8);
      if (t.load_part)
        res[r][h] = _mm256_add_epi32(
            res[r][h], _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.part + r * t.ldp + 8 * h)));
    }
  if (!t.final) {
    for (int r = 0; r < R; r++)
      for (int h = 0; h < 2; h++)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(t.part + r * t.ldp + 8 * h), res[r][h]);
    return;
  }
  epilogue<R>(t, res);
}

void piece(const Tile& t) {
  if (t.rows == 1)
    tile_kernel<1>(t);
  else
    tile_kernel<2>(t);
}

void tile(const Tile& t) { gemm8::for_each_panel(t, piece); }

const gemm8::Micro kMicro = {MR, 1, tile, rowsum, 2048, 384 * 1024, 256 * 1024};

}  // namespace

void gemm_u8s8s32_avx2(const GemmU8S8Args& args) { gemm8::drive(args, kMicro); }

}  // namespace qf
