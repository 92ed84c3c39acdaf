// u8 x s8 -> s32 GEMM microkernel: AVX-VNNI (VEX ymm vpdpbusd), for CPUs
// with AVX-VNNI but no AVX-512. Register tile: up to 6 rows x 16 columns
// (one panel = 2 ymm) = 12 ymm accumulators. Exact (non-saturating).
// GCC 12 warns about the intrinsics headers' own _mm*_undefined_* values.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstring>

#include "gemm_u8s8_ymm.h"

namespace qf {
namespace {

constexpr int MR = 6;

inline __m256i bcast_a(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

template <int R>
void tile_kernel(const Tile& t) {
  __m256i acc[R][2];
  if (t.load_part) {
    for (int r = 0; r < R; r++)
      for (int h = 0; h < 2; h++)
        acc[r][h] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.part + r * t.ldp + 8 * h));
  } else {
    for (int r = 0; r < R; r++)
      for (int h = 0; h < 2; h++) acc[r][h] = _mm256_setzero_si256();
  }
  const int64_t lda = t.lda;
  const int64_t kq_full = t.kq - (t.tail ? 1 : 0);
  const uint8_t* a = t.a;
  const int8_t* b = t.b;
  for (int64_t q = 0; q < kq_full; q++) {
    const __m256i b0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(b));
    const __m256i b1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(b + 32));
    for (int r = 0; r < R; r++) {
      const __m256i av = bcast_a(a + r * lda);
      acc[r][0] = _mm256_dpbusd_avx_epi32(acc[r][0], av, b0);
      acc[r][1] = _mm256_dpbusd_avx_epi32(acc[r][1], av, b1);
    }
    a += 4;
    b += 64;
  }
  if (t.tail) {
    const __m256i b0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(b));
    const __m256i b1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(b + 32));
    for (int r = 0; r < R; r++) {
      uint8_t tmp[4] = {0, 0, 0, 0};
      std::memcpy(tmp, a + r * lda, static_cast<size_t>(t.tail));
      const __m256i av = bcast_a(tmp);
      acc[r][0] = _mm256_dpbusd_avx_epi32(acc[r][0], av, b0);
      acc[r][1] = _mm256_dpbusd_avx_epi32(acc[r][1], av, b1);
    }
  }
  if (!t.final) {
    for (int r = 0; r < R; r++)
      for (int h = 0; h < 2; h++)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(t.part + r * t.ldp + 8 * h), acc[r][h]);
    return;
  }
  epilogue<R>(t, acc);
}

void piece(const Tile& t) {
  switch (t.rows) {
    case 1: tile_kernel<1>(t); break;
    case 2: tile_kernel<2>(t); break;
    case 3: tile_kernel<3>(t); break;
    case 4: tile_kernel<4>(t); break;
    case 5: tile_kernel<5>(t); break;
    default: tile_kernel<6>(t); break;
  }
}

void tile(const Tile& t) { gemm8::for_each_panel(t, piece); }

const gemm8::Micro kMicro = {MR, 1, tile, rowsum, 2048, 384 * 1024, 256 * 1024};

}  // namespace

void gemm_u8s8s32_avxvnni(const GemmU8S8Args& args) { gemm8::drive(args, kMicro); }

}  // namespace qf
