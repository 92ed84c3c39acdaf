// u8 x s8 -> s32 GEMM, aarch64 baseline Advanced SIMD (widening smlal by lane).
// The microkernel is gemm_u8s8_neon_impl.h, shared with the SDOT variant.
#include "gemm_u8s8_neon_impl.h"

namespace qf {
void gemm_u8s8s32_neon(const GemmU8S8Args& args) { gemm8::drive(args, kMicro); }
}  // namespace qf
