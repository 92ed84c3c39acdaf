// Register-only throughput loops: the machine's peak for the benchmarks.
// Each returns the number of operations done (2 per multiply-add).
#pragma once
#include <cstdint>
namespace qf {
double peak_fma_zmm(int64_t iters);   // peak_avx512.cc
double peak_vnni_zmm(int64_t iters);  // peak_avx512vnni.cc
double peak_fma_ymm(int64_t iters);   // peak_avx2.cc
double peak_vnni_ymm(int64_t iters);  // peak_avxvnni.cc
double peak_fma_neon(int64_t iters);  // peak_neon.cc
double peak_dot_neon(int64_t iters);  // peak_neondot.cc
}  // namespace qf
