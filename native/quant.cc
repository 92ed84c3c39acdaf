// Quantization kernels: variant tables, layout walking and threading, bit
// packing, and the N-API surface (binding.d.ts, section "quantization").
//
// Decisions (also documented in binding.d.ts):
// - NaN x: quantize gives q = zeroPoint (NaN is treated as 0); fakeQuantize
//   propagates it (out = NaN) with mask = 0. +-Inf clamp to quantMin/quantMax
//   with mask = 0.
// - fakeQuantizeBackward with a mask is a select: gradIn = mask ? gradOut : +0
//   (a NaN gradient outside the range is dropped); with accumulate, gradIn is
//   left untouched where mask = 0. Any nonzero mask byte passes.
// - minMax: NaN ignored; an empty or all-NaN channel gives min = +Infinity,
//   max = -Infinity (so min > max flags "no data"); a zero result is +0.
// - Per-channel arrays (scale, zeroPoint, min, max) must have exactly
//   `channels` elements: a per-channel scale passed without `channels` is an
//   error rather than a silent per-tensor quantization with scale[0].
#include "quant.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>  // _mm_sfence (SSE: baseline x86-64)
#define QF_STREAM_FENCE() _mm_sfence()
#else
#include <atomic>
#define QF_STREAM_FENCE() std::atomic_thread_fence(std::memory_order_release)
#endif

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <string>

#include "napi_util.h"

