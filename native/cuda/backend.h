// Interface between the N-API surface (native/cuda_api.cc, g++) and the CUDA
// backend: kernels.cu (nvcc) and cublaslt.cc (g++, cuBLASLt via dlopen).
// Plain C++ only: no CUDA or N-API headers, so both compilers can include it.
// Every device pointer here is a cudaMalloc'd pointer of the current device;
// all work goes to the legacy default stream (stream 0), so it is ordered
// with the synchronous cudaMemcpy of DeviceBuffer.upload/download.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace qf {
namespace cuda {

// ------------------------------------------------------------- kernels.cu
// Each launcher returns a cudaError_t value (0 = cudaSuccess) of the launch.

// q = clamp(rne(x / scale) + zp, qmin, qmax) stored as a byte (two's
// complement for negative values, so the byte is right for both int8 and
// uint8 ranges). NaN -> zp (as the CPU kernels), +-inf -> clamped.
int quantize_f32_to_8bit(const float* x, uint8_t* out, int64_t count, float scale, int32_t zp, int32_t qmin, int32_t qmax);
// x = float(q - zp) * scale (a single rounding: q - zp is exact in float).
int dequantize_8bit_to_f32(const void* q, bool is_signed, float* out, int64_t count, float scale, int32_t zp);
// c[i*n + j] = sum_p a[i*k + p] * b[j*k + p]: a simple shared-memory tiled
// kernel for shapes cuBLASLt's int8 tensor-core path does not take.
int gemm_s8s8s32_tiled(const int8_t* a, const int8_t* b, int32_t* c, int m, int n, int k);
// In place on an m x n int32 matrix: c[i,j] (as float) = float(c[i,j]) * scale[j] + bias[j];
// scale may be null (no multiply), bias may be null (adds 0, as the CPU epilogue).
int epilogue_s32_to_f32(int32_t* c, const float* scale, const float* bias, int64_t m, int n);
// Pseudo-random bf16 values in [-1, 1) (benchmark inputs).
int fill_random_bf16(void* p, int64_t count, uint32_t seed);
// 0 when the fatbinary has code this device can run (cudaFuncGetAttributes
// on every kernel); else the cudaError_t (e.g. no kernel image).
int check_kernel_images();

// ------------------------------------------------------------- cublaslt.cc
struct LtLibrary {
  bool loaded = false;
  std::string path;    // the file that was loaded
  std::string error;   // why not, when !loaded
  size_t version = 0;  // cublasLtGetVersion(), e.g. 130100
};
// dlopen()s libcublasLt once (thread-safe): QUANTFACE_CUBLASLT (a file or a
// folder), then libcublasLt.so.13/.12/.11/.so through the loader's search
// path, then the folders in LD_LIBRARY_PATH as it is now, then CUDA's lib64.
const LtLibrary& lt_library();

enum class LtResult { Ok, Unsupported, Error };
// Shapes for which the int8 tensor-core (IMMA) path with plain row/column
// major layouts is used: k % 4 == 0 and n % 4 == 0 (see cublaslt.cc).
bool lt_gemm_s8s8s32_shape_ok(int m, int n, int k);
// C (m x n int32, row-major) = A (m x k int8, row-major) * B^T (B: n x k int8,
// row-major). Unsupported: cuBLASLt offers no algorithm (use the kernel).
LtResult lt_gemm_s8s8s32(const int8_t* a, const int8_t* b, int32_t* c, int m, int n, int k, std::string* err);
// D (m x n, bf16 or f32, row-major) = A (m x k bf16) * B^T (B: n x k bf16),
// CUBLAS_COMPUTE_32F. For the benchmark's reference rate.
LtResult lt_gemm_bf16(const void* a, const void* b, void* d, bool d_is_f32, int m, int n, int k, std::string* err);

}  // namespace cuda
}  // namespace qf
