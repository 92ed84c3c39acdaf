// Learned-range kernels: variant tables, the xorshift32 jump-ahead, threading,
// and the N-API surface (binding.d.ts, section "learned ranges"; semantics:
// learned_quant.h).
//
// Threading, and why results do not depend on the thread count:
// - qdropFakeQuantize splits the tensor into chunks; each chunk starts from
//   the stream's state at its first element (a jump), so every element gets
//   the same random number as in the sequential loop.
// - learnedRangeBackward's sums are sequential float64 sums in element order
//   (bit-identical to the JS loops, whatever the thread count): per channel,
//   channels run in parallel; for one channel (activations) with more than
//   one thread, one thread walks the sums while the others write gradIn.
#include "learned_quant.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>

#include "napi_util.h"

namespace qf {

QF_KERNEL(qdrop_fake_quantize_kernel, QDropFakeQuantizeFn, "qdrop_fake_quantize",
          {QF_X86({"qdrop_fake_quantize_avx512", Isa::Avx512, qdrop_fake_quantize_avx512},)
           QF_X86({"qdrop_fake_quantize_avx2", Isa::Avx2, qdrop_fake_quantize_avx2},)
           {"qdrop_fake_quantize_ref", Isa::Scalar, qdrop_fake_quantize_ref}})
QF_KERNEL(learned_range_backward_kernel, LearnedRangeBackwardFn, "learned_range_backward",
          {QF_X86({"learned_range_backward_avx512", Isa::Avx512, learned_range_backward_avx512},)
           QF_X86({"learned_range_backward_avx2", Isa::Avx2, learned_range_backward_avx2},)
           {"learned_range_backward_ref", Isa::Scalar, learned_range_backward_ref}})

namespace {

inline uint32_t xorshift_step(uint32_t st) {
  st ^= st << 13;
  st ^= st >> 17;
  st ^= st << 5;
  return st;
}

inline uint32_t matvec(const uint32_t* cols, uint32_t v) {
  uint32_t r = 0;
  for (int c = 0; c < 32; c++)
    if ((v >> c) & 1u) r ^= cols[c];
  return r;
}

}  // namespace

const JumpTable& jump_table() {
  static const struct Table {
    JumpTable t;
    Table() {
      for (int c = 0; c < 32; c++) t[0][c] = xorshift_step(uint32_t(1) << c);
      for (int p = 1; p < kJumpBits; p++)
        for (int c = 0; c < 32; c++) t[p][c] = matvec(t[p - 1], t[p - 1][c]);  // T^(2^p) = (T^(2^(p-1)))^2
    }
  } table;
  return table.t;
}

uint32_t xorshift_jump(uint32_t st, uint64_t k) {
  if (k < 64) {  // short jumps: step
    for (uint64_t i = 0; i < k; i++) st = xorshift_step(st);
    return st;
  }
  const JumpTable& t = jump_table();
  for (int p = 0; p < kJumpBits && k; p++, k >>= 1)
    if (k & 1) st = matvec(t[p], st);
  return st;
}

namespace {

constexpr int64_t kBlock = 64;
constexpr int64_t kGrainBlocks = 2048;  // >= 128K elements per thread

template <class F>
void for_blocks(int64_t n, F&& fn) {
  const int64_t nb = (n + kBlock - 1) / kBlock;
  parallel_for(nb, kGrainBlocks, [&](int64_t b0, int64_t b1) { fn(b0 * kBlock, std::min(n, b1 * kBlock)); });
}

}  // namespace

// Returns the stream's state after the last element.
uint32_t qdrop_fake_quantize_tensor(QDropFakeQuantizeFn fn, const float* x, float* out, uint8_t* drop, int64_t n,
                                    float scale, int32_t zp, int32_t qmin, int32_t qmax, uint64_t threshold,
                                    uint32_t seed) {
  for_blocks(n, [&](int64_t b, int64_t e) {
    QDropRun r;
    r.x = x + b;
    r.out = out + b;
    r.drop = drop + b;
    r.n = e - b;
    r.scale = scale;
    r.zp = zp;
    r.qmin = qmin;
    r.qmax = qmax;
    r.threshold = threshold;
    r.state = xorshift_jump(seed, static_cast<uint64_t>(b));
    fn(r);
  });
  return xorshift_jump(seed, static_cast<uint64_t>(n));
}

// Element i belongs to channel i / inner (n = channels * inner); sums: 3 per channel (lo, hi, s), written.
void learned_range_backward_tensor(LearnedRangeBackwardFn fn, const float* x, const float* g, float* gi,
                                   const uint8_t* drop, int64_t channels, int64_t inner, const float* scale,
                                   const int32_t* zp, int32_t qmin, int32_t qmax, double* sums) {
  auto run_of = [&](int64_t c, int64_t b, int64_t e, bool with_gi) {
    RangeGradRun r;
    const int64_t o = c * inner + b;
    r.x = x + o;
    r.g = g + o;
    r.gi = (gi && with_gi) ? gi + o : nullptr;
    r.drop = drop ? drop + o : nullptr;
    r.n = e - b;
    r.scale = scale[c];
    r.zp = zp[c];
    r.qmin = qmin;
    r.qmax = qmax;
    return r;
  };
  if (channels > 1) {
    parallel_for(channels, std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(inner, 1)),
                 [&](int64_t c0, int64_t c1) {
                   for (int64_t c = c0; c < c1; c++) {
                     RangeGradSums s;
                     fn(run_of(c, 0, inner, true), sums ? &s : nullptr);
                     if (sums) {
                       sums[3 * c] = s.lo;
                       sums[3 * c + 1] = s.hi;
                       sums[3 * c + 2] = s.s;
                     }
                   }
                 });
    return;
  }
  const int64_t n = inner;
  RangeGradSums s;
  // One channel: the sums are one sequential chain. With threads and a gradIn to
  // write, thread 0 walks the chain while the others write gradIn.
  // (Not in place: the chain reads gradOut, which gradIn would overwrite.)
  const bool split = gi != nullptr && gi != g && sums != nullptr && n >= (int64_t(1) << 16) && num_threads() > 1;
  if (split) {
    parallel_run(num_threads(), [&](int t, int nt) {
      if (nt < 2) {  // the pool was busy: this call runs alone, fused
        fn(run_of(0, 0, n, true), &s);
        return;
      }
      if (t == 0) {
        fn(run_of(0, 0, n, false), &s);
        return;
      }
      const int64_t nb = (n + kBlock - 1) / kBlock;
      const int64_t b = nb * (t - 1) / (nt - 1) * kBlock, e = std::min(n, nb * t / (nt - 1) * kBlock);
      if (e > b) fn(run_of(0, b, e, true), nullptr);
    });
  } else {
    fn(run_of(0, 0, n, true), sums ? &s : nullptr);
  }
  if (sums) {
    sums[0] = s.lo;
    sums[1] = s.hi;
    sums[2] = s.s;
  }
}

