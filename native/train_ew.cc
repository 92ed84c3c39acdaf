// Training-step elementwise kernels (train_ew.h): kernel tables, threaded
// drivers with thread-count-independent reductions, and the N-API exports
// batchNormForward / batchNormBackward / prelu / preluBackward (+Async).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "napi_util.h"
#include "train_ew.h"

namespace qf {
namespace tew {

QF_KERNEL(bn_stats_kernel, BnStatsFn, "bn_stats",
          {
              QF_X86({"bn_stats_avx512", Isa::Avx512, bn_stats_avx512},)
              QF_X86({"bn_stats_avx2", Isa::Avx2, bn_stats_avx2},)
              {"bn_stats_ref", Isa::Scalar, bn_stats_ref},
          })
QF_KERNEL(bn_grad_sums_kernel, BnGradSumsFn, "bn_grad_sums",
          {
              QF_X86({"bn_grad_sums_avx512", Isa::Avx512, bn_grad_sums_avx512},)
              QF_X86({"bn_grad_sums_avx2", Isa::Avx2, bn_grad_sums_avx2},)
              {"bn_grad_sums_ref", Isa::Scalar, bn_grad_sums_ref},
          })
QF_KERNEL(channel_affine_kernel, ChannelAffineFn, "channel_affine",
          {
              QF_X86({"channel_affine_avx512", Isa::Avx512, channel_affine_avx512},)
              QF_X86({"channel_affine_avx2", Isa::Avx2, channel_affine_avx2},)
              {"channel_affine_ref", Isa::Scalar, channel_affine_ref},
          })
QF_KERNEL(bn_backward_dx_kernel, BnBackwardDxFn, "bn_backward_dx",
          {
              QF_X86({"bn_backward_dx_avx512", Isa::Avx512, bn_backward_dx_avx512},)
              QF_X86({"bn_backward_dx_avx2", Isa::Avx2, bn_backward_dx_avx2},)
              {"bn_backward_dx_ref", Isa::Scalar, bn_backward_dx_ref},
          })
QF_KERNEL(prelu_backward_kernel, PreluBackwardFn, "prelu_backward",
          {
              QF_X86({"prelu_backward_avx512", Isa::Avx512, prelu_backward_avx512},)
              QF_X86({"prelu_backward_avx2", Isa::Avx2, prelu_backward_avx2},)
              {"prelu_backward_ref", Isa::Scalar, prelu_backward_ref},
          })
QF_KERNEL(bn_prelu_sums_kernel, BnPreluSumsFn, "bn_prelu_sums",
          {
              QF_X86({"bn_prelu_sums_avx512", Isa::Avx512, bn_prelu_sums_avx512},)
              QF_X86({"bn_prelu_sums_avx2", Isa::Avx2, bn_prelu_sums_avx2},)
              {"bn_prelu_sums_ref", Isa::Scalar, bn_prelu_sums_ref},
          })

namespace {

// Fixed partition of M rows into blocks (depends on M only).
int64_t num_blocks(int64_t M) { return std::min<int64_t>(64, std::max<int64_t>(1, (M + 2047) / 2048)); }

// Per-channel sums over M rows into nout arrays of C doubles. f(r0, r1, parts)
// writes the sums of rows [r0, r1) to parts[k][0..C). Block partials are added
// in block order, starting from +0.
template <class F>
void blocked_sums(int64_t M, int64_t C, int nout, double* const* outs, F f) {
  const int64_t nb = num_blocks(M);
  std::vector<double> part(static_cast<size_t>(nb * nout * C));
  auto run_block = [&](int64_t b) {
    double* p[3];
    for (int k = 0; k < nout; k++) p[k] = part.data() + (b * nout + k) * C;
    f(M * b / nb, M * (b + 1) / nb, p);
  };
  if (nb == 1 || num_threads() == 1) {
    for (int64_t b = 0; b < nb; b++) run_block(b);
  } else {
    parallel_for(nb, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; b++) run_block(b);
    });
  }
  for (int k = 0; k < nout; k++) {
    double* o = outs[k];
    for (int64_t c = 0; c < C; c++) o[c] = 0.0;
    for (int64_t b = 0; b < nb; b++) {
      const double* p = part.data() + (b * nout + k) * C;
      for (int64_t c = 0; c < C; c++) o[c] += p[c];
    }
  }
}

// Calls whose footprint (bytes read + written) is at least this large write
// their output with non-temporal stores where a variant supports them (as the
// quantization kernels do: QUANTFACE_STREAM_BYTES, default 8 MiB, -1 = never).
int64_t stream_bytes() {
  static const int64_t v = []() -> int64_t {
    const char* e = std::getenv("QUANTFACE_STREAM_BYTES");
    if (e && *e) {
      char* end = nullptr;
      const long long x = std::strtoll(e, &end, 10);
      if (end && *end == 0) return x < 0 ? std::numeric_limits<int64_t>::max() : static_cast<int64_t>(x);
    }
    return int64_t(8) << 20;
  }();
  return v;
}

// A per-channel parameter array extended to C + 16 entries (train_ew.h).
std::vector<float> extended(const float* p, int64_t C) {
  std::vector<float> e(static_cast<size_t>(C + 16));
  for (int64_t j = 0; j < C + 16; j++) e[j] = p[j % C];
  return e;
}

template <class F>
void rows_parallel(int64_t M, int64_t C, F f) {
  if (M <= 0) return;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, C));
  if (M <= grain || num_threads() == 1) {
    f(int64_t(0), M);
    return;
  }
  parallel_for(M, grain, [&](int64_t r0, int64_t r1) { f(r0, r1); });
}

}  // namespace
}  // namespace tew

