// measurePeak({kind, seconds, threads}): ops/s of a register-only loop, the
// denominator of the benchmarks' "fraction of peak".
#include <chrono>
#include <mutex>

#include "core.h"
#include "napi_util.h"
#include "peak.h"

namespace qf {
namespace napi {
namespace {

struct PeakKind {
  const char* name;
  Isa isa;
  double (*fn)(int64_t);
};
const PeakKind kPeakKinds[] = {
    QF_X86({"fma_zmm", Isa::Avx512, peak_fma_zmm},)
    QF_X86({"vnni_zmm", Isa::Avx512Vnni, peak_vnni_zmm},)
    QF_X86({"fma_ymm", Isa::Avx2, peak_fma_ymm},)
    QF_X86({"vnni_ymm", Isa::AvxVnni, peak_vnni_ymm},)
    QF_ARM64({"fma_neon", Isa::Neon, peak_fma_neon},)
    QF_ARM64({"dot_neon", Isa::NeonDot, peak_dot_neon},)
};

Prepared prepare_peak(const Napi::CallbackInfo& info) {
  Args a(info, "measurePeak");
  std::vector<std::string> names;
  for (const auto& k : kPeakKinds) names.push_back(k.name);
  int idx = a.choice("kind", names, 0);
  const PeakKind& kind = kPeakKinds[idx];
  if (!isa_supported(kind.isa))
    throw_range(a.env(), std::string("measurePeak: kind '") + kind.name + "' needs " + isa_name(kind.isa) +
                             ", which this CPU (or QUANTFACE_ISA) does not allow");
  double seconds = a.number("seconds", 0.2);
  if (seconds <= 0 || seconds > 10) throw_range(a.env(), "measurePeak: seconds must be in (0, 10]");
  int threads = static_cast<int>(a.integer("threads", 1, 1024, 1));
  auto result = std::make_shared<std::vector<double>>();
  Prepared p;
  p.run = [kind, seconds, threads, result]() {
    std::vector<double> rates(threads, 0.0);
    parallel_run(threads, [&](int t, int nt) {
      (void)nt;
      // calibrate, then run for `seconds`
      int64_t iters = 1 << 14;
      for (;;) {
        auto t0 = std::chrono::steady_clock::now();
        double ops = kind.fn(iters);
        double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (dt >= seconds || iters > (int64_t(1) << 40)) {
          rates[t] = ops / dt;
          break;
        }
        iters = static_cast<int64_t>(iters * std::max(2.0, std::min(100.0, 1.2 * seconds / std::max(dt, 1e-9))));
      }
    });
    *result = rates;
  };
  p.result = [result, kind](Napi::Env env) {
    Napi::Object o = Napi::Object::New(env);
    double total = 0;
    Napi::Array per = Napi::Array::New(env);
    for (size_t i = 0; i < result->size(); i++) {
      total += (*result)[i];
      per.Set(static_cast<uint32_t>(i), (*result)[i]);
    }
    o.Set("kind", kind.name);
    o.Set("threads", static_cast<double>(result->size()));
    o.Set("opsPerSecond", total);
    o.Set("perThread", per);
    return o;
  };
  return p;
}

void init_peak(Napi::Env env, Napi::Object exports) {
  QF_EXPORT_SYNC_ASYNC(exports, env, "measurePeak", prepare_peak);
}

}  // namespace
QF_REGISTER_EXPORTS(init_peak)
}  // namespace napi
}  // namespace qf
