// cuBLASLt, loaded at run time: the int8 tensor-core GEMM (IMMA) and the
// bf16 GEMM used as the benchmark's reference rate.
//
// No link-time dependency: the library is dlopen()ed on first use and the
// dozen functions we need are resolved with dlsym, so the addon loads (and
// reports why CUDA is off) on hosts that have no cuBLASLt.
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <sys/stat.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "cuda/backend.h"
#include "cuda/cublaslt_min.h"

namespace qf {
namespace cuda {
namespace {

struct Api {
  lt::CreateFn Create = nullptr;
  lt::GetVersionFn GetVersion = nullptr;
  lt::MatmulDescCreateFn MatmulDescCreate = nullptr;
  lt::MatmulDescDestroyFn MatmulDescDestroy = nullptr;
  lt::MatmulDescSetAttributeFn MatmulDescSetAttribute = nullptr;
  lt::MatrixLayoutCreateFn MatrixLayoutCreate = nullptr;
  lt::MatrixLayoutDestroyFn MatrixLayoutDestroy = nullptr;
  lt::MatmulPreferenceCreateFn MatmulPreferenceCreate = nullptr;
  lt::MatmulPreferenceDestroyFn MatmulPreferenceDestroy = nullptr;
  lt::MatmulPreferenceSetAttributeFn MatmulPreferenceSetAttribute = nullptr;
  lt::MatmulAlgoGetHeuristicFn MatmulAlgoGetHeuristic = nullptr;
  lt::MatmulFn Matmul = nullptr;
};

Api g_api;
LtLibrary g_lib;

template <class F>
bool resolve(void* h, const char* name, F* out, std::string* missing) {
  void* p = dlsym(h, name);
  if (!p) {
    *missing += (missing->empty() ? "" : ", ") + std::string(name);
    return false;
  }
  *out = reinterpret_cast<F>(p);
  return true;
}

bool is_dir(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::vector<std::string> candidates() {
  static const char* kNames[] = {"libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so.11", "libcublasLt.so"};
  std::vector<std::string> c;
  auto add_dir = [&](std::string dir) {
    if (dir.empty()) return;
    if (dir.back() != '/') dir += '/';
    for (const char* n : kNames) c.push_back(dir + n);
  };
  if (const char* e = std::getenv("QUANTFACE_CUBLASLT")) {
    std::string s(e);
    if (!s.empty()) {
      // A file path, or a folder holding libcublasLt.so.N.
      if (is_dir(s)) {
        add_dir(s);
      } else {
        c.push_back(s);
      }
    }
  }
  for (const char* n : kNames) c.push_back(n);  // the loader's own search (rpath, LD_LIBRARY_PATH at start-up, ld.so.cache)
  // LD_LIBRARY_PATH as it is now (the loader only reads it at process start).
  if (const char* e = std::getenv("LD_LIBRARY_PATH")) {
    std::string s(e);
    size_t pos = 0;
    while (pos <= s.size()) {
      size_t end = s.find(':', pos);
      if (end == std::string::npos) end = s.size();
      add_dir(s.substr(pos, end - pos));
      pos = end + 1;
    }
  }
  if (const char* e = std::getenv("CUDA_HOME")) add_dir(std::string(e) + "/lib64");
  add_dir("/usr/local/cuda/lib64");
  add_dir("/usr/local/cuda/targets/x86_64-linux/lib");
  return c;
}

void load_library() {
  std::string tried, last_error;
  for (const std::string& path : candidates()) {
    void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      const char* err = dlerror();
      // Keep the first error that is not a plain "not found" (e.g. a wrong
      // architecture or a missing dependency): it tells the user more.
      if (err && last_error.empty() && std::strstr(err, "No such file") == nullptr) last_error = err;
      continue;
    }
    std::string missing;
    Api api;
    resolve(h, "cublasLtCreate", &api.Create, &missing);
    resolve(h, "cublasLtGetVersion", &api.GetVersion, &missing);
    resolve(h, "cublasLtMatmulDescCreate", &api.MatmulDescCreate, &missing);
    resolve(h, "cublasLtMatmulDescDestroy", &api.MatmulDescDestroy, &missing);
    resolve(h, "cublasLtMatmulDescSetAttribute", &api.MatmulDescSetAttribute, &missing);
    resolve(h, "cublasLtMatrixLayoutCreate", &api.MatrixLayoutCreate, &missing);
    resolve(h, "cublasLtMatrixLayoutDestroy", &api.MatrixLayoutDestroy, &missing);
    resolve(h, "cublasLtMatmulPreferenceCreate", &api.MatmulPreferenceCreate, &missing);
    resolve(h, "cublasLtMatmulPreferenceDestroy", &api.MatmulPreferenceDestroy, &missing);
    resolve(h, "cublasLtMatmulPreferenceSetAttribute", &api.MatmulPreferenceSetAttribute, &missing);
    resolve(h, "cublasLtMatmulAlgoGetHeuristic", &api.MatmulAlgoGetHeuristic, &missing);
    resolve(h, "cublasLtMatmul", &api.Matmul, &missing);
    if (!missing.empty()) {
      last_error = path + " lacks " + missing;
      dlclose(h);
      continue;
    }
    // The library stays loaded for the life of the process (never dlclose'd:
    // handles and descriptors may outlive any owner we could name).
    char real[4096] = {0};
    if (dlinfo(h, RTLD_DI_ORIGIN, real) == 0 && real[0]) {
      std::string file = path.substr(path.rfind('/') == std::string::npos ? 0 : path.rfind('/') + 1);
      g_lib.path = std::string(real) + "/" + file;
    } else {
      g_lib.path = path;
    }
    g_api = api;
    g_lib.version = api.GetVersion();
    g_lib.loaded = true;
    return;
  }
  g_lib.loaded = false;
  g_lib.error =
      "cuBLASLt not found (tried libcublasLt.so.13/.12/.11 via the loader, QUANTFACE_CUBLASLT, LD_LIBRARY_PATH and "
      "/usr/local/cuda/lib64" +
      std::string(last_error.empty() ? "" : "; " + last_error) +
      "): set QUANTFACE_CUBLASLT to the library (or its folder), e.g. a Python package's nvidia/cublas/lib";
}

// ------------------------------------------------------------------ plans
// One cuBLASLt matmul configuration per (kind, m, n, k): the descriptors and
// the algorithm picked by the heuristic, cached so that repeated calls (a
// layer of a network, a benchmark loop) skip the heuristic query.
enum Kind { kS8S8S32 = 0, kBf16Bf16 = 1, kBf16F32 = 2 };

struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
  cublasLtMatmulAlgo_t algo;
  size_t workspace = 0;
  bool usable = false;  // false: cuBLASLt has no algorithm for it
};

std::mutex g_mu;  // guards everything below
cublasLtHandle_t g_handle = nullptr;
void* g_workspace = nullptr;
size_t g_workspace_bytes = 0;
std::map<std::tuple<int, int, int, int>, Plan> g_plans;
constexpr size_t kMaxPlans = 256;
constexpr size_t kWorkspaceBytes = size_t(32) << 20;  // cuBLAS recommends 32 MiB on Hopper

std::string status_text(const char* what, cublasStatus_t st) {
  return std::string(what) + " failed (cublasStatus_t " + std::to_string(static_cast<int>(st)) + ")";
}

void destroy(Plan& p) {
  if (p.la) g_api.MatrixLayoutDestroy(p.la);
  if (p.lb) g_api.MatrixLayoutDestroy(p.lb);
  if (p.lc) g_api.MatrixLayoutDestroy(p.lc);
  if (p.op) g_api.MatmulDescDestroy(p.op);
  p = Plan();
}

bool ensure_handle(std::string* err) {
  if (!g_handle) {
    cublasStatus_t st = g_api.Create(&g_handle);
    if (st != CUBLAS_STATUS_SUCCESS) {
      g_handle = nullptr;
      *err = status_text("cublasLtCreate", st);
      return false;
    }
  }
  if (!g_workspace) {
    if (cudaMalloc(&g_workspace, kWorkspaceBytes) == cudaSuccess) {
      g_workspace_bytes = kWorkspaceBytes;
    } else {
      cudaGetLastError();
      g_workspace = nullptr;
      g_workspace_bytes = 0;  // run without a workspace
    }
  }
  return true;
}

// Row-major GEMM through column-major cuBLASLt ("the transpose trick").
//
// We want C (m x n, row-major) = A (m x k, row-major) * B^T, B being n x k
// row-major (one row per output channel). cuBLASLt sees every buffer as
// column-major, and a row-major R x C matrix read column-major is its
// transpose (C x R) with the same leading dimension:
//   our B buffer  = col-major k x n matrix  Bc = B^T   (ld k)
//   our A buffer  = col-major k x m matrix  Ac = A^T   (ld k)
//   our C buffer  = col-major n x m matrix  Cc = C^T   (ld n)
// and C^T = (A B^T)^T = B A^T = Bc^T * Ac. So we call cuBLASLt with
//   its A := Bc with transa = T  (op(A) = B, n x k: M = n, K = k),
//   its B := Ac with transb = N  (k x m: N = m),
//   its D := Cc (n x m, ld n),
// which is exactly the "TN" form that the int8 IMMA kernels with ordinary
// (non-COL32) layouts require on Ampere and Hopper (COL32 orders are not
// supported on Hopper at all). Their other conditions: leading dimensions
// multiples of 4 (ld = k, k, n), cuBLASLt's M and K multiples of 4 (M = n,
// K = k) and 4-byte aligned pointers (cudaMalloc gives 256): hence
// lt_gemm_s8s8s32_shape_ok. Other shapes go to the tiled kernel.
bool make_plan(Kind kind, int m, int n, int k, Plan* p, std::string* err) {
  const bool s8 = kind == kS8S8S32;
  const cudaDataType_t ab_type = s8 ? CUDA_R_8I : CUDA_R_16BF;
  const cudaDataType_t c_type = s8 ? CUDA_R_32I : (kind == kBf16F32 ? CUDA_R_32F : CUDA_R_16BF);
  const cublasComputeType_t compute = s8 ? CUBLAS_COMPUTE_32I : CUBLAS_COMPUTE_32F;
  const cudaDataType_t scale_type = s8 ? CUDA_R_32I : CUDA_R_32F;
  cublasStatus_t st = g_api.MatmulDescCreate(&p->op, compute, scale_type);
  if (st != CUBLAS_STATUS_SUCCESS) {
    p->op = nullptr;
    *err = status_text("cublasLtMatmulDescCreate", st);
    return false;
  }
  const int32_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
  if ((st = g_api.MatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a))) !=
          CUBLAS_STATUS_SUCCESS ||
      (st = g_api.MatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b))) !=
          CUBLAS_STATUS_SUCCESS) {
    *err = status_text("cublasLtMatmulDescSetAttribute", st);
    return false;
  }
  if ((st = g_api.MatrixLayoutCreate(&p->la, ab_type, k, n, k)) != CUBLAS_STATUS_SUCCESS ||
      (st = g_api.MatrixLayoutCreate(&p->lb, ab_type, k, m, k)) != CUBLAS_STATUS_SUCCESS ||
      (st = g_api.MatrixLayoutCreate(&p->lc, c_type, n, m, n)) != CUBLAS_STATUS_SUCCESS) {
    *err = status_text("cublasLtMatrixLayoutCreate", st);
    return false;
  }
  cublasLtMatmulPreference_t pref = nullptr;
  if ((st = g_api.MatmulPreferenceCreate(&pref)) != CUBLAS_STATUS_SUCCESS) {
    *err = status_text("cublasLtMatmulPreferenceCreate", st);
    return false;
  }
  const uint64_t ws = g_workspace_bytes;
  st = g_api.MatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  if (st != CUBLAS_STATUS_SUCCESS) {
    g_api.MatmulPreferenceDestroy(pref);
    *err = status_text("cublasLtMatmulPreferenceSetAttribute", st);
    return false;
  }
  cublasLtMatmulHeuristicResult_t results[8];
  std::memset(results, 0, sizeof(results));
  int found = 0;
  st = g_api.MatmulAlgoGetHeuristic(g_handle, p->op, p->la, p->lb, p->lc, p->lc, pref, 8, results, &found);
  g_api.MatmulPreferenceDestroy(pref);
  p->usable = false;
  if (st == CUBLAS_STATUS_SUCCESS) {
    for (int i = 0; i < found; i++) {
      if (results[i].state == CUBLAS_STATUS_SUCCESS && results[i].workspaceSize <= g_workspace_bytes) {
        p->algo = results[i].algo;
        p->workspace = results[i].workspaceSize;
        p->usable = true;
        break;
      }
    }
  } else if (st != CUBLAS_STATUS_NOT_SUPPORTED) {
    *err = status_text("cublasLtMatmulAlgoGetHeuristic", st);
    return false;
  }
  return true;
}