// ---------------------------------------------------------------- N-API
namespace napi {
namespace {

constexpr int64_t kMaxLen = int64_t(1) << 53;
constexpr int64_t kFakeLimit = (int64_t(1) << 24) - 1;
constexpr int64_t kFakeMaxSpan = 65535;

template <class Fn>
Fn pick_variant(const Args& a, const Kernel<Fn>& k) {
  std::string want = a.string("variant", "");
  const Variant<Fn>* v = k.find(want);
  if (!v) {
    std::string all;
    for (const auto& x : k.variants) all += (all.empty() ? "" : ", ") + std::string(x.name);
    throw_range(a.env(), a.where("variant") + " '" + want + "' is unknown or not supported on this CPU (variants: " +
                             all + ")");
  }
  return v->fn;
}

bool overlaps(const void* a, size_t abytes, const void* b, size_t bbytes) {
  if (abytes == 0 || bbytes == 0) return false;
  const uintptr_t a0 = reinterpret_cast<uintptr_t>(a), b0 = reinterpret_cast<uintptr_t>(b);
  return a0 < b0 + bbytes && b0 < a0 + abytes;
}
void no_overlap(const Args& a, const char* ka, const void* pa, size_t na, const char* kb, const void* pb, size_t nb) {
  if (overlaps(pa, na, pb, nb))
    throw_range(a.env(), std::string(a.fn()) + ": " + ka + " and " + kb + " must not share memory");
}
void same_or_disjoint(const Args& a, const char* ka, const void* pa, size_t na, const char* kb, const void* pb,
                      size_t nb) {
  if (pa == pb) return;
  if (overlaps(pa, na, pb, nb))
    throw_range(a.env(), std::string(a.fn()) + ": " + ka + " and " + kb + " overlap (they may only be the same array)");
}

void read_range(const Args& a, int32_t& qmin, int32_t& qmax) {
  const int64_t big = int64_t(1) << 40;
  const int64_t mn = a.integer("quantMin", -big, big), mx = a.integer("quantMax", -big, big);
  if (mn < -kFakeLimit || mn > kFakeLimit)
    throw_range(a.env(), a.where("quantMin") + " = " + std::to_string(mn) + " must be in [-(2^24 - 1), 2^24 - 1]");
  if (mx < -kFakeLimit || mx > kFakeLimit)
    throw_range(a.env(), a.where("quantMax") + " = " + std::to_string(mx) + " must be in [-(2^24 - 1), 2^24 - 1]");
  if (mn >= mx)
    throw_range(a.env(), a.where("quantMin") + " = " + std::to_string(mn) + " must be < quantMax = " + std::to_string(mx));
  if (mx - mn > kFakeMaxSpan)
    throw_range(a.env(), a.where("quantMax") + " - quantMin = " + std::to_string(mx - mn) + " must be <= 65535");
  qmin = static_cast<int32_t>(mn);
  qmax = static_cast<int32_t>(mx);
}

template <class T>
Span<T> read_per_channel(const Args& a, const char* key, int64_t channels) {
  Span<T> s = a.array<T>(key, 0);
  if (static_cast<int64_t>(s.length) != channels)
    throw_range(a.env(), a.where(key) + " has " + std::to_string(s.length) + " elements; expected channels = " +
                             std::to_string(channels));
  return s;
}

void check_params(const Args& a, const Span<float>& s, const Span<int32_t>& z, int32_t qmin, int32_t qmax) {
  for (size_t c = 0; c < s.length; c++) {
    const float v = s.data[c];
    if (!(v > 0.0f) || !std::isfinite(v))
      throw_range(a.env(), std::string(a.fn()) + ": scale[" + std::to_string(c) + "] must be finite and > 0 (got " +
                               std::to_string(v) + ")");
  }
  for (size_t c = 0; c < z.length; c++)
    if (z.data[c] < qmin || z.data[c] > qmax)
      throw_range(a.env(), std::string(a.fn()) + ": zeroPoint[" + std::to_string(c) + "] = " +
                               std::to_string(z.data[c]) + " is outside [quantMin, quantMax] = [" +
                               std::to_string(qmin) + ", " + std::to_string(qmax) + "]");
}

Prepared prep_qdrop(const Napi::CallbackInfo& info) {
  Args a(info, "qdropFakeQuantize");
  QDropFakeQuantizeFn fn = pick_variant(a, qdrop_fake_quantize_kernel());
  Span<float> x = a.array<float>("x", 0);
  const int64_t n = static_cast<int64_t>(x.length);
  Span<float> out = a.array<float>("out", n, "x.length");
  Span<uint8_t> drop = a.array<uint8_t>("drop", n, "x.length");
  int32_t qmin, qmax;
  read_range(a, qmin, qmax);
  Span<float> scale = read_per_channel<float>(a, "scale", 1);
  Span<int32_t> zp = read_per_channel<int32_t>(a, "zeroPoint", 1);
  check_params(a, scale, zp, qmin, qmax);
  const uint64_t thr = static_cast<uint64_t>(a.integer("threshold", 0, int64_t(1) << 32));
  const uint32_t seed = static_cast<uint32_t>(a.integer("seed", 0, (int64_t(1) << 32) - 1));
  same_or_disjoint(a, "x", x.data, n * 4, "out", out.data, n * 4);
  no_overlap(a, "drop", drop.data, n, "x", x.data, n * 4);
  no_overlap(a, "drop", drop.data, n, "out", out.data, n * 4);
  Prepared p;
  p.keep = {x.value, out.value, drop.value, scale.value, zp.value};
  const float* xp = x.data;
  float* op = out.data;
  uint8_t* dp = drop.data;
  const float s = scale.data[0];
  const int32_t z = zp.data[0];
  auto state = std::make_shared<uint32_t>(0);
  p.run = [=]() { *state = qdrop_fake_quantize_tensor(fn, xp, op, dp, n, s, z, qmin, qmax, thr, seed); };
  p.result = [state](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, static_cast<double>(*state)); };
  return p;
}

Prepared prep_backward(const Napi::CallbackInfo& info) {
  Args a(info, "learnedRangeBackward");
  LearnedRangeBackwardFn fn = pick_variant(a, learned_range_backward_kernel());
  Span<float> x = a.array<float>("x", 0);
  const int64_t n = static_cast<int64_t>(x.length);
  Span<float> g = a.array<float>("gradOut", n, "x.length");
  Span<float> gi = a.optional_array<float>("gradIn", n, "x.length");
  Span<uint8_t> drop = a.optional_array<uint8_t>("drop", n, "x.length");
  const int64_t channels = a.integer("channels", 1, kMaxLen, 1);
  if (n % channels != 0)
    throw_range(a.env(), a.where("x") + " has " + std::to_string(n) + " elements, not a multiple of channels = " +
                             std::to_string(channels));
  const int64_t inner = a.integer("inner", 0, kMaxLen, n / channels);
  if (checked_mul(a.env(), a.fn(), channels, inner, "channels * inner") != n)
    throw_range(a.env(), a.where("inner") + " = " + std::to_string(inner) + ": channels * inner must equal x.length = " +
                             std::to_string(n));
  int32_t qmin, qmax;
  read_range(a, qmin, qmax);
  Span<float> scale = read_per_channel<float>(a, "scale", channels);
  Span<int32_t> zp = read_per_channel<int32_t>(a, "zeroPoint", channels);
  check_params(a, scale, zp, qmin, qmax);
  Span<double> sums = a.optional_array<double>("sums", 3 * channels, "3 * channels");
  const size_t fb = static_cast<size_t>(n) * 4;
  if (gi.present()) {
    same_or_disjoint(a, "gradOut", g.data, fb, "gradIn", gi.data, fb);
    no_overlap(a, "gradIn", gi.data, fb, "x", x.data, fb);
    if (drop.present()) no_overlap(a, "drop", drop.data, static_cast<size_t>(n), "gradIn", gi.data, fb);
  }
  if (sums.present()) {
    const size_t sb = static_cast<size_t>(3 * channels) * 8;
    no_overlap(a, "sums", sums.data, sb, "x", x.data, fb);
    no_overlap(a, "sums", sums.data, sb, "gradOut", g.data, fb);
    if (gi.present()) no_overlap(a, "sums", sums.data, sb, "gradIn", gi.data, fb);
    if (drop.present()) no_overlap(a, "sums", sums.data, sb, "drop", drop.data, static_cast<size_t>(n));
  }
  Prepared p;
  p.keep = {x.value, g.value, scale.value, zp.value};
  if (gi.present()) p.keep.push_back(gi.value);
  if (drop.present()) p.keep.push_back(drop.value);
  if (sums.present()) p.keep.push_back(sums.value);
  const float* xp = x.data;
  const float* gp = g.data;
  float* gip = gi.present() ? gi.data : nullptr;
  const uint8_t* dp = drop.present() ? drop.data : nullptr;
  const float* sp = scale.data;
  const int32_t* zpp = zp.data;
  double* smp = sums.present() ? sums.data : nullptr;
  p.run = [=]() {
    if (n == 0) {
      if (smp)
        for (int64_t k = 0; k < 3 * channels; k++) smp[k] = 0;
      return;
    }
    learned_range_backward_tensor(fn, xp, gp, gip, dp, channels, inner, sp, zpp, qmin, qmax, smp);
  };
  return p;
}

void init_learned_quant(Napi::Env env, Napi::Object exports) {
  QF_EXPORT_SYNC_ASYNC(exports, env, "qdropFakeQuantize", prep_qdrop);
  QF_EXPORT_SYNC_ASYNC(exports, env, "learnedRangeBackward", prep_backward);
}

}  // namespace
QF_REGISTER_EXPORTS(init_learned_quant)
}  // namespace napi

}  // namespace qf
