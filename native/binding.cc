// N-API entry point: info(), thread control, and every registered module.
#include "core.h"
#include "napi_util.h"

#ifndef QUANTFACE_VERSION
#define QUANTFACE_VERSION "0.0.0"
#endif

namespace qf {
namespace napi {

std::vector<std::pair<std::string, InitFn>>& export_registry() {
  static std::vector<std::pair<std::string, InitFn>> r;
  return r;
}

std::function<Napi::Value(Napi::Env)>& cuda_info_hook() {
  static std::function<Napi::Value(Napi::Env)> h;
  return h;
}

static Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("version", QUANTFACE_VERSION);
  o.Set("napiVersion", NAPI_VERSION);
#ifdef QUANTFACE_SOURCE_HASH
  o.Set("sourceHash", QUANTFACE_SOURCE_HASH);
#endif
  o.Set("threads", num_threads());
  o.Set("defaultThreads", default_num_threads());
  const CpuFeatures& f = cpu_features();
  Napi::Object cpu = Napi::Object::New(env);
  cpu.Set("avx2", f.avx2);
  cpu.Set("fma", f.fma);
  cpu.Set("f16c", f.f16c);
  cpu.Set("avx512f", f.avx512f);
  cpu.Set("avx512bw", f.avx512bw);
  cpu.Set("avx512dq", f.avx512dq);
  cpu.Set("avx512vl", f.avx512vl);
  cpu.Set("avx512vnni", f.avx512vnni);
  cpu.Set("avx512bf16", f.avx512bf16);
  cpu.Set("avxvnni", f.avxvnni);
  cpu.Set("neon", f.neon);
  cpu.Set("neonDotprod", f.neon_dotprod);
  cpu.Set("neonI8mm", f.neon_i8mm);
  o.Set("cpu", cpu);
  o.Set("isaCap", isa_name(isa_cap()));
  Napi::Array isas = Napi::Array::New(env);
  uint32_t n = 0;
  for (int i = 0; i < kIsaCount; i++)
    if (isa_supported(static_cast<Isa>(i))) isas.Set(n++, isa_name(static_cast<Isa>(i)));
  o.Set("isa", isas);
  Napi::Object kernels = Napi::Object::New(env);
  Napi::Object variants = Napi::Object::New(env);
  for (const KernelInfo& k : kernel_registry()) {
    kernels.Set(k.kernel, k.chosen());
    Napi::Array arr = Napi::Array::New(env);
    for (size_t i = 0; i < k.variants.size(); i++) {
      Napi::Object v = Napi::Object::New(env);
      v.Set("name", k.variants[i]);
      v.Set("supported", static_cast<bool>(k.supported[i]));
      arr.Set(static_cast<uint32_t>(i), v);
    }
    variants.Set(k.kernel, arr);
  }
  o.Set("kernels", kernels);
  o.Set("variants", variants);
  if (cuda_info_hook()) {
    o.Set("cuda", cuda_info_hook()(env));
  } else {
    Napi::Object c = Napi::Object::New(env);
    c.Set("compiled", false);
    c.Set("available", false);
    c.Set("reason", "built without CUDA (QUANTFACE_CUDA=OFF or nvcc/cuBLASLt not found at build time)");
    o.Set("cuda", c);
  }
  return o;
}

static Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber())
    throw_type(env, "setThreads: n must be an integer (got " + (info.Length() < 1 ? std::string("nothing") : describe(info[0])) + ")");
  double d = info[0].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || d != std::floor(d) || d < 0 || d > 1024)
    throw_range(env, "setThreads: n must be an integer in [0, 1024] (0 = default)");
  set_num_threads(static_cast<int>(d));
  return Napi::Number::New(env, num_threads());
}

static Napi::Value GetThreads(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), num_threads()); }

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("info", Napi::Function::New(env, Info, "info"));
  exports.Set("setThreads", Napi::Function::New(env, SetThreads, "setThreads"));
  exports.Set("getThreads", Napi::Function::New(env, GetThreads, "getThreads"));
  for (auto& e : export_registry()) e.second(env, exports);
  return exports;
}

}  // namespace napi
}  // namespace qf

static Napi::Object QuantfaceInit(Napi::Env env, Napi::Object exports) { return qf::napi::Init(env, exports); }
NODE_API_MODULE(quantface, QuantfaceInit)