namespace qf {

QF_KERNEL(quantize_kernel, QuantizeFn, "quantize",
          {QF_X86({"quantize_avx512", Isa::Avx512, quantize_avx512},)
           QF_X86({"quantize_avx2", Isa::Avx2, quantize_avx2},)
           QF_ARM64({"quantize_neon", Isa::Neon, quantize_neon},)
           {"quantize_ref", Isa::Scalar, quantize_ref}})
QF_KERNEL(dequantize_kernel, DequantizeFn, "dequantize",
          {QF_X86({"dequantize_avx512", Isa::Avx512, dequantize_avx512},)
           QF_X86({"dequantize_avx2", Isa::Avx2, dequantize_avx2},)
           QF_ARM64({"dequantize_neon", Isa::Neon, dequantize_neon},)
           {"dequantize_ref", Isa::Scalar, dequantize_ref}})
QF_KERNEL(fake_quantize_kernel, FakeQuantizeFn, "fake_quantize",
          {QF_X86({"fake_quantize_avx512", Isa::Avx512, fake_quantize_avx512},)
           QF_X86({"fake_quantize_avx2", Isa::Avx2, fake_quantize_avx2},)
           QF_ARM64({"fake_quantize_neon", Isa::Neon, fake_quantize_neon},)
           {"fake_quantize_ref", Isa::Scalar, fake_quantize_ref}})
QF_KERNEL(fake_quantize_backward_kernel, FakeQuantizeBackwardFn, "fake_quantize_backward",
          {QF_X86({"fake_quantize_backward_avx512", Isa::Avx512, fake_quantize_backward_avx512},)
           QF_X86({"fake_quantize_backward_avx2", Isa::Avx2, fake_quantize_backward_avx2},)
           QF_ARM64({"fake_quantize_backward_neon", Isa::Neon, fake_quantize_backward_neon},)
           {"fake_quantize_backward_ref", Isa::Scalar, fake_quantize_backward_ref}})
QF_KERNEL(min_max_kernel, MinMaxFn, "min_max",
          {QF_X86({"min_max_avx512", Isa::Avx512, min_max_avx512},)
           QF_X86({"min_max_avx2", Isa::Avx2, min_max_avx2},)
           QF_ARM64({"min_max_neon", Isa::Neon, min_max_neon},)
           {"min_max_ref", Isa::Scalar, min_max_ref}})

namespace {

// ---------------------------------------------------------------- layout plan
// Elements are processed in blocks of kBlock (threads split at block edges, so
// no two threads write the same cache line of a 4-byte output).
constexpr int64_t kBlock = 64;
constexpr int64_t kGrainBlocks = 2048;        // >= 128K elements per thread
constexpr int64_t kConstRunMinInner = 64;     // per-channel runs this long use broadcast parameters
constexpr int64_t kExpandMinPeriod = 512;     // expanded parameter arrays: period at least this long
constexpr int64_t kExpandRun = 512;           // and runs at most this long (arrays: period + run,
                                              // ~8 KB for short patterns: they stay in L1)
constexpr int64_t kExpandMaxPeriod = 1 << 20; // beyond this (with inner > 1): per-channel runs
constexpr int64_t kStreamMinRun = 4096;       // per-channel runs shorter than this: no streaming stores

enum class Mode { Tensor, ChannelRuns, Expanded };

struct Plan {
  QuantLayout L;
  Mode mode = Mode::Tensor;
  const float* scale = nullptr;  // per channel
  const int32_t* zp = nullptr;
  // Expanded: element i uses scale_e[k], zp_e[k] for any k = i (mod period),
  // k < period + kExpandRun (the arrays continue the pattern past one period,
  // so a run may start anywhere in the period).
  int64_t period = 0;
  int64_t slots = 0;  // period + kExpandRun
  const float* scale_e = nullptr;
  const int32_t* zp_e = nullptr;
  AlignedBuf<float> sbuf;
  AlignedBuf<int32_t> zbuf;
};

// scale/zp may be null (minMax: only the mode and period are needed).
void make_plan(Plan& P, const QuantLayout& L, const float* scale, const int32_t* zp) {
  P.L = L;
  P.scale = scale;
  P.zp = zp;
  if (L.channels == 1) {
    P.mode = Mode::Tensor;
    return;
  }
  const int64_t M = L.channels * L.inner;
  if (L.inner >= kConstRunMinInner || (M > kExpandMaxPeriod && L.inner > 1)) {
    P.mode = Mode::ChannelRuns;
    return;
  }
  P.mode = Mode::Expanded;
  P.period = M >= kExpandMinPeriod ? M : M * ((kExpandMinPeriod + M - 1) / M);
  P.slots = P.period + kExpandRun;
  if (scale) {
    P.sbuf.resize(static_cast<size_t>(P.slots));
    P.zbuf.resize(static_cast<size_t>(P.slots));
    for (int64_t k = 0; k < P.slots; k++) {
      const int64_t c = (k / L.inner) % L.channels;
      P.sbuf.p[k] = scale[c];
      P.zbuf.p[k] = zp[c];
    }
    P.scale_e = P.sbuf.p;
    P.zp_e = P.zbuf.p;
  }
}

// Whether runs of this plan are long enough for non-temporal stores.
bool plan_streams(const Plan& P) { return P.mode != Mode::ChannelRuns || P.L.inner >= kStreamMinRun; }

// f(start, len, scale, zp, per_elem, key): key = channel (Tensor/ChannelRuns) or
// slot of the first element (Expanded). `out`/`out_size`: the output array and
// its element size (or null): Expanded runs end on its 64-byte line boundaries,
// so no cache line is written half by one run and half by the next (that
// defeats non-temporal stores).
template <class F>
void walk(const Plan& P, int64_t b, int64_t e, const void* out, int out_size, F&& f) {
  switch (P.mode) {
    case Mode::Tensor:
      if (e > b) f(b, e - b, P.scale, P.zp, false, int64_t(0));
      return;
    case Mode::ChannelRuns:
      for (int64_t i = b; i < e;) {
        const int64_t blk = i / P.L.inner;
        const int64_t c = blk % P.L.channels;
        const int64_t end = std::min(e, (blk + 1) * P.L.inner);
        f(i, end - i, P.scale ? P.scale + c : nullptr, P.zp ? P.zp + c : nullptr, false, c);
        i = end;
      }
      return;
    case Mode::Expanded: {
      // Run ends are at indices j = c (mod q): out + j is 64-byte aligned.
      int64_t q = 1, c = 0;
      if (out) {
        q = 64 / out_size;
        c = static_cast<int64_t>((64 - (reinterpret_cast<uintptr_t>(out) & 63)) & 63) / out_size;
      }
      for (int64_t i = b; i < e;) {
        int64_t j = i + kExpandRun;
        j -= (j - c) % q;  // j - c >= 0: c < q <= kExpandRun
        const int64_t end = std::min(e, j);
        const int64_t pos = i % P.period;
        f(i, end - i, P.scale_e ? P.scale_e + pos : nullptr, P.zp_e ? P.zp_e + pos : nullptr, true, pos);
        i = end;
      }
      return;
    }
  }
}

// Calls whose footprint (bytes read + written) is at least this large write
// their output with non-temporal stores (where a variant supports them): the
// output would be evicted by the streamed data anyway (this CPU's effective L3
// is 4-10 MB), and skipping the read-for-ownership saves memory traffic.
// QUANTFACE_STREAM_BYTES overrides it (a tuning knob; -1 = never stream).
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

// Runs fn(b, e) over [0, n) on the pool, split at multiples of kBlock.
template <class F>
void for_blocks(int64_t n, F&& fn) {
  const int64_t nb = (n + kBlock - 1) / kBlock;
  parallel_for(nb, kGrainBlocks, [&](int64_t b0, int64_t b1) { fn(b0 * kBlock, std::min(n, b1 * kBlock)); });
}

}  // namespace

void quantize_tensor(QuantizeFn fn, const QuantLayout& L, const float* x, void* out, const float* scale,
                     const int32_t* zp, int32_t qmin, int32_t qmax) {
  Plan P;
  make_plan(P, L, scale, zp);
  uint8_t* o = static_cast<uint8_t*>(out);
  const bool stream = L.n * 5 >= stream_bytes() && plan_streams(P);
  for_blocks(L.n, [&](int64_t b, int64_t e) {
    walk(P, b, e, o, 1, [&](int64_t i, int64_t len, const float* s, const int32_t* z, bool pe, int64_t) {
      QuantRun r;
      r.x = x + i;
      r.out = o + i;
      r.n = len;
      r.scale = s;
      r.zp = z;
      r.per_elem = pe;
      r.qmin = qmin;
      r.qmax = qmax;
      r.stream = stream;
      fn(r);
    });
    if (stream) QF_STREAM_FENCE();  // order this thread's non-temporal stores before the pool's join
  });
}

void fake_quantize_tensor(FakeQuantizeFn fn, const QuantLayout& L, const float* x, float* out, uint8_t* mask,
                          const float* scale, const int32_t* zp, int32_t qmin, int32_t qmax) {
  Plan P;
  make_plan(P, L, scale, zp);
  const bool stream = L.n * 8 >= stream_bytes() && plan_streams(P);
  for_blocks(L.n, [&](int64_t b, int64_t e) {
    walk(P, b, e, out, 4, [&](int64_t i, int64_t len, const float* s, const int32_t* z, bool pe, int64_t) {
      QuantRun r;
      r.x = x + i;
      r.out = out + i;
      r.mask = mask ? mask + i : nullptr;
      r.n = len;
      r.scale = s;
      r.zp = z;
      r.per_elem = pe;
      r.qmin = qmin;
      r.qmax = qmax;
      r.stream = stream;
      fn(r);
    });
    if (stream) QF_STREAM_FENCE();  // order this thread's non-temporal stores before the pool's join
  });
}

void dequantize_tensor(DequantizeFn fn, const QuantLayout& L, const void* q, bool q_signed, float* out,
                       const float* scale, const int32_t* zp) {
  Plan P;
  make_plan(P, L, scale, zp);
  const uint8_t* qb = static_cast<const uint8_t*>(q);
  const bool stream = L.n * 5 >= stream_bytes() && plan_streams(P);
  for_blocks(L.n, [&](int64_t b, int64_t e) {
    walk(P, b, e, out, 4, [&](int64_t i, int64_t len, const float* s, const int32_t* z, bool pe, int64_t) {
      DequantRun r;
      r.q = qb + i;
      r.q_signed = q_signed;
      r.out = out + i;
      r.n = len;
      r.scale = s;
      r.zp = z;
      r.per_elem = pe;
      r.stream = stream;
      fn(r);
    });
    if (stream) QF_STREAM_FENCE();  // order this thread's non-temporal stores before the pool's join
  });
}

void fake_quantize_backward_tensor(FakeQuantizeBackwardFn fn, const float* g, float* gi, const uint8_t* mask,
                                   int64_t n, bool accumulate) {
  const bool stream = n * 8 >= stream_bytes();
  for_blocks(n, [&](int64_t b, int64_t e) {
    fn(g + b, gi + b, mask ? mask + b : nullptr, e - b, accumulate, stream);
    if (stream) QF_STREAM_FENCE();
  });
}

void min_max_tensor(MinMaxFn fn, const QuantLayout& L, const float* x, float* mn, float* mx) {
  const float inf = std::numeric_limits<float>::infinity();
  for (int64_t c = 0; c < L.channels; c++) {
    mn[c] = inf;
    mx[c] = -inf;
  }
  Plan P;
  make_plan(P, L, nullptr, nullptr);
  std::mutex merge;
  for_blocks(L.n, [&](int64_t b, int64_t e) {
    // Thread-private accumulators: one pair per channel, or per position of the period.
    const int64_t slots = P.mode == Mode::Expanded ? P.slots : L.channels;
    AlignedBuf<float> lmn(static_cast<size_t>(slots)), lmx(static_cast<size_t>(slots));
    for (int64_t k = 0; k < slots; k++) {
      lmn.p[k] = inf;
      lmx.p[k] = -inf;
    }
    walk(P, b, e, nullptr, 0, [&](int64_t i, int64_t len, const float*, const int32_t*, bool pe, int64_t key) {
      fn(x + i, len, lmn.p + key, lmx.p + key, pe);
    });
    std::lock_guard<std::mutex> g(merge);
    for (int64_t k = 0; k < slots; k++) {
      const int64_t c = P.mode == Mode::Expanded ? (k / L.inner) % L.channels : k;
      if (lmn.p[k] < mn[c]) mn[c] = lmn.p[k];
      if (lmx.p[k] > mx[c]) mx[c] = lmx.p[k];
    }
  });
  for (int64_t c = 0; c < L.channels; c++) {  // zero sign depends on the order: return +0
    if (mn[c] == 0.0f) mn[c] = 0.0f;
    if (mx[c] == 0.0f) mx[c] = 0.0f;
  }
}

// ---------------------------------------------------------------- bit packing
namespace {

// 8 values <-> `B` bytes (little-endian host: x86).
template <int B>
inline void pack8(const uint8_t* q, uint8_t* out) {
  uint64_t v;
  std::memcpy(&v, q, 8);
  uint64_t acc = 0;
  for (int j = 0; j < 8; j++) acc |= ((v >> (8 * j)) & 0xffu) << (j * B);
  std::memcpy(out, &acc, B);
}
template <int B>
inline void unpack8(const uint8_t* in, uint8_t* q) {
  uint64_t acc = 0;
  std::memcpy(&acc, in, B);
  uint64_t v = 0;
  for (int j = 0; j < 8; j++) v |= ((acc >> (j * B)) & ((1u << B) - 1u)) << (8 * j);
  std::memcpy(q, &v, 8);
}

template <int B>
void pack_impl(const uint8_t* q, int64_t n, uint8_t* out) {
  const int64_t groups = n / 8;
  parallel_for(groups, 1 << 15, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; g++) pack8<B>(q + 8 * g, out + B * g);
  });
  const int64_t rem = n - groups * 8;
  if (rem > 0) {
    uint8_t tq[8] = {0}, tb[8] = {0};
    std::memcpy(tq, q + groups * 8, static_cast<size_t>(rem));
    pack8<B>(tq, tb);
    std::memcpy(out + groups * B, tb, static_cast<size_t>((rem * B + 7) / 8));
  }
}

