// quantface native core: CPU features, kernel variant registry, thread pool.
// This header is included by every kernel file, including ISA-specific ones:
// keep it free of intrinsics and of inline code that depends on the ISA.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

// Architecture switches for the variant tables: QF_X86(...) keeps its
// arguments only in x86-64 builds, QF_ARM64(...) only in aarch64 builds, so
// a table lists the variants compiled for this architecture, e.g.
//   { QF_X86({"k_avx2", Isa::Avx2, k_avx2},) QF_ARM64({"k_neon", Isa::Neon, k_neon},) {"k_ref", Isa::Scalar, k_ref} }
#if defined(__x86_64__) || defined(_M_X64)
#define QF_ARCH_X86 1
#define QF_X86(...) __VA_ARGS__
#else
#define QF_X86(...)
#endif
#if defined(__aarch64__) || defined(_M_ARM64)
#define QF_ARCH_ARM64 1
#define QF_ARM64(...) __VA_ARGS__
#else
#define QF_ARM64(...)
#endif

namespace qf {

// ---------------------------------------------------------------- CPU
struct CpuFeatures {
  bool sse42 = false, avx = false, avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512dq = false, avx512vl = false;
  bool avx512vnni = false, avx512bf16 = false, avxvnni = false;
  bool os_avx = false, os_avx512 = false;  // XCR0 says the OS saves the state
  // aarch64 (getauxval(AT_HWCAP/AT_HWCAP2)): Advanced SIMD, SDOT/UDOT, USDOT (I8MM)
  bool neon = false, neon_dotprod = false, neon_i8mm = false;
};
const CpuFeatures& cpu_features();

// ISA levels, ordered. A variant of level L runs where isa_supported(L).
enum class Isa : int {
  Scalar = 0,
  Avx2 = 1,        // AVX2 + FMA (+F16C)
  AvxVnni = 2,     // AVX2 + VEX-encoded VNNI (ymm vpdpbusd)
  Avx512 = 3,      // AVX-512 F/BW/DQ/VL
  Avx512Vnni = 4,  // AVX-512 + VNNI
  Neon = 5,        // aarch64 Advanced SIMD (every aarch64 CPU)
  NeonDot = 6,     // aarch64 + SDOT/UDOT (FEAT_DotProd: Cortex-A55/A76+, Neoverse N1+, Apple M1+)
};
constexpr int kIsaCount = 7;
const char* isa_name(Isa isa);
bool isa_supported(Isa isa);  // CPU has it AND it is not capped by QUANTFACE_ISA
// Highest level allowed by the environment variable QUANTFACE_ISA
// (scalar|avx2|avxvnni|avx512|avx512vnni|neon|neondot); default: no cap.
// Levels compare by their number: on aarch64 only scalar, neon and neondot
// are meaningful caps (an x86 name there caps to scalar).
Isa isa_cap();

// ---------------------------------------------------------------- kernels
// A kernel has variants ordered best-first; the last one is the scalar
// reference ("ref"). `chosen` = the first variant whose ISA is supported.
template <class Fn>
struct Variant {
  const char* name;  // e.g. "sgemm_avx512"
  Isa isa;
  Fn fn;
};

struct KernelInfo {
  std::string kernel;                  // e.g. "sgemm"
  std::vector<std::string> variants;   // all compiled variants, best first
  std::vector<bool> supported;         // per variant: runs on this CPU
  std::function<std::string()> chosen; // name of the variant used by default
};
std::vector<KernelInfo>& kernel_registry();
struct KernelRegistrar {
  explicit KernelRegistrar(KernelInfo info) { kernel_registry().push_back(std::move(info)); }
};

template <class Fn>
struct Kernel {
  const char* name;
  std::vector<Variant<Fn>> variants;  // best first, reference last
  const Variant<Fn>& chosen() const {
    for (const auto& v : variants)
      if (isa_supported(v.isa)) return v;
    return variants.back();
  }
  // nullptr/empty -> chosen; else the named variant (full name like
  // "sgemm_avx2" or the suffix "avx2"); returns nullptr when unknown or
  // unsupported on this CPU.
  const Variant<Fn>* find(const std::string& want) const {
    if (want.empty()) return &chosen();
    for (const auto& v : variants) {
      std::string full = v.name;
      std::string prefix = std::string(name) + "_";
      std::string suffix = full.rfind(prefix, 0) == 0 ? full.substr(prefix.size()) : full;
      if (want == full || want == suffix) return isa_supported(v.isa) ? &v : nullptr;
    }
    return nullptr;
  }
  KernelInfo info() const {
    KernelInfo ki;
    ki.kernel = name;
    for (const auto& v : variants) {
      ki.variants.push_back(v.name);
      ki.supported.push_back(isa_supported(v.isa));
    }
    const Kernel* self = this;
    ki.chosen = [self]() { return std::string(self->chosen().name); };
    return ki;
  }
};
// Define a kernel table and register it for binding.info():
//   QF_KERNEL(sgemm_kernel, SgemmFn, "sgemm", { {"sgemm_avx512", Isa::Avx512, sgemm_avx512}, ..., {"sgemm_ref", Isa::Scalar, sgemm_ref} });
#define QF_KERNEL(var, FnType, kname, ...)                                   \
  const ::qf::Kernel<FnType>& var() {                                        \
    static const ::qf::Kernel<FnType> k{kname, __VA_ARGS__};                 \
    return k;                                                                \
  }                                                                          \
  static ::qf::KernelRegistrar var##_registrar_{var().info()};

// ---------------------------------------------------------------- threads
// One process-wide pool. parallel_for splits [0, n) into chunks of at least
// `grain` items and runs fn(begin, end) on the pool (the calling thread
// takes part). Calls from inside a pool task, or while another
// parallel_for is running, run inline on the caller (no deadlock, no
// oversubscription). fn must not throw.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);
// Runs fn(t, nthreads) once per worker, t in [0, nthreads), nthreads <= max.
void parallel_run(int max_threads, const std::function<void(int, int)>& fn);
int num_threads();           // current pool size (>= 1)
void set_num_threads(int n); // n >= 1; 0 -> default (physical cores)
int default_num_threads();

// Aligned scratch memory (64-byte aligned).
void* aligned_alloc64(size_t bytes);
void aligned_free64(void* p);
template <class T>
struct AlignedBuf {
  T* p = nullptr;
  size_t n = 0;
  AlignedBuf() = default;
  explicit AlignedBuf(size_t count) { resize(count); }
  ~AlignedBuf() { aligned_free64(p); }
  AlignedBuf(const AlignedBuf&) = delete;
  AlignedBuf& operator=(const AlignedBuf&) = delete;
  AlignedBuf(AlignedBuf&& o) noexcept : p(o.p), n(o.n) { o.p = nullptr; o.n = 0; }
  AlignedBuf& operator=(AlignedBuf&& o) noexcept {
    if (this != &o) { aligned_free64(p); p = o.p; n = o.n; o.p = nullptr; o.n = 0; }
    return *this;
  }
  void resize(size_t count) {
    if (count <= n) return;
    aligned_free64(p);
    p = static_cast<T*>(aligned_alloc64(count * sizeof(T) + 64));
    n = count;
  }
  T* data() { return p; }
  const T* data() const { return p; }
};

}  // namespace qf