LtResult run(Kind kind, const void* a, const void* b, void* c, int m, int n, int k, std::string* err) {
  const LtLibrary& lib = lt_library();
  if (!lib.loaded) {
    *err = lib.error;
    return LtResult::Error;
  }
  std::lock_guard<std::mutex> lock(g_mu);
  if (!ensure_handle(err)) return LtResult::Error;
  auto key = std::make_tuple(static_cast<int>(kind), m, n, k);
  auto it = g_plans.find(key);
  if (it == g_plans.end()) {
    if (g_plans.size() >= kMaxPlans) {
      for (auto& kv : g_plans) destroy(kv.second);
      g_plans.clear();
    }
    Plan p;
    if (!make_plan(kind, m, n, k, &p, err)) {
      destroy(p);
      return LtResult::Error;
    }
    it = g_plans.emplace(key, p).first;
  }
  Plan& p = it->second;
  if (!p.usable) return LtResult::Unsupported;
  const int32_t alpha_i = 1, beta_i = 0;
  const float alpha_f = 1.0f, beta_f = 0.0f;
  const bool s8 = kind == kS8S8S32;
  const void* alpha = s8 ? static_cast<const void*>(&alpha_i) : static_cast<const void*>(&alpha_f);
  const void* beta = s8 ? static_cast<const void*>(&beta_i) : static_cast<const void*>(&beta_f);
  // Operands swapped (see make_plan): cuBLASLt's A is our B, its B our A.
  cublasStatus_t st = g_api.Matmul(g_handle, p.op, alpha, b, p.la, a, p.lb, beta, c, p.lc, c, p.lc, &p.algo,
                                   p.workspace ? g_workspace : nullptr, p.workspace, nullptr);
  if (st == CUBLAS_STATUS_NOT_SUPPORTED) return LtResult::Unsupported;
  if (st != CUBLAS_STATUS_SUCCESS) {
    *err = status_text("cublasLtMatmul", st);
    return LtResult::Error;
  }
  return LtResult::Ok;
}

}  // namespace

const LtLibrary& lt_library() {
  static std::once_flag once;
  std::call_once(once, load_library);
  return g_lib;
}

bool lt_gemm_s8s8s32_shape_ok(int m, int n, int k) { return m >= 1 && n >= 4 && k >= 4 && n % 4 == 0 && k % 4 == 0; }

LtResult lt_gemm_s8s8s32(const int8_t* a, const int8_t* b, int32_t* c, int m, int n, int k, std::string* err) {
  if (!lt_gemm_s8s8s32_shape_ok(m, n, k)) return LtResult::Unsupported;
  return run(kS8S8S32, a, b, c, m, n, k, err);
}

LtResult lt_gemm_bf16(const void* a, const void* b, void* d, bool d_is_f32, int m, int n, int k, std::string* err) {
  return run(d_is_f32 ? kBf16F32 : kBf16Bf16, a, b, d, m, n, k, err);
}

}  // namespace cuda
}  // namespace qf
