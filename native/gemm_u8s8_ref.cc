// u8 x s8 -> s32 GEMM, scalar reference: the definition every variant must
// match bit for bit. acc = sum_k (a - a_zp) * (w - w_zp[j]) in wrap-around
// 32-bit arithmetic, then epilogue_ref. Reads the packed weights through the
// documented layout (gemm_u8s8.h). Threaded over rows only for test speed.
#include "gemm_u8s8.h"

namespace qf {

void gemm_u8s8s32_ref(const GemmU8S8Args& g) {
  const PackedS8& W = *g.w;
  const int64_t m = g.m, n = W.n, k = W.k;
  if (m <= 0 || n <= 0) return;
  const int64_t pstride = W.k_pad * 16;
  const int8_t* panels = W.panels.data();
  const int64_t grain = 1 + (int64_t(1) << 18) / (n * k + 1);
  parallel_for(m, grain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      const uint8_t* a = g.a + i * g.lda;
      for (int64_t j = 0; j < n; j++) {
        const int8_t* wp = panels + (j / 16) * pstride + (j % 16) * 4;
        const int64_t wz = g.w_zp ? g.w_zp[j] : 0;
        uint32_t acc = 0;
        for (int64_t kk = 0; kk < k; kk++) {
          const int64_t av = static_cast<int64_t>(a[kk]) - g.a_zp;
          const int64_t wv = static_cast<int64_t>(wp[(kk / 4) * 64 + (kk % 4)]) - wz;
          acc += static_cast<uint32_t>(av * wv);
        }
        epilogue_ref(g.ep, j, static_cast<int32_t>(acc), g.out, i * g.ldo + j);
      }
    }
  });
}

}  // namespace qf