template <int B>
void unpack_impl(const uint8_t* packed, int64_t n, uint8_t* out) {
  const int64_t groups = n / 8;
  parallel_for(groups, 1 << 15, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; g++) unpack8<B>(packed + B * g, out + 8 * g);
  });
  const int64_t rem = n - groups * 8;
  if (rem > 0) {
    uint8_t tb[8] = {0}, tq[8] = {0};
    std::memcpy(tb, packed + groups * B, static_cast<size_t>((rem * B + 7) / 8));
    unpack8<B>(tb, tq);
    std::memcpy(out + groups * 8, tq, static_cast<size_t>(rem));
  }
}

}  // namespace

int64_t pack_bits(const uint8_t* q, int64_t n, int bits, uint8_t* out) {
  if (bits < 8) {
    const uint8_t over = static_cast<uint8_t>(0xffu << bits);
    uint8_t any = 0;
    for (int64_t i = 0; i < n; i++) any |= q[i] & over;
    if (any)
      for (int64_t i = 0; i < n; i++)
        if (q[i] & over) return i;
  }
  switch (bits) {
    case 2: pack_impl<2>(q, n, out); break;
    case 3: pack_impl<3>(q, n, out); break;
    case 4: pack_impl<4>(q, n, out); break;
    case 5: pack_impl<5>(q, n, out); break;
    case 6: pack_impl<6>(q, n, out); break;
    case 7: pack_impl<7>(q, n, out); break;
    default: pack_impl<8>(q, n, out); break;
  }
  return -1;
}

