#include "core.h"

#if defined(QF_ARCH_X86)
#include <cpuid.h>
#elif defined(QF_ARCH_ARM64) && defined(__linux__)
#include <sys/auxv.h>
#endif
#include <cstdlib>
#include <cstring>
#include <string>

namespace qf {

#if defined(QF_ARCH_X86)
static uint64_t xgetbv0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

static CpuFeatures detect() {
  CpuFeatures f;
  unsigned a, b, c, d;
  if (!__get_cpuid(0, &a, &b, &c, &d)) return f;
  unsigned max_leaf = a;
  __cpuid(1, a, b, c, d);
  f.sse42 = c & (1u << 20);
  f.fma = c & (1u << 12);
  f.f16c = c & (1u << 29);
  bool osxsave = c & (1u << 27);
  f.avx = c & (1u << 28);
  if (osxsave) {
    uint64_t x = xgetbv0();
    f.os_avx = (x & 0x6) == 0x6;
    f.os_avx512 = f.os_avx && (x & 0xe0) == 0xe0;
  }
  if (max_leaf >= 7) {
    __cpuid_count(7, 0, a, b, c, d);
    f.avx2 = b & (1u << 5);
    f.avx512f = b & (1u << 16);
    f.avx512dq = b & (1u << 17);
    f.avx512bw = b & (1u << 30);
    f.avx512vl = b & (1u << 31);
    f.avx512vnni = c & (1u << 11);
    __cpuid_count(7, 1, a, b, c, d);
    f.avxvnni = a & (1u << 4);
    f.avx512bf16 = a & (1u << 5);
  }
  if (!f.os_avx) { f.avx = f.avx2 = f.fma = f.f16c = f.avxvnni = false; }
  if (!f.os_avx512) {
    f.avx512f = f.avx512bw = f.avx512dq = f.avx512vl = f.avx512vnni = f.avx512bf16 = false;
  }
  return f;
}
#elif defined(QF_ARCH_ARM64)
static CpuFeatures detect() {
  CpuFeatures f;
  f.neon = true;  // Advanced SIMD is mandatory on aarch64
#if defined(__linux__)
  // Bits from the kernel's uapi asm/hwcap.h (spelled out: old headers lack them).
  const unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
  f.neon_dotprod = hw & (1ul << 20);  // HWCAP_ASIMDDP
  f.neon_i8mm = hw2 & (1ul << 13);    // HWCAP2_I8MM
#elif defined(__APPLE__)
  f.neon_dotprod = true;  // every Apple-silicon CPU (M1 and later) has FEAT_DotProd
#endif
  return f;
}
#else
static CpuFeatures detect() { return CpuFeatures{}; }
#endif

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return "scalar";
    case Isa::Avx2: return "avx2";
    case Isa::AvxVnni: return "avxvnni";
    case Isa::Avx512: return "avx512";
    case Isa::Avx512Vnni: return "avx512vnni";
    case Isa::Neon: return "neon";
    case Isa::NeonDot: return "neondot";
  }
  return "?";
}

Isa isa_cap() {
  static const Isa cap = []() {
    const char* e = std::getenv("QUANTFACE_ISA");
    constexpr Isa none = static_cast<Isa>(kIsaCount - 1);
    if (!e || !*e) return none;
    std::string s(e);
    for (int i = 0; i < kIsaCount; i++)
      if (s == isa_name(static_cast<Isa>(i))) return static_cast<Isa>(i);
    return none;
  }();
  return cap;
}

static bool cpu_has(Isa isa) {
  const CpuFeatures& f = cpu_features();
  bool avx2 = f.avx2 && f.fma && f.f16c;
  bool avx512 = avx2 && f.avx512f && f.avx512bw && f.avx512dq && f.avx512vl;
  switch (isa) {
    case Isa::Scalar: return true;
    case Isa::Avx2: return avx2;
    case Isa::AvxVnni: return avx2 && f.avxvnni;
    case Isa::Avx512: return avx512;
    case Isa::Avx512Vnni: return avx512 && f.avx512vnni;
    case Isa::Neon: return f.neon;
    case Isa::NeonDot: return f.neon && f.neon_dotprod;
  }
  return false;
}

bool isa_supported(Isa isa) {
  if (static_cast<int>(isa) > static_cast<int>(isa_cap())) return false;
  return cpu_has(isa);
}

std::vector<KernelInfo>& kernel_registry() {
  static std::vector<KernelInfo> r;
  return r;
}

void* aligned_alloc64(size_t bytes) {
  if (bytes == 0) bytes = 64;
  size_t rounded = (bytes + 63) & ~static_cast<size_t>(63);
  void* p = std::aligned_alloc(64, rounded);
  if (!p) throw std::bad_alloc();
  return p;
}
void aligned_free64(void* p) { std::free(p); }

}  // namespace qf
