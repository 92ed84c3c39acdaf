// CUDA kernels of quantface: quantize / dequantize, a tiled int8 GEMM for
// the shapes cuBLASLt's tensor-core path does not take, the f32 epilogue of
// the int8 GEMM, and a bf16 fill for the benchmark.
// Compiled with --fmad=false; the float steps also use the _rn intrinsics so
// that each multiply, add and divide rounds once, as the CPU kernels do.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/backend.h"

namespace qf {
namespace cuda {
namespace {

constexpr int kThreads = 256;

// Grid-stride loops: at most this many blocks per launch.
inline unsigned grid_for(int64_t count) {
  int64_t blocks = (count + kThreads - 1) / kThreads;
  if (blocks < 1) blocks = 1;
  if (blocks > 65536) blocks = 65536;
  return static_cast<unsigned>(blocks);
}

__global__ void quantize_kernel(const float* __restrict__ x, uint8_t* __restrict__ out, int64_t count, float scale,
                                int32_t zp, float lo, float hi) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float r = rintf(__fdiv_rn(x[i], scale));  // true division, then round half to even
    // Clamp before the integer conversion (lo = qmin - zp, hi = qmax - zp are
    // small integers, exact in float): huge values and infinities saturate.
    // NaN gives zp, as the CPU kernels do (NaN is treated as 0).
    const int32_t q = (r != r) ? zp : __float2int_rn(fminf(fmaxf(r, lo), hi)) + zp;
    out[i] = static_cast<uint8_t>(q);  // low byte: the int8 or uint8 representation
  }
}

template <class T>
__global__ void dequantize_kernel(const T* __restrict__ q, float* __restrict__ out, int64_t count, float scale,
                                  int32_t zp) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = __fmul_rn(__int2float_rn(static_cast<int32_t>(q[i]) - zp), scale);
}

// 64 x 64 output tile per block of 256 threads (16 x 16), 4 x 4 outputs per
// thread, k in steps of 32 through shared memory (zero-filled past the
// edges, which adds nothing). Exact int32 accumulation.
constexpr int kTile = 64, kTileK = 32;
__global__ void __launch_bounds__(256)
    gemm_s8s8s32_kernel(const int8_t* __restrict__ a, const int8_t* __restrict__ b, int32_t* __restrict__ c, int m,
                        int n, int k, int n_tiles) {
  __shared__ int as[kTileK][kTile + 1];
  __shared__ int bs[kTileK][kTile + 1];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x / n_tiles) * kTile;  // rows of a / c
  const int64_t col0 = static_cast<int64_t>(blockIdx.x % n_tiles) * kTile;  // rows of b = columns of c
  int acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 4; j++) acc[i][j] = 0;
  for (int k0 = 0; k0 < k; k0 += kTileK) {
    for (int e = threadIdx.x; e < kTile * kTileK; e += 256) {
      const int i = e / kTileK, p = e % kTileK;
      const int kp = k0 + p;
      const int64_t r = row0 + i, cc = col0 + i;
      as[p][i] = (r < m && kp < k) ? static_cast<int>(a[r * k + kp]) : 0;
      bs[p][i] = (cc < n && kp < k) ? static_cast<int>(b[cc * k + kp]) : 0;
    }
    __syncthreads();
#pragma unroll 8
    for (int p = 0; p < kTileK; p++) {
      int av[4], bv[4];
#pragma unroll
      for (int i = 0; i < 4; i++) av[i] = as[p][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; j++) bv[j] = bs[p][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] += av[i] * bv[j];
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int64_t r = row0 + ty + 16 * i;
    if (r >= m) continue;
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const int64_t cc = col0 + tx + 16 * j;
      if (cc < n) c[r * n + cc] = acc[i][j];
    }
  }
}