void unpack_bits(const uint8_t* packed, int64_t n, int bits, uint8_t* out) {
  switch (bits) {
    case 2: unpack_impl<2>(packed, n, out); break;
    case 3: unpack_impl<3>(packed, n, out); break;
    case 4: unpack_impl<4>(packed, n, out); break;
    case 5: unpack_impl<5>(packed, n, out); break;
    case 6: unpack_impl<6>(packed, n, out); break;
    case 7: unpack_impl<7>(packed, n, out); break;
    default: unpack_impl<8>(packed, n, out); break;
  }
}

// ---------------------------------------------------------------- N-API
namespace napi {
namespace {

constexpr int64_t kMaxLen = int64_t(1) << 53;
constexpr int64_t kFakeLimit = (int64_t(1) << 24) - 1;  // |quantMin|, |quantMax| for fakeQuantize
constexpr int64_t kFakeMaxSpan = 65535;                 // quantMax - quantMin for fakeQuantize

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

// Same buffer (identical start) is allowed; any other overlap is not.
void same_or_disjoint(const Args& a, const char* ka, const void* pa, size_t na, const char* kb, const void* pb,
                      size_t nb) {
  if (pa == pb) return;
  if (overlaps(pa, na, pb, nb))
    throw_range(a.env(), std::string(a.fn()) + ": " + ka + " and " + kb + " overlap (they may only be the same array)");
}

QuantLayout read_layout(const Args& a, const char* xkey, int64_t n) {
  QuantLayout L;
  L.n = n;
  L.channels = a.integer("channels", 1, kMaxLen, 1);
  L.inner = a.integer("inner", 1, kMaxLen, 1);
  const int64_t M = checked_mul(a.env(), a.fn(), L.channels, L.inner, "channels * inner");
  if (n % M != 0)
    throw_range(a.env(), a.where(xkey) + " has " + std::to_string(n) + " elements, not a multiple of channels * inner = " +
                             std::to_string(M));
  return L;
}

// A typed array argument that is a Uint8Array or an Int8Array.
struct ByteArray {
  Span<uint8_t> span;
  bool is_signed = false;
};
ByteArray read_bytes(const Args& a, const char* key, int64_t min_len, const char* need) {
  Napi::Value v = a.get(key);
  if (v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == napi_int8_array) {
    Span<int8_t> s = a.to_span<int8_t>(v, key, min_len, need);
    ByteArray b;
    b.span.data = reinterpret_cast<uint8_t*>(s.data);
    b.span.length = s.length;
    b.span.value = s.value;
    b.is_signed = true;
    return b;
  }
  if (v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == napi_uint8_array) {
    ByteArray b;
    b.span = a.to_span<uint8_t>(v, key, min_len, need);
    return b;
  }
  throw_type(a.env(), a.where(key) + " must be a Uint8Array or an Int8Array (got " + describe(v) + ")");
}

template <class T>
Span<T> read_per_channel(const Args& a, const char* key, int64_t channels) {
  Span<T> s = a.array<T>(key, 0);
  if (static_cast<int64_t>(s.length) != channels)
    throw_range(a.env(), a.where(key) + " has " + std::to_string(s.length) + " elements; expected channels = " +
                             std::to_string(channels));
  return s;
}

void check_scale(const Args& a, const Span<float>& s) {
  for (size_t c = 0; c < s.length; c++) {
    const float v = s.data[c];
    if (!(v > 0.0f) || !std::isfinite(v))
      throw_range(a.env(), std::string(a.fn()) + ": scale[" + std::to_string(c) + "] must be finite and > 0 (got " +
                               std::to_string(v) + ")");
  }
}

void check_zero_point(const Args& a, const Span<int32_t>& z, int64_t lo, int64_t hi, const std::string& what) {
  for (size_t c = 0; c < z.length; c++) {
    const int64_t v = z.data[c];
    if (v < lo || v > hi)
      throw_range(a.env(), std::string(a.fn()) + ": zeroPoint[" + std::to_string(c) + "] = " + std::to_string(v) +
                               " is outside " + what + " = [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
}

void read_range(const Args& a, int64_t lo, int64_t hi, const std::string& what, int32_t& qmin, int32_t& qmax) {
  const int64_t big = int64_t(1) << 40;
  const int64_t mn = a.integer("quantMin", -big, big), mx = a.integer("quantMax", -big, big);
  if (mn < lo || mn > hi)
    throw_range(a.env(), a.where("quantMin") + " = " + std::to_string(mn) + " must be in [" + std::to_string(lo) + ", " +
                             std::to_string(hi) + "] " + what);
  if (mx < lo || mx > hi)
    throw_range(a.env(), a.where("quantMax") + " = " + std::to_string(mx) + " must be in [" + std::to_string(lo) + ", " +
                             std::to_string(hi) + "] " + what);
  if (mn >= mx)
    throw_range(a.env(), a.where("quantMin") + " = " + std::to_string(mn) + " must be < quantMax = " + std::to_string(mx));
  qmin = static_cast<int32_t>(mn);
  qmax = static_cast<int32_t>(mx);
}

Prepared prep_quantize(const Napi::CallbackInfo& info) {
  Args a(info, "quantize");
  QuantizeFn fn = pick_variant(a, quantize_kernel());
  Span<float> x = a.array<float>("x", 0);
  ByteArray out = read_bytes(a, "out", static_cast<int64_t>(x.length), "x.length");
  QuantLayout L = read_layout(a, "x", static_cast<int64_t>(x.length));
  int32_t qmin, qmax;
  if (out.is_signed) read_range(a, -128, 127, "for an Int8Array out", qmin, qmax);
  else read_range(a, 0, 255, "for a Uint8Array out", qmin, qmax);
  Span<float> scale = read_per_channel<float>(a, "scale", L.channels);
  Span<int32_t> zp = read_per_channel<int32_t>(a, "zeroPoint", L.channels);
  check_scale(a, scale);
  check_zero_point(a, zp, qmin, qmax, "[quantMin, quantMax]");
  no_overlap(a, "x", x.data, x.length * 4, "out", out.span.data, x.length);
  Prepared p;
  p.keep = {x.value, out.span.value, scale.value, zp.value};
  const float* xp = x.data;
  uint8_t* op = out.span.data;
  const float* sp = scale.data;
  const int32_t* zpp = zp.data;
  p.run = [=]() { quantize_tensor(fn, L, xp, op, sp, zpp, qmin, qmax); };
  return p;
}

Prepared prep_dequantize(const Napi::CallbackInfo& info) {
  Args a(info, "dequantize");
  DequantizeFn fn = pick_variant(a, dequantize_kernel());
  ByteArray q = read_bytes(a, "q", 0, nullptr);
  Span<float> out = a.array<float>("out", static_cast<int64_t>(q.span.length), "q.length");
  QuantLayout L = read_layout(a, "q", static_cast<int64_t>(q.span.length));
  Span<float> scale = read_per_channel<float>(a, "scale", L.channels);
  Span<int32_t> zp = read_per_channel<int32_t>(a, "zeroPoint", L.channels);
  check_scale(a, scale);
  if (q.is_signed) check_zero_point(a, zp, -128, 127, "the Int8Array range");
  else check_zero_point(a, zp, 0, 255, "the Uint8Array range");
  no_overlap(a, "q", q.span.data, q.span.length, "out", out.data, q.span.length * 4);
  Prepared p;
  p.keep = {q.span.value, out.value, scale.value, zp.value};
  const uint8_t* qp = q.span.data;
  const bool sgn = q.is_signed;
  float* op = out.data;
  const float* sp = scale.data;
  const int32_t* zpp = zp.data;
  p.run = [=]() { dequantize_tensor(fn, L, qp, sgn, op, sp, zpp); };
  return p;
}

Prepared prep_fake_quantize(const Napi::CallbackInfo& info) {
  Args a(info, "fakeQuantize");
  FakeQuantizeFn fn = pick_variant(a, fake_quantize_kernel());
  Span<float> x = a.array<float>("x", 0);
  const int64_t n = static_cast<int64_t>(x.length);
  Span<float> out = a.array<float>("out", n, "x.length");
  Span<uint8_t> mask = a.optional_array<uint8_t>("mask", n, "x.length");
  QuantLayout L = read_layout(a, "x", n);
  int32_t qmin, qmax;
  read_range(a, -kFakeLimit, kFakeLimit, "(|value| < 2^24)", qmin, qmax);
  if (int64_t(qmax) - qmin > kFakeMaxSpan)
    throw_range(a.env(), a.where("quantMax") + " - quantMin = " + std::to_string(int64_t(qmax) - qmin) +
                             " must be <= 65535");
  Span<float> scale = read_per_channel<float>(a, "scale", L.channels);
  Span<int32_t> zp = read_per_channel<int32_t>(a, "zeroPoint", L.channels);
  check_scale(a, scale);
  check_zero_point(a, zp, qmin, qmax, "[quantMin, quantMax]");
  same_or_disjoint(a, "x", x.data, n * 4, "out", out.data, n * 4);
  if (mask.present()) {
    no_overlap(a, "mask", mask.data, n, "x", x.data, n * 4);
    no_overlap(a, "mask", mask.data, n, "out", out.data, n * 4);
  }
  Prepared p;
  p.keep = {x.value, out.value, scale.value, zp.value};
  if (mask.present()) p.keep.push_back(mask.value);
  const float* xp = x.data;
  float* op = out.data;
  uint8_t* mp = mask.present() ? mask.data : nullptr;
  const float* sp = scale.data;
  const int32_t* zpp = zp.data;
  p.run = [=]() { fake_quantize_tensor(fn, L, xp, op, mp, sp, zpp, qmin, qmax); };
  return p;
}

Prepared prep_fake_quantize_backward(const Napi::CallbackInfo& info) {
  Args a(info, "fakeQuantizeBackward");
  FakeQuantizeBackwardFn fn = pick_variant(a, fake_quantize_backward_kernel());
  Span<float> g = a.array<float>("gradOut", 0);
  const int64_t n = static_cast<int64_t>(g.length);
  Span<float> gi = a.array<float>("gradIn", n, "gradOut.length");
  Span<uint8_t> mask = a.optional_array<uint8_t>("mask", n, "gradOut.length");
  const bool acc = a.boolean("accumulate", false);
  same_or_disjoint(a, "gradOut", g.data, n * 4, "gradIn", gi.data, n * 4);
  if (mask.present()) no_overlap(a, "mask", mask.data, n, "gradIn", gi.data, n * 4);
  Prepared p;
  p.keep = {g.value, gi.value};
  if (mask.present()) p.keep.push_back(mask.value);
  const float* gp = g.data;
  float* gip = gi.data;
  const uint8_t* mp = mask.present() ? mask.data : nullptr;
  p.run = [=]() { fake_quantize_backward_tensor(fn, gp, gip, mp, n, acc); };
  return p;
}

Prepared prep_min_max(const Napi::CallbackInfo& info) {
  Args a(info, "minMax");
  MinMaxFn fn = pick_variant(a, min_max_kernel());
  Span<float> x = a.array<float>("x", 0);
  QuantLayout L = read_layout(a, "x", static_cast<int64_t>(x.length));
  Span<float> mn = read_per_channel<float>(a, "min", L.channels);
  Span<float> mx = read_per_channel<float>(a, "max", L.channels);
  const size_t cb = static_cast<size_t>(L.channels) * 4;
  no_overlap(a, "min", mn.data, cb, "x", x.data, x.length * 4);
  no_overlap(a, "max", mx.data, cb, "x", x.data, x.length * 4);
  no_overlap(a, "min", mn.data, cb, "max", mx.data, cb);
  Prepared p;
  p.keep = {x.value, mn.value, mx.value};
  const float* xp = x.data;
  float* mnp = mn.data;
  float* mxp = mx.data;
  p.run = [=]() { min_max_tensor(fn, L, xp, mnp, mxp); };
  return p;
}

int read_bits(const Args& a) { return static_cast<int>(a.integer("bits", 2, 8)); }

int64_t packed_bytes(int64_t n, int bits) { return (n * bits + 7) / 8; }

Napi::Value PackBits(const Napi::CallbackInfo& info) {
  Args a(info, "packBits");
  Span<uint8_t> q = a.array<uint8_t>("q", 0);
  const int bits = read_bits(a);
  const int64_t n = static_cast<int64_t>(q.length);
  const int64_t need = packed_bytes(n, bits);
  Span<uint8_t> out = a.array<uint8_t>("out", need, "ceil(q.length * bits / 8)");
  no_overlap(a, "q", q.data, q.length, "out", out.data, static_cast<size_t>(need));
  const int64_t bad = pack_bits(q.data, n, bits, out.data);
  if (bad >= 0)
    throw_range(a.env(), "packBits: q[" + std::to_string(bad) + "] = " + std::to_string(q.data[bad]) +
                             " does not fit in " + std::to_string(bits) + " bits (max " +
                             std::to_string((1 << bits) - 1) + ")");
  return info.Env().Undefined();
}

Napi::Value UnpackBits(const Napi::CallbackInfo& info) {
  Args a(info, "unpackBits");
  Span<uint8_t> packed = a.array<uint8_t>("packed", 0);
  const int bits = read_bits(a);
  Span<uint8_t> out = a.array<uint8_t>("out", 0);
  const int64_t n = static_cast<int64_t>(out.length);
  const int64_t need = packed_bytes(n, bits);
  if (static_cast<int64_t>(packed.length) < need)
    throw_range(a.env(), a.where("packed") + " has " + std::to_string(packed.length) + " bytes; needs at least " +
                             std::to_string(need) + " (ceil(out.length * bits / 8))");
  no_overlap(a, "packed", packed.data, static_cast<size_t>(need), "out", out.data, out.length);
  unpack_bits(packed.data, n, bits, out.data);
  return info.Env().Undefined();
}

void init_quant(Napi::Env env, Napi::Object exports) {
  QF_EXPORT_SYNC_ASYNC(exports, env, "quantize", prep_quantize);
  QF_EXPORT_SYNC_ASYNC(exports, env, "dequantize", prep_dequantize);
  QF_EXPORT_SYNC_ASYNC(exports, env, "fakeQuantize", prep_fake_quantize);
  QF_EXPORT_SYNC_ASYNC(exports, env, "fakeQuantizeBackward", prep_fake_quantize_backward);
  QF_EXPORT_SYNC_ASYNC(exports, env, "minMax", prep_min_max);
  exports.Set("packBits", Napi::Function::New(env, PackBits, "packBits"));
  exports.Set("unpackBits", Napi::Function::New(env, UnpackBits, "unpackBits"));
}

}  // namespace
QF_REGISTER_EXPORTS(init_quant)
}  // namespace napi

}  // namespace qf
