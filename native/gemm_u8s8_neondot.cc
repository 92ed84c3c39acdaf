// u8 x s8 -> s32 GEMM, aarch64 with SDOT (FEAT_DotProd; compiled with +dotprod).
// The microkernel is gemm_u8s8_neon_impl.h, shared with the plain NEON variant.
#define QF_GEMM8_DOT 1
#include "gemm_u8s8_neon_impl.h"

namespace qf {
void gemm_u8s8s32_neondot(const GemmU8S8Args& args) { gemm8::drive(args, kMicro); }
}  // namespace qf