// y = float(acc) * scale[j] + bias[j] (bias 0 when absent), written over acc (same 4 bytes).
__global__ void epilogue_kernel(int32_t* __restrict__ c, const float* __restrict__ scale,
                                const float* __restrict__ bias, int64_t total, int n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int j = static_cast<int>(i % n);
    float y = __int2float_rn(c[i]);
    if (scale) y = __fmul_rn(y, scale[j]);
    y = __fadd_rn(y, bias ? bias[j] : 0.0f);  // always added, as on the CPU (-0 + 0 = +0)
    c[i] = __float_as_int(y);
  }
}

__device__ inline uint32_t hash32(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return static_cast<uint32_t>(x);
}

__global__ void fill_bf16_kernel(__nv_bfloat16* p, int64_t count, uint32_t seed) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint32_t h = hash32(static_cast<uint64_t>(i) * 0x9E3779B97F4A7C15ULL + seed);
    const float v = static_cast<float>(h >> 8) * (1.0f / 8388608.0f) - 1.0f;  // [-1, 1)
    p[i] = __float2bfloat16_rn(v);
  }
}

}  // namespace

int quantize_f32_to_8bit(const float* x, uint8_t* out, int64_t count, float scale, int32_t zp, int32_t qmin,
                         int32_t qmax) {
  if (count <= 0) return cudaSuccess;
  quantize_kernel<<<grid_for(count), kThreads>>>(x, out, count, scale, zp, static_cast<float>(qmin - zp),
                                                 static_cast<float>(qmax - zp));
  return cudaGetLastError();
}

int dequantize_8bit_to_f32(const void* q, bool is_signed, float* out, int64_t count, float scale, int32_t zp) {
  if (count <= 0) return cudaSuccess;
  if (is_signed)
    dequantize_kernel<int8_t><<<grid_for(count), kThreads>>>(static_cast<const int8_t*>(q), out, count, scale, zp);
  else
    dequantize_kernel<uint8_t><<<grid_for(count), kThreads>>>(static_cast<const uint8_t*>(q), out, count, scale, zp);
  return cudaGetLastError();
}

int gemm_s8s8s32_tiled(const int8_t* a, const int8_t* b, int32_t* c, int m, int n, int k) {
  if (m <= 0 || n <= 0) return cudaSuccess;
  const int64_t m_tiles = (static_cast<int64_t>(m) + kTile - 1) / kTile;
  const int64_t n_tiles = (static_cast<int64_t>(n) + kTile - 1) / kTile;
  if (m_tiles * n_tiles > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  gemm_s8s8s32_kernel<<<static_cast<unsigned>(m_tiles * n_tiles), 256>>>(a, b, c, m, n, k, static_cast<int>(n_tiles));
  return cudaGetLastError();
}

int epilogue_s32_to_f32(int32_t* c, const float* scale, const float* bias, int64_t m, int n) {
  const int64_t total = m * static_cast<int64_t>(n);
  if (total <= 0) return cudaSuccess;
  epilogue_kernel<<<grid_for(total), kThreads>>>(c, scale, bias, total, n);
  return cudaGetLastError();
}

int fill_random_bf16(void* p, int64_t count, uint32_t seed) {
  if (count <= 0) return cudaSuccess;
  fill_bf16_kernel<<<grid_for(count), kThreads>>>(static_cast<__nv_bfloat16*>(p), count, seed);
  return cudaGetLastError();
}

int check_kernel_images() {
  cudaFuncAttributes attr;
  const void* kernels[] = {
      reinterpret_cast<const void*>(&quantize_kernel),
      reinterpret_cast<const void*>(&dequantize_kernel<int8_t>),
      reinterpret_cast<const void*>(&dequantize_kernel<uint8_t>),
      reinterpret_cast<const void*>(&gemm_s8s8s32_kernel),
      reinterpret_cast<const void*>(&epilogue_kernel),
      reinterpret_cast<const void*>(&fill_bf16_kernel),
  };
  for (const void* f : kernels) {
    cudaError_t e = cudaFuncGetAttributes(&attr, f);
    if (e != cudaSuccess) {
      cudaGetLastError();  // clear it
      return e;
    }
  }
  return cudaSuccess;
}

}  // namespace cuda
}  // namespace qf
