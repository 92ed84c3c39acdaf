// The part of the cuBLASLt API quantface uses. cuBLASLt is loaded at run
// time (dlopen + dlsym, native/cuda/cublaslt.cc), so only its types and
// function signatures are needed at build time. When the real cublasLt.h is
// found at configure time (cuda.cmake defines QF_HAVE_CUBLASLT_H) it is used;
// otherwise these declarations stand in for it. The enum values are the
// documented ones of cublas_api.h / cublasLt.h (stable across cuBLAS 11-13);
// cudaDataType_t comes from the CUDA runtime's library_types.h.
#pragma once
#include <cstddef>
#include <cstdint>

#include <library_types.h>  // cudaDataType_t: CUDA_R_8I = 3, CUDA_R_32I = 10, CUDA_R_32F = 0, CUDA_R_16BF = 14

#if defined(QF_HAVE_CUBLASLT_H)
#include <cublasLt.h>
#else
extern "C" {

typedef enum {
  CUBLAS_STATUS_SUCCESS = 0,
  CUBLAS_STATUS_NOT_INITIALIZED = 1,
  CUBLAS_STATUS_ALLOC_FAILED = 3,
  CUBLAS_STATUS_INVALID_VALUE = 7,
  CUBLAS_STATUS_ARCH_MISMATCH = 8,
  CUBLAS_STATUS_MAPPING_ERROR = 11,
  CUBLAS_STATUS_EXECUTION_FAILED = 13,
  CUBLAS_STATUS_INTERNAL_ERROR = 14,
  CUBLAS_STATUS_NOT_SUPPORTED = 15,
  CUBLAS_STATUS_LICENSE_ERROR = 16
} cublasStatus_t;

typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1, CUBLAS_OP_C = 2 } cublasOperation_t;

typedef enum {
  CUBLAS_COMPUTE_16F = 64,
  CUBLAS_COMPUTE_16F_PEDANTIC = 65,
  CUBLAS_COMPUTE_32F = 68,
  CUBLAS_COMPUTE_32F_PEDANTIC = 69,
  CUBLAS_COMPUTE_64F = 70,
  CUBLAS_COMPUTE_64F_PEDANTIC = 71,
  CUBLAS_COMPUTE_32I = 72,
  CUBLAS_COMPUTE_32I_PEDANTIC = 73,
  CUBLAS_COMPUTE_32F_FAST_16F = 74,
  CUBLAS_COMPUTE_32F_FAST_16BF = 75,
  CUBLAS_COMPUTE_32F_FAST_TF32 = 77
} cublasComputeType_t;

typedef struct cublasLtContext* cublasLtHandle_t;
typedef struct { uint64_t data[8]; } cublasLtMatrixLayoutOpaque_t;
typedef cublasLtMatrixLayoutOpaque_t* cublasLtMatrixLayout_t;
typedef struct { uint64_t data[8]; } cublasLtMatmulAlgo_t;
typedef struct { uint64_t data[12]; } cublasLtMatmulDescOpaque_t;
typedef cublasLtMatmulDescOpaque_t* cublasLtMatmulDesc_t;
typedef struct { uint64_t data[10]; } cublasLtMatmulPreferenceOpaque_t;
typedef cublasLtMatmulPreferenceOpaque_t* cublasLtMatmulPreference_t;

typedef enum {
  CUBLASLT_ORDER_COL = 0,
  CUBLASLT_ORDER_ROW = 1,
  CUBLASLT_ORDER_COL32 = 2,
  CUBLASLT_ORDER_COL4_4R2_8C = 3,
  CUBLASLT_ORDER_COL32_2R_4R4 = 4
} cublasLtOrder_t;

typedef enum {
  CUBLASLT_MATRIX_LAYOUT_TYPE = 0,
  CUBLASLT_MATRIX_LAYOUT_ORDER = 1,
  CUBLASLT_MATRIX_LAYOUT_ROWS = 2,
  CUBLASLT_MATRIX_LAYOUT_COLS = 3,
  CUBLASLT_MATRIX_LAYOUT_LD = 4,
  CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT = 5,
  CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET = 6,
  CUBLASLT_MATRIX_LAYOUT_PLANE_OFFSET = 7
} cublasLtMatrixLayoutAttribute_t;

