// fp32 GEMM: variant table (qf::sgemm_kernel) and the N-API exports
// sgemm / sgemmAsync (binding.d.ts, SgemmOptions).
#include "sgemm.h"

#include <cmath>
#include <string>

#include "napi_util.h"

namespace qf {

// Variant entry points (sgemm_avx512.cc, sgemm_avx2.cc, sgemm_neon.cc, sgemm_ref.cc). Every
// variant implements the full contract of SgemmFn: any transA/transB, any
// leading dimensions, m/n/k = 0, alpha == 0 (A and B not read), beta == 0 (C
// not read), and threads itself on the pool.
void sgemm_ref(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t, float, float*,
               int64_t);
void sgemm_avx512(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t, float,
                  float*, int64_t);
void sgemm_avx2(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t, float,
                float*, int64_t);
void sgemm_neon(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t, float,
                float*, int64_t);

QF_KERNEL(sgemm_kernel, SgemmFn, "sgemm",
          {
              QF_X86({"sgemm_avx512", Isa::Avx512, sgemm_avx512},)
              QF_X86({"sgemm_avx2", Isa::Avx2, sgemm_avx2},)
              QF_ARM64({"sgemm_neon", Isa::Neon, sgemm_neon},)
              {"sgemm_ref", Isa::Scalar, sgemm_ref},
          })

namespace napi {
namespace {

// Elements a row-major matrix of `rows` x `cols` with row stride `ld` spans.
int64_t span_of(Napi::Env env, const char* fn, int64_t rows, int64_t cols, int64_t ld, const char* what) {
  if (rows == 0 || cols == 0) return 0;
  const int64_t lim = int64_t(1) << 53;
  int64_t s = checked_mul(env, fn, rows - 1, ld, what);
  if (s > lim - cols) throw_range(env, std::string(fn) + ": " + what + " is too large");
  return s + cols;
}

bool overlaps(const float* p, int64_t np, const float* q, int64_t nq) {
  if (np == 0 || nq == 0) return false;
  return p < q + nq && q < p + np;
}

Prepared prepare_sgemm(const Napi::CallbackInfo& info) {
  const char* fn = "sgemm";
  Args args(info, fn);
  Napi::Env env = args.env();
  const int64_t lim = int64_t(1) << 53;
  const bool ta = args.boolean("transA", false);
  const bool tb = args.boolean("transB", false);
  const int64_t m = args.integer("m", 0, lim);
  const int64_t n = args.integer("n", 0, lim);
  const int64_t k = args.integer("k", 0, lim);
  // Stored shapes: A is m x k (k x m when transposed), B is k x n (n x k).
  const int64_t a_rows = ta ? k : m, a_cols = ta ? m : k;
  const int64_t b_rows = tb ? n : k, b_cols = tb ? k : n;
  const int64_t lda = args.integer("lda", 0, lim, a_cols);
  const int64_t ldb = args.integer("ldb", 0, lim, b_cols);
  const int64_t ldc = args.integer("ldc", 0, lim, n);
  if (lda < a_cols)
    throw_range(env, std::string(fn) + ": lda must be >= " + (ta ? "m" : "k") + " (" + std::to_string(a_cols) +
                         ") for " + (ta ? "a transposed (k x m)" : "a (m x k)") + "; got " + std::to_string(lda));
  if (ldb < b_cols)
    throw_range(env, std::string(fn) + ": ldb must be >= " + (tb ? "k" : "n") + " (" + std::to_string(b_cols) +
                         ") for " + (tb ? "b transposed (n x k)" : "b (k x n)") + "; got " + std::to_string(ldb));
  if (ldc < n)
    throw_range(env, std::string(fn) + ": ldc must be >= n (" + std::to_string(n) + "); got " + std::to_string(ldc));
  // Products m*n, m*k, k*n must stay exact in JS numbers.
  checked_mul(env, fn, m, n, "m * n");
  checked_mul(env, fn, m, k, "m * k");
  checked_mul(env, fn, k, n, "k * n");
  const int64_t need_a = span_of(env, fn, a_rows, a_cols, lda, "a's extent ((rows - 1) * lda + cols)");
  const int64_t need_b = span_of(env, fn, b_rows, b_cols, ldb, "b's extent ((rows - 1) * ldb + cols)");
  const int64_t need_c = span_of(env, fn, m, n, ldc, "c's extent ((m - 1) * ldc + n)");
  const double alpha = args.number("alpha", 1.0);
  const double beta = args.number("beta", 0.0);
  if (std::fabs(alpha) > 3.4028234663852886e38) throw_range(env, std::string(fn) + ": alpha is outside the float32 range");
  if (std::fabs(beta) > 3.4028234663852886e38) throw_range(env, std::string(fn) + ": beta is outside the float32 range");
  std::string desc_a = ta ? "(k - 1) * lda + m" : "(m - 1) * lda + k";
  std::string desc_b = tb ? "(n - 1) * ldb + k" : "(k - 1) * ldb + n";
  Span<float> a = args.array<float>("a", need_a, desc_a.c_str());
  Span<float> b = args.array<float>("b", need_b, desc_b.c_str());
  Span<float> c = args.array<float>("c", need_c, "(m - 1) * ldc + n");
  if (overlaps(c.data, need_c, a.data, need_a)) throw_range(env, std::string(fn) + ": c must not overlap a");
  if (overlaps(c.data, need_c, b.data, need_b)) throw_range(env, std::string(fn) + ": c must not overlap b");
  const std::string want = args.string("variant", "");
  const Variant<SgemmFn>* v = sgemm_kernel().find(want);
  if (!v) throw_range(env, std::string(fn) + ": variant '" + want + "' is unknown or not supported on this CPU");

  Prepared p;
  SgemmFn f = v->fn;
  const float* ap = a.data;
  const float* bp = b.data;
  float* cp = c.data;
  const float fa = static_cast<float>(alpha), fb = static_cast<float>(beta);
  p.run = [=]() { f(ta, tb, m, n, k, fa, ap, lda, bp, ldb, fb, cp, ldc); };
  p.keep = {a.value, b.value, c.value};
  return p;
}

void init_sgemm(Napi::Env env, Napi::Object exports) { QF_EXPORT_SYNC_ASYNC(exports, env, "sgemm", prepare_sgemm); }

}  // namespace
QF_REGISTER_EXPORTS(init_sgemm)
}  // namespace napi

}  // namespace qf