// ====================================================================== N-API
namespace napi {
namespace {

using namespace tew;
constexpr int64_t kMax = int64_t(1) << 40;

template <class Fn>
Fn pick(const Args& a, const Kernel<Fn>& k, const std::string& want) {
  const Variant<Fn>* v = k.find(want);
  if (!v) {
    std::string all;
    for (const auto& x : k.variants) all += (all.empty() ? "" : ", ") + std::string(x.name);
    throw_range(a.env(), a.where("variant") + " '" + want + "' is unknown or not supported on this CPU (" + k.name +
                             " variants: " + all + ")");
  }
  return v->fn;
}

bool overlaps(const void* a, size_t abytes, const void* b, size_t bbytes) {
  if (abytes == 0 || bbytes == 0) return false;
  const uintptr_t a0 = reinterpret_cast<uintptr_t>(a), b0 = reinterpret_cast<uintptr_t>(b);
  return a0 < b0 + bbytes && b0 < a0 + abytes;
}
// The same start is allowed (in place); any other overlap is not.
void same_or_disjoint(const Args& a, const char* ka, const void* pa, size_t na, const char* kb, const void* pb,
                      size_t nb) {
  if (pa == pb) return;
  if (overlaps(pa, na, pb, nb))
    throw_range(a.env(), std::string(a.fn()) + ": " + ka + " and " + kb + " must be the same array or not overlap");
}
void disjoint(const Args& a, const char* ka, const void* pa, size_t na, const char* kb, const void* pb, size_t nb) {
  if (overlaps(pa, na, pb, nb)) throw_range(a.env(), std::string(a.fn()) + ": " + ka + " and " + kb + " must not overlap");
}

// Per-channel array: exactly C elements.
template <class T>
Span<T> per_channel(const Args& a, const char* key, int64_t C, bool required) {
  Span<T> s = required ? a.array<T>(key, C, "channels") : a.optional_array<T>(key, C, "channels");
  if (s.present() && static_cast<int64_t>(s.length) != C)
    throw_range(a.env(), a.where(key) + " has " + std::to_string(s.length) + " elements; needs exactly channels = " +
                             std::to_string(C));
  return s;
}

int64_t rows_of(const Args& a, const char* key, int64_t n, int64_t C) {
  if (n % C != 0)
    throw_range(a.env(), a.where(key) + ".length (" + std::to_string(n) + ") must be a multiple of channels (" +
                             std::to_string(C) + ")");
  return n / C;
}

Prepared prep_bn_forward(const Napi::CallbackInfo& info) {
  Args a(info, "batchNormForward");
  const std::string want = a.string("variant", "");
  const BnStatsFn st = pick(a, bn_stats_kernel(), want);
  const ChannelAffineFn af = pick(a, channel_affine_kernel(), want);
  Span<float> x = a.array<float>("x", 0);
  const int64_t n = static_cast<int64_t>(x.length);
  const int64_t C = a.integer("channels", 1, kMax);
  const int64_t M = rows_of(a, "x", n, C);
  Span<float> out = a.array<float>("out", n, "x.length");
  const bool training = a.boolean("training", true);
  const double eps = a.number("eps", 1e-5);
  if (eps < 0) throw_range(a.env(), a.where("eps") + " must be >= 0");
  const double momentum = a.number("momentum", 0.1);
  if (momentum < 0 || momentum > 1) throw_range(a.env(), a.where("momentum") + " must be in [0, 1]");
  Span<float> w = per_channel<float>(a, "weight", C, false);
  Span<float> b = per_channel<float>(a, "bias", C, false);
  Span<float> rm = per_channel<float>(a, "runningMean", C, !training);
  Span<float> rv = per_channel<float>(a, "runningVar", C, !training);
  Span<double> mean_out = per_channel<double>(a, "mean", C, false);
  Span<double> invstd_out = per_channel<double>(a, "invstd", C, false);
  Span<float> slope = a.optional_array<float>("slope", 1);
  if (slope.present() && slope.length != 1 && static_cast<int64_t>(slope.length) != C)
    throw_range(a.env(), a.where("slope") + " has " + std::to_string(slope.length) +
                             " elements; needs 1 (shared) or exactly channels = " + std::to_string(C));
  if (training && M < 2)
    throw_range(a.env(), a.where("x") + ": training needs at least 2 rows per channel (got " + std::to_string(M) + ")");
  same_or_disjoint(a, "x", x.data, n * 4, "out", out.data, n * 4);
  if (rm.present()) disjoint(a, "runningMean", rm.data, C * 4, "out", out.data, n * 4);
  if (rv.present()) disjoint(a, "runningVar", rv.data, C * 4, "out", out.data, n * 4);
  Prepared p;
  p.keep = {x.value, out.value, w.value, b.value, rm.value, rv.value, mean_out.value, invstd_out.value, slope.value};
  const float* xp = x.data;
  float* op = out.data;
  const float* wp = w.present() ? w.data : nullptr;
  const float* bp = b.present() ? b.data : nullptr;
  float* rmp = rm.present() ? rm.data : nullptr;
  float* rvp = rv.present() ? rv.data : nullptr;
  double* mop = mean_out.present() ? mean_out.data : nullptr;
  double* iop = invstd_out.present() ? invstd_out.data : nullptr;
  const float* sp = slope.present() ? slope.data : nullptr;
  const bool shared_slope = slope.present() && slope.length == 1 && C > 1;
  p.run = [=]() {
    std::vector<double> mean(C), invstd(C);
    if (training) {
      std::vector<double> K(C), s1(C), s2(C);
      for (int64_t c = 0; c < C; c++) K[c] = xp[c];
      double* outs[2] = {s1.data(), s2.data()};
      blocked_sums(M, C, 2, outs, [&](int64_t r0, int64_t r1, double* const* part) {
        st(xp, C, K.data(), r0, r1, part[0], part[1]);
      });
      const double Md = static_cast<double>(M);
      for (int64_t c = 0; c < C; c++) {
        mean[c] = K[c] + s1[c] / Md;
        const double t = s2[c] - (s1[c] * s1[c]) / Md;
        const double v = t < 0 ? 0.0 : t;  // NaN stays NaN
        invstd[c] = 1.0 / std::sqrt(v / Md + eps);
        if (rmp) rmp[c] = static_cast<float>((1 - momentum) * rmp[c] + momentum * mean[c]);
        if (rvp) rvp[c] = static_cast<float>((1 - momentum) * rvp[c] + momentum * (v / (Md - 1)));
      }
    } else {
      for (int64_t c = 0; c < C; c++) {
        mean[c] = rmp[c];
        invstd[c] = 1.0 / std::sqrt(static_cast<double>(rvp[c]) + eps);
      }
    }
    std::vector<float> scale(C), shift(C), sl;
    for (int64_t c = 0; c < C; c++) {
      const double s = invstd[c] * (wp ? static_cast<double>(wp[c]) : 1.0);
      scale[c] = static_cast<float>(s);
      shift[c] = static_cast<float>((bp ? static_cast<double>(bp[c]) : 0.0) - mean[c] * s);
    }
    if (mop) std::copy(mean.begin(), mean.end(), mop);
    if (iop) std::copy(invstd.begin(), invstd.end(), iop);
    const std::vector<float> ea = extended(scale.data(), C), eb = extended(shift.data(), C);
    AffineArgs A;
    A.x = xp;
    A.y = op;
    A.C = C;
    A.a = ea.data();
    A.b = eb.data();
    A.stream = M * C * 8 >= stream_bytes();
    if (sp) {
      if (shared_slope) {
        sl.assign(C + 16, sp[0]);
      } else {
        sl = extended(sp, C);
      }
      A.slope = sl.data();
    }
    rows_parallel(M, C, [&](int64_t r0, int64_t r1) { af(A, r0, r1); });
  };
  return p;
}

Prepared prep_bn_backward(const Napi::CallbackInfo& info) {
  Args a(info, "batchNormBackward");
  const std::string want = a.string("variant", "");
  const BnGradSumsFn gs = pick(a, bn_grad_sums_kernel(), want);
  const BnBackwardDxFn dx = pick(a, bn_backward_dx_kernel(), want);
  const BnPreluSumsFn ps = pick(a, bn_prelu_sums_kernel(), want);
  Span<float> g = a.array<float>("gradOut", 0);
  const int64_t n = static_cast<int64_t>(g.length);
  const int64_t C = a.integer("channels", 1, kMax);
  const int64_t M = rows_of(a, "gradOut", n, C);
  Span<float> x = a.array<float>("x", n, "gradOut.length");
  Span<float> gi = a.array<float>("gradIn", n, "gradOut.length");
  Span<double> mean = per_channel<double>(a, "mean", C, true);
  Span<double> invstd = per_channel<double>(a, "invstd", C, true);
  Span<float> w = per_channel<float>(a, "weight", C, false);
  const bool training = a.boolean("training", true);
  Span<float> gw = per_channel<float>(a, "gradWeight", C, false);
  Span<float> gb = per_channel<float>(a, "gradBias", C, false);
  const bool acc = a.boolean("accumulate", false);
  // Fused PReLU (slope present): gradOut is the gradient of PReLU(BN(x)), the BN output recomputed from x with
  // bias; mask: a following fake quantizer's straight-through select; gradSlope: the slope gradient (output).
  Span<float> slope = per_channel<float>(a, "slope", C, false);
  const bool fused = slope.present();
  Span<float> bias = per_channel<float>(a, "bias", C, false);
  Span<uint8_t> mask = a.optional_array<uint8_t>("mask", n, "gradOut.length");
  Span<double> gsl = per_channel<double>(a, "gradSlope", C, false);
  if (!fused && (bias.present() || mask.present() || gsl.present()))
    throw_type(a.env(), std::string(a.fn()) + ": bias, mask and gradSlope need slope (the fused PReLU)");
  if (fused) {
    disjoint(a, "x", x.data, n * 4, "gradIn", gi.data, n * 4);
    if (mask.present()) disjoint(a, "mask", mask.data, n, "gradIn", gi.data, n * 4);
    disjoint(a, "slope", slope.data, C * 4, "gradIn", gi.data, n * 4);
  }
  if (training && M < 1) throw_range(a.env(), a.where("gradOut") + ": training needs at least 1 row");
  same_or_disjoint(a, "gradOut", g.data, n * 4, "gradIn", gi.data, n * 4);
  same_or_disjoint(a, "x", x.data, n * 4, "gradIn", gi.data, n * 4);
  if (gw.present()) disjoint(a, "gradWeight", gw.data, C * 4, "gradIn", gi.data, n * 4);
  if (gb.present()) disjoint(a, "gradBias", gb.data, C * 4, "gradIn", gi.data, n * 4);
  if (gw.present() && gb.present()) disjoint(a, "gradWeight", gw.data, C * 4, "gradBias", gb.data, C * 4);
  Prepared p;
  p.keep = {g.value,  x.value,  gi.value,    mean.value,  invstd.value, w.value,
            gw.value, gb.value, slope.value, bias.value, mask.value,   gsl.value};
  const float* slp = fused ? slope.data : nullptr;
  const float* biasp = bias.present() ? bias.data : nullptr;
  const uint8_t* maskp = mask.present() ? mask.data : nullptr;
  double* gslp = gsl.present() ? gsl.data : nullptr;
  const float* gp = g.data;
  const float* xp = x.data;
  float* gip = gi.data;
  const double* mp = mean.data;
  const double* ip = invstd.data;
  const float* wp = w.present() ? w.data : nullptr;
  float* gwp = gw.present() ? gw.data : nullptr;
  float* gbp = gb.present() ? gb.data : nullptr;
  p.run = [=]() {
    std::vector<double> sg(C), sgx(C);
    const float* gsrc = gp;  // the gradient at the BN output
    if (slp) {
      // Pass 1: gy (the gradient at the BN output) into gradIn, and the sums.
      std::vector<float> sc(C), sh(C);
      for (int64_t c = 0; c < C; c++) {  // as batchNormForward computes its affine
        const double s = ip[c] * (wp ? static_cast<double>(wp[c]) : 1.0);
        sc[c] = static_cast<float>(s);
        sh[c] = static_cast<float>((biasp ? static_cast<double>(biasp[c]) : 0.0) - mp[c] * s);
      }
      const std::vector<float> ea = extended(sc.data(), C), eb = extended(sh.data(), C), es = extended(slp, C);
      BnPreluArgs B;
      B.x = xp;
      B.g = gp;
      B.mask = maskp;
      B.gy = gip;
      B.C = C;
      B.a = ea.data();
      B.b = eb.data();
      B.slope = es.data();
      B.center = mp;
      std::vector<double> sa(C);
      double* outs[3] = {sg.data(), sgx.data(), sa.data()};
      blocked_sums(M, C, 3, outs, [&](int64_t r0, int64_t r1, double* const* part) {
        ps(B, r0, r1, part[0], part[1], part[2]);
      });
      if (gslp) std::copy(sa.begin(), sa.end(), gslp);
      gsrc = gip;
    }
    if (slp || training || gwp || gbp) {
      if (!slp) {
        double* outs[2] = {sg.data(), sgx.data()};
        blocked_sums(M, C, 2, outs, [&](int64_t r0, int64_t r1, double* const* part) {
          gs(xp, gp, C, mp, r0, r1, part[0], part[1]);
        });
      }
      for (int64_t c = 0; c < C; c++) sgx[c] *= ip[c];
      for (int64_t c = 0; c < C; c++) {
        if (gwp) gwp[c] = static_cast<float>((acc ? static_cast<double>(gwp[c]) : 0.0) + sgx[c]);
        if (gbp) gbp[c] = static_cast<float>((acc ? static_cast<double>(gbp[c]) : 0.0) + sg[c]);
      }
    }
    std::vector<float> va(C), vb(C), vk, vm;
    const double Md = static_cast<double>(M);
    if (training) {
      vk.resize(C);
      vm.resize(C);
    }
    for (int64_t c = 0; c < C; c++) {
      const double ac = ip[c] * (wp ? static_cast<double>(wp[c]) : 1.0);
      va[c] = static_cast<float>(ac);
      if (training) {
        // dx = ac (g - sg/M - xhat sgx/M) = ac g + bc (x - mean) + cc,  bc = -ac invstd sgx / M, cc = -ac sg / M;
        // x - mean is taken against the float mean mf: + bc (mf - mean) folded into the constant.
        const double bc = (-ac * ip[c] * sgx[c]) / Md;
        const float mf = static_cast<float>(mp[c]);
        vk[c] = static_cast<float>(bc);
        vm[c] = mf;
        vb[c] = static_cast<float>((-ac * sg[c]) / Md + bc * (static_cast<double>(mf) - mp[c]));
      } else {
        vb[c] = 0.f;
      }
    }
    const std::vector<float> ea = extended(va.data(), C), eb = extended(vb.data(), C);
    std::vector<float> ek, em;
    if (training) {
      ek = extended(vk.data(), C);
      em = extended(vm.data(), C);
    }
    DxArgs A;
    A.x = xp;
    A.g = gsrc;
    A.gi = gip;
    A.C = C;
    A.a = ea.data();
    A.b = eb.data();
    A.k = training ? ek.data() : nullptr;
    A.m = training ? em.data() : nullptr;
    A.stream = M * C * (training ? 12 : 8) >= stream_bytes();
    rows_parallel(M, C, [&](int64_t r0, int64_t r1) { dx(A, r0, r1); });
  };
  return p;
}

Prepared prep_prelu(const Napi::CallbackInfo& info) {
  Args a(info, "prelu");
  const ChannelAffineFn af = pick(a, channel_affine_kernel(), a.string("variant", ""));
  Span<float> x = a.array<float>("x", 0);
  const int64_t n = static_cast<int64_t>(x.length);
  Span<float> slope = a.array<float>("slope", 1);
  const int64_t C = static_cast<int64_t>(slope.length);
  const int64_t M = rows_of(a, "x", n, C);
  Span<float> out = a.array<float>("out", n, "x.length");
  same_or_disjoint(a, "x", x.data, n * 4, "out", out.data, n * 4);
  disjoint(a, "slope", slope.data, C * 4, "out", out.data, n * 4);
  Prepared p;
  p.keep = {x.value, out.value, slope.value};
  const float* xp = x.data;
  float* op = out.data;
  const float* sp = slope.data;
  p.run = [=]() {
    const std::vector<float> es = extended(sp, C);
    AffineArgs A;
    A.x = xp;
    A.y = op;
    A.C = C;
    A.slope = es.data();
    A.stream = M * C * 8 >= stream_bytes();
    rows_parallel(M, C, [&](int64_t r0, int64_t r1) { af(A, r0, r1); });
  };
  return p;
}

Prepared prep_prelu_backward(const Napi::CallbackInfo& info) {
  Args a(info, "preluBackward");
  const PreluBackwardFn fn = pick(a, prelu_backward_kernel(), a.string("variant", ""));
  Span<float> g = a.array<float>("gradOut", 0);
  const int64_t n = static_cast<int64_t>(g.length);
  Span<float> slope = a.array<float>("slope", 1);
  const int64_t C = static_cast<int64_t>(slope.length);
  const int64_t M = rows_of(a, "gradOut", n, C);
  Span<float> x = a.array<float>("x", n, "gradOut.length");
  Span<float> gi = a.array<float>("gradIn", n, "gradOut.length");
  Span<double> gs = a.optional_array<double>("gradSlope", C, "slope.length");
  Span<uint8_t> mask = a.optional_array<uint8_t>("mask", n, "gradOut.length");
  same_or_disjoint(a, "gradOut", g.data, n * 4, "gradIn", gi.data, n * 4);
  if (mask.present()) disjoint(a, "mask", mask.data, n, "gradIn", gi.data, n * 4);
  same_or_disjoint(a, "x", x.data, n * 4, "gradIn", gi.data, n * 4);
  disjoint(a, "slope", slope.data, C * 4, "gradIn", gi.data, n * 4);
  Prepared p;
  p.keep = {g.value, x.value, gi.value, slope.value, gs.value, mask.value};
  const uint8_t* mp = mask.present() ? mask.data : nullptr;
  const float* gp = g.data;
  const float* xp = x.data;
  float* gip = gi.data;
  const float* sp = slope.data;
  double* gsp = gs.present() ? gs.data : nullptr;
  p.run = [=]() {
    std::vector<double> sa(C);
    double* outs[1] = {sa.data()};
    blocked_sums(M, C, 1, outs, [&](int64_t r0, int64_t r1, double* const* part) {
      fn(xp, gp, mp, gip, C, sp, r0, r1, part[0]);
    });
    if (gsp) std::copy(sa.begin(), sa.end(), gsp);
  };
  return p;
}

void init_train_ew(Napi::Env env, Napi::Object exports) {
  QF_EXPORT_SYNC_ASYNC(exports, env, "batchNormForward", prep_bn_forward);
  QF_EXPORT_SYNC_ASYNC(exports, env, "batchNormBackward", prep_bn_backward);
  QF_EXPORT_SYNC_ASYNC(exports, env, "prelu", prep_prelu);
  QF_EXPORT_SYNC_ASYNC(exports, env, "preluBackward", prep_prelu_backward);
}

}  // namespace
QF_REGISTER_EXPORTS(init_train_ew)
}  // namespace napi
}  // namespace qf