typedef enum {
  CUBLASLT_MATMUL_DESC_COMPUTE_TYPE = 0,
  CUBLASLT_MATMUL_DESC_SCALE_TYPE = 1,
  CUBLASLT_MATMUL_DESC_POINTER_MODE = 2,
  CUBLASLT_MATMUL_DESC_TRANSA = 3,
  CUBLASLT_MATMUL_DESC_TRANSB = 4,
  CUBLASLT_MATMUL_DESC_TRANSC = 5,
  CUBLASLT_MATMUL_DESC_FILL_MODE = 6,
  CUBLASLT_MATMUL_DESC_EPILOGUE = 7,
  CUBLASLT_MATMUL_DESC_BIAS_POINTER = 8
} cublasLtMatmulDescAttributes_t;

typedef enum {
  CUBLASLT_MATMUL_PREF_SEARCH_MODE = 0,
  CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1
} cublasLtMatmulPreferenceAttributes_t;

typedef struct {
  cublasLtMatmulAlgo_t algo;
  size_t workspaceSize;
  cublasStatus_t state;
  float wavesCount;
  int reserved[4];
} cublasLtMatmulHeuristicResult_t;

}  // extern "C"
#endif  // QF_HAVE_CUBLASLT_H

// The values this file declares, checked against the real header when it is
// there (a wrong value here then fails the build instead of the GEMM).
static_assert(CUBLAS_STATUS_SUCCESS == 0 && CUBLAS_STATUS_NOT_SUPPORTED == 15, "cublasStatus_t values");
static_assert(CUBLAS_OP_N == 0 && CUBLAS_OP_T == 1, "cublasOperation_t values");
static_assert(CUBLAS_COMPUTE_32F == 68 && CUBLAS_COMPUTE_32I == 72, "cublasComputeType_t values");
static_assert(CUBLASLT_MATMUL_DESC_TRANSA == 3 && CUBLASLT_MATMUL_DESC_TRANSB == 4, "cublasLtMatmulDescAttributes_t values");
static_assert(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES == 1, "cublasLtMatmulPreferenceAttributes_t values");
static_assert(CUDA_R_8I == 3 && CUDA_R_32I == 10 && CUDA_R_32F == 0 && CUDA_R_16BF == 14, "cudaDataType_t values");
static_assert(sizeof(cublasLtMatmulAlgo_t) == 64 && sizeof(cublasLtMatmulHeuristicResult_t) == 96,
              "cuBLASLt struct sizes");

// Signatures of the functions resolved with dlsym (the stream is a
// cudaStream_t; we always pass the default stream, nullptr).
namespace qf {
namespace cuda {
namespace lt {
typedef cublasStatus_t (*CreateFn)(cublasLtHandle_t*);
typedef size_t (*GetVersionFn)(void);
typedef cublasStatus_t (*MatmulDescCreateFn)(cublasLtMatmulDesc_t*, cublasComputeType_t, cudaDataType_t);
typedef cublasStatus_t (*MatmulDescDestroyFn)(cublasLtMatmulDesc_t);
typedef cublasStatus_t (*MatmulDescSetAttributeFn)(cublasLtMatmulDesc_t, cublasLtMatmulDescAttributes_t, const void*,
                                                   size_t);
typedef cublasStatus_t (*MatrixLayoutCreateFn)(cublasLtMatrixLayout_t*, cudaDataType_t, uint64_t, uint64_t, int64_t);
typedef cublasStatus_t (*MatrixLayoutDestroyFn)(cublasLtMatrixLayout_t);
typedef cublasStatus_t (*MatmulPreferenceCreateFn)(cublasLtMatmulPreference_t*);
typedef cublasStatus_t (*MatmulPreferenceDestroyFn)(cublasLtMatmulPreference_t);
typedef cublasStatus_t (*MatmulPreferenceSetAttributeFn)(cublasLtMatmulPreference_t,
                                                         cublasLtMatmulPreferenceAttributes_t, const void*, size_t);
typedef cublasStatus_t (*MatmulAlgoGetHeuristicFn)(cublasLtHandle_t, cublasLtMatmulDesc_t, cublasLtMatrixLayout_t,
                                                   cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
                                                   cublasLtMatrixLayout_t, cublasLtMatmulPreference_t, int,
                                                   cublasLtMatmulHeuristicResult_t*, int*);
typedef cublasStatus_t (*MatmulFn)(cublasLtHandle_t, cublasLtMatmulDesc_t, const void*, const void*,
                                   cublasLtMatrixLayout_t, const void*, cublasLtMatrixLayout_t, const void*, const void*,
                                   cublasLtMatrixLayout_t, void*, cublasLtMatrixLayout_t, const cublasLtMatmulAlgo_t*,
                                   void*, size_t, struct CUstream_st*);
}  // namespace lt
}  // namespace cuda
}  // namespace qf
