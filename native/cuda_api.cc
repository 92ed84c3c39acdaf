// N-API surface of the optional CUDA backend (binding.d.ts, section CUDA):
// cudaAlloc -> DeviceBuffer, cudaSynchronize, cudaGemmS8S8S32, cudaQuantize,
// cudaDequantize, cudaBenchBf16Gemm, and info().cuda.
//
// Always compiled (baseline flags). Without QUANTFACE_HAVE_CUDA, or when no
// usable GPU, driver or cuBLASLt is found at run time, every CUDA export
// throws an Error whose `code` is 'E_CUDA_UNAVAILABLE' and whose message
// says why; info().cuda says the same. Nothing here may crash the process:
// every CUDA runtime call's status is checked and turned into a JS error.
//
// All device work goes to the legacy default stream: kernels and cuBLASLt
// calls are asynchronous; upload/download (cudaMemcpy) and cudaSynchronize
// wait for them.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "napi_util.h"

#ifdef QUANTFACE_HAVE_CUDA
#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <chrono>

#include "cuda/backend.h"
#endif

#ifndef QUANTFACE_CUDA_ARCHS
#define QUANTFACE_CUDA_ARCHS ""
#endif

namespace qf {
namespace napi {
namespace {

const char* const kNotCompiled =
    "built without CUDA (QUANTFACE_CUDA=OFF, or no nvcc was found when the addon was compiled; rebuild with "
    "cmake-js --CDQUANTFACE_CUDA=ON on a machine with the CUDA toolkit)";

[[noreturn]] void throw_code(Napi::Env env, const char* code, const std::string& msg) {
  Napi::Error e = Napi::Error::New(env, msg);
  e.Value().Set("code", Napi::String::New(env, code));
  throw e;
}

#ifndef QUANTFACE_HAVE_CUDA
// ===================================================================== no CUDA
Napi::Value unavailable(const Napi::CallbackInfo& info, const char* fn) {
  throw_code(info.Env(), "E_CUDA_UNAVAILABLE", std::string(fn) + ": CUDA is not available: " + kNotCompiled);
}
Napi::Value Alloc(const Napi::CallbackInfo& info) { return unavailable(info, "cudaAlloc"); }
Napi::Value Synchronize(const Napi::CallbackInfo& info) { return unavailable(info, "cudaSynchronize"); }
Napi::Value Gemm(const Napi::CallbackInfo& info) { return unavailable(info, "cudaGemmS8S8S32"); }
Napi::Value Quantize(const Napi::CallbackInfo& info) { return unavailable(info, "cudaQuantize"); }
Napi::Value Dequantize(const Napi::CallbackInfo& info) { return unavailable(info, "cudaDequantize"); }
Napi::Value BenchBf16(const Napi::CallbackInfo& info) { return unavailable(info, "cudaBenchBf16Gemm"); }

Napi::Value cuda_info(Napi::Env env) {
  Napi::Object c = Napi::Object::New(env);
  c.Set("compiled", false);
  c.Set("available", false);
  c.Set("reason", kNotCompiled);
  return c;
}

void init_device_buffer(Napi::Env) {}

#else
// ===================================================================== CUDA
using qf::cuda::LtLibrary;
using qf::cuda::LtResult;

std::string cuda_error_text(int code) {
  cudaError_t e = static_cast<cudaError_t>(code);
  const char* name = cudaGetErrorName(e);
  const char* text = cudaGetErrorString(e);
  return std::string(name ? name : "cudaError") + " (" + std::to_string(code) + "): " + (text ? text : "");
}

std::string version_text(int v) {  // 13000 -> "13.0"
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

struct DeviceDesc {
  int index = 0;
  std::string name;
  int major = 0, minor = 0;
  size_t total = 0;
};

struct State {
  bool available = false;
  std::string reason;
  int runtime = 0, driver = 0;
  std::vector<DeviceDesc> devices;
};

State probe() {
  State s;
  cudaRuntimeGetVersion(&s.runtime);
  if (cudaDriverGetVersion(&s.driver) != cudaSuccess) s.driver = 0;  // 0: no driver installed
  cudaGetLastError();
  const char* off = std::getenv("QUANTFACE_CUDA_DISABLE");
  if (off && *off && std::strcmp(off, "0") != 0) {
    s.reason = "disabled by the environment variable QUANTFACE_CUDA_DISABLE";
    return s;
  }
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    void* libcuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    std::string dl_error;
    if (!libcuda) {
      const char* de = dlerror();
      dl_error = de ? de : "not found";
    } else {
      dlclose(libcuda);
    }
    if (!libcuda)
      s.reason = "no NVIDIA driver found (" + dl_error + ")";
    else if (s.driver == 0)
      s.reason = "the NVIDIA driver could not be used: " + cuda_error_text(e);
    else if (e == cudaErrorInsufficientDriver)
      s.reason = "the NVIDIA driver supports CUDA " + version_text(s.driver) + " but this build's CUDA runtime is " +
                 version_text(s.runtime) + ": update the driver or rebuild with an older CUDA toolkit";
    else if (e == cudaErrorNoDevice)
      s.reason = "no CUDA device found (" + cuda_error_text(e) + ")";
    else
      s.reason = "cudaGetDeviceCount failed: " + cuda_error_text(e);
    return s;
  }
  if (count <= 0) {
    s.reason = "no CUDA device found";
    return s;
  }
  for (int i = 0; i < count; i++) {
    cudaDeviceProp p;
    std::memset(&p, 0, sizeof(p));
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) {
      cudaGetLastError();
      continue;
    }
    DeviceDesc d;
    d.index = i;
    d.name = p.name;
    d.major = p.major;
    d.minor = p.minor;
    d.total = p.totalGlobalMem;
    s.devices.push_back(d);
  }
  if (s.devices.empty() || s.devices[0].index != 0) {
    s.reason = "the properties of CUDA device 0 could not be read";
    return s;
  }
  const DeviceDesc& d0 = s.devices[0];
  const std::string d0_text =
      "device 0 (" + d0.name + ", compute capability " + std::to_string(d0.major) + "." + std::to_string(d0.minor) + ")";
  if (d0.major < 8) {
    s.reason = d0_text + " is older than this build supports (compute capability 8.0 or newer; built for " +
               std::string(QUANTFACE_CUDA_ARCHS) + ")";
    return s;
  }
  int ki = qf::cuda::check_kernel_images();
  if (ki != 0) {
    s.reason = d0_text + " cannot run this build's kernels (built for " + std::string(QUANTFACE_CUDA_ARCHS) +
               "): " + cuda_error_text(ki);
    return s;
  }
  const LtLibrary& lib = qf::cuda::lt_library();
  if (!lib.loaded) {
    s.reason = lib.error;
    return s;
  }
  s.available = true;
  return s;
}

const State& state() {
  static const State s = probe();  // once per process (thread-safe)
  return s;
}

void require_available(Napi::Env env, const char* fn) {
  const State& s = state();
  if (!s.available) throw_code(env, "E_CUDA_UNAVAILABLE", std::string(fn) + ": CUDA is not available: " + s.reason);
}

// A failed CUDA call: E_CUDA_OOM for allocation failures, else E_CUDA.
void check(Napi::Env env, int code, const std::string& what) {
  if (code == 0) return;
  cudaGetLastError();  // clear a non-sticky error so later calls are not blamed for it
  throw_code(env, code == cudaErrorMemoryAllocation ? "E_CUDA_OOM" : "E_CUDA", what + " failed: " + cuda_error_text(code));
}

Napi::Value cuda_info(Napi::Env env) {
  const State& s = state();
  Napi::Object c = Napi::Object::New(env);
  c.Set("compiled", true);
  c.Set("available", s.available);
  if (!s.available) c.Set("reason", s.reason);
  Napi::Array devs = Napi::Array::New(env);
  for (size_t i = 0; i < s.devices.size(); i++) {
    const DeviceDesc& d = s.devices[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("index", d.index);
    o.Set("name", d.name);
    o.Set("computeCapability", std::to_string(d.major) + "." + std::to_string(d.minor));
    o.Set("totalMemory", static_cast<double>(d.total));
    devs.Set(static_cast<uint32_t>(i), o);
  }
  c.Set("devices", devs);
  c.Set("runtimeVersion", s.runtime);
  c.Set("driverVersion", s.driver);
  c.Set("architectures", QUANTFACE_CUDA_ARCHS);
  if (s.available) {  // probe() looked for cuBLASLt only once the GPU itself was found usable
    const LtLibrary& lib = qf::cuda::lt_library();
    c.Set("cublasLtVersion", static_cast<double>(lib.version));
    c.Set("cublasLtPath", lib.path);
  }
  return c;
}

// --------------------------------------------------------------- DeviceBuffer
// Objects made by cudaAlloc carry this type tag: arguments are checked with
// napi_check_object_type_tag before unwrapping, so no other wrapped object
// (or a plain object given DeviceBuffer's prototype) is ever taken for one.
const napi_type_tag kDeviceBufferTag = {0x71756e7466616365ULL, 0x6465766275666672ULL};
int kConstructToken = 0;  // its address is the token

class DeviceBuffer : public Napi::ObjectWrap<DeviceBuffer> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "DeviceBuffer",
                       {
                           InstanceAccessor<&DeviceBuffer::GetBytes>("bytes"),
                           InstanceAccessor<&DeviceBuffer::GetFreed>("freed"),
                           InstanceMethod<&DeviceBuffer::Upload>("upload"),
                           InstanceMethod<&DeviceBuffer::Download>("download"),
                           InstanceMethod<&DeviceBuffer::Free>("free"),
                       });
  }

  // new DeviceBuffer(token, pointer, bytes): only cudaAlloc can make one.
  explicit DeviceBuffer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DeviceBuffer>(info) {
    Napi::Env env = info.Env();
    if (info.Length() != 3 || !info[0].IsExternal() ||
        info[0].As<Napi::External<int>>().Data() != &kConstructToken || !info[1].IsExternal() ||
        !info[2].IsNumber())
      throw_type(env, "DeviceBuffer cannot be constructed directly: use cudaAlloc(bytes)");
    ptr_ = info[1].As<Napi::External<void>>().Data();
    bytes_ = static_cast<size_t>(info[2].As<Napi::Number>().DoubleValue());
    if (napi_type_tag_object(env, info.This(), &kDeviceBufferTag) != napi_ok) {
      ptr_ = nullptr;  // the caller (cudaAlloc) frees the memory when construction fails
      throw_type(env, "DeviceBuffer: could not tag the object");
    }
  }
  ~DeviceBuffer() override { release(); }

  void* ptr() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  bool freed() const { return ptr_ == nullptr; }

 private:
  void release() {
    if (ptr_) {
      // cudaFree waits for work in flight that may still use the memory.
      // At process exit the runtime may be gone already: ignore errors.
      cudaFree(ptr_);
      cudaGetLastError();
      ptr_ = nullptr;
    }
  }
  Napi::Value GetBytes(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(bytes_)); }
  Napi::Value GetFreed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), freed()); }

  struct HostView {
    void* data = nullptr;
    size_t bytes = 0;
  };
  static HostView host_view(Napi::Env env, Napi::Value v, const std::string& where) {
    HostView h;
    napi_value ab = nullptr;
    size_t off = 0;
    if (v.IsTypedArray()) {
      napi_typedarray_type type;
      size_t len = 0;
      if (napi_get_typedarray_info(env, v, &type, &len, &h.data, &ab, &off) != napi_ok)
        throw_type(env, where + " could not be read");
      size_t elem = 1;
      switch (type) {
        case napi_int16_array: case napi_uint16_array: elem = 2; break;
        case napi_int32_array: case napi_uint32_array: case napi_float32_array: elem = 4; break;
        case napi_float64_array: case napi_bigint64_array: case napi_biguint64_array: elem = 8; break;
        default: elem = 1; break;
      }
      h.bytes = len * elem;
    } else if (v.IsDataView()) {
      if (napi_get_dataview_info(env, v, &h.bytes, &h.data, &ab, &off) != napi_ok)
        throw_type(env, where + " could not be read");
    } else {
      throw_type(env, where + " must be a TypedArray, Buffer or DataView (got " + describe(v) + ")");
    }
    bool detached = false;
    if (ab) napi_is_detached_arraybuffer(env, ab, &detached);
    if (detached) throw_type(env, where + " is backed by a detached ArrayBuffer");
    if (h.bytes > 0 && h.data == nullptr) throw_type(env, where + " has no data");
    return h;
  }
  static size_t byte_offset(Napi::Env env, const Napi::CallbackInfo& info, size_t idx, const std::string& where) {
    if (info.Length() <= idx || info[idx].IsUndefined()) return 0;
    if (!info[idx].IsNumber()) throw_type(env, where + " must be an integer (got " + describe(info[idx]) + ")");
    double d = info[idx].As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d) || d != std::floor(d) || d < 0 || d > 9007199254740992.0)
      throw_range(env, where + " must be a non-negative integer");
    return static_cast<size_t>(d);
  }
  void copy(const Napi::CallbackInfo& info, bool to_device) {
    Napi::Env env = info.Env();
    const std::string fn = to_device ? "DeviceBuffer.upload" : "DeviceBuffer.download";
    const char* arg = to_device ? "src" : "dst";
    if (freed()) throw_code(env, "E_CUDA_FREED", fn + ": the buffer was freed");
    HostView h = host_view(env, info.Length() > 0 ? info[0] : env.Undefined(), fn + ": " + arg);
    size_t off = byte_offset(env, info, 1, fn + ": byteOffset");
    if (off > bytes_ || h.bytes > bytes_ - off)
      throw_range(env, fn + ": " + arg + " (" + std::to_string(h.bytes) + " bytes) at byteOffset " + std::to_string(off) +
                           " does not fit in the buffer (" + std::to_string(bytes_) + " bytes)");
    if (h.bytes == 0) return;
    char* dev = static_cast<char*>(ptr_) + off;
    cudaError_t e = to_device ? cudaMemcpy(dev, h.data, h.bytes, cudaMemcpyHostToDevice)
                              : cudaMemcpy(h.data, dev, h.bytes, cudaMemcpyDeviceToHost);
    check(env, e, fn + " (cudaMemcpy)");
  }
  Napi::Value Upload(const Napi::CallbackInfo& info) {
    copy(info, true);
    return info.Env().Undefined();
  }
  Napi::Value Download(const Napi::CallbackInfo& info) {
    copy(info, false);
    return info.Env().Undefined();
  }
  Napi::Value Free(const Napi::CallbackInfo& info) {
    release();  // a second free() is a no-op
    return info.Env().Undefined();
  }

  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// The DeviceBuffer constructor of each environment (main thread, workers).
std::mutex g_ctor_mu;
std::unordered_map<napi_env, Napi::FunctionReference*> g_ctors;

void init_device_buffer(Napi::Env env) {
  Napi::Function fn = DeviceBuffer::Define(env);
  auto* ref = new Napi::FunctionReference(Napi::Persistent(fn));
  napi_env raw = env;
  {
    std::lock_guard<std::mutex> lock(g_ctor_mu);
    g_ctors[raw] = ref;
  }
  env.AddCleanupHook([raw]() {
    Napi::FunctionReference* r = nullptr;
    {
      std::lock_guard<std::mutex> lock(g_ctor_mu);
      auto it = g_ctors.find(raw);
      if (it != g_ctors.end()) {
        r = it->second;
        g_ctors.erase(it);
      }
    }
    delete r;
  });
}

Napi::Function device_buffer_ctor(Napi::Env env) {
  std::lock_guard<std::mutex> lock(g_ctor_mu);
  auto it = g_ctors.find(static_cast<napi_env>(env));
  if (it == g_ctors.end()) throw Napi::Error::New(env, "quantface: DeviceBuffer is not initialised in this environment");
  return it->second->Value();
}

// A DeviceBuffer argument (not freed).
DeviceBuffer* buffer_arg(Napi::Env env, Napi::Value v, const std::string& where) {
  if (!v.IsObject())
    throw_type(env, where + " must be a DeviceBuffer from cudaAlloc (got " + describe(v) + ")");
  bool tagged = false;
  if (napi_check_object_type_tag(env, v, &kDeviceBufferTag, &tagged) != napi_ok || !tagged)
    throw_type(env, where + " must be a DeviceBuffer from cudaAlloc (got " + describe(v) + ")");
  DeviceBuffer* b = nullptr;
  if (napi_unwrap(env, v, reinterpret_cast<void**>(&b)) != napi_ok || b == nullptr)
    throw_type(env, where + " must be a DeviceBuffer from cudaAlloc");
  if (b->freed()) throw_code(env, "E_CUDA_FREED", where + " was freed");
  return b;
}

DeviceBuffer* buffer_opt(const Args& args, const char* key) {
  if (!args.has(key)) return nullptr;
  return buffer_arg(args.env(), args.get(key), args.where(key));
}
DeviceBuffer* buffer_req(const Args& args, const char* key) {
  if (!args.has(key)) throw_type(args.env(), args.where(key) + " is required (a DeviceBuffer from cudaAlloc)");
  return buffer_arg(args.env(), args.get(key), args.where(key));
}

void need_bytes(const Args& args, const char* key, const DeviceBuffer* b, int64_t need, const std::string& what) {
  if (static_cast<int64_t>(b->bytes()) < need)
    throw_range(args.env(), args.where(key) + " has " + std::to_string(b->bytes()) + " bytes; needs at least " +
                                std::to_string(need) + " (" + what + ")");
}

void not_same(const Args& args, const char* k1, const DeviceBuffer* b1, const char* k2, const DeviceBuffer* b2) {
  if (b1 && b2 && b1 == b2)
    throw_range(args.env(), std::string(args.fn()) + ": " + k1 + " and " + k2 + " must be different buffers");
}

// --------------------------------------------------------------- exports
Napi::Value Alloc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  require_available(env, "cudaAlloc");
  if (info.Length() < 1 || !info[0].IsNumber())
    throw_type(env, "cudaAlloc: bytes must be an integer (got " +
                        (info.Length() < 1 ? std::string("nothing") : describe(info[0])) + ")");
  double d = info[0].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || d != std::floor(d) || d < 1 || d > 9007199254740992.0)
    throw_range(env, "cudaAlloc: bytes must be an integer >= 1");
  const size_t bytes = static_cast<size_t>(d);
  void* p = nullptr;
  cudaError_t e = cudaMalloc(&p, bytes);
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw_code(env, e == cudaErrorMemoryAllocation ? "E_CUDA_OOM" : "E_CUDA",
               "cudaAlloc: cudaMalloc(" + std::to_string(bytes) + ") failed: " + cuda_error_text(e));
  }
  try {
    return device_buffer_ctor(env).New({Napi::External<int>::New(env, &kConstructToken),
                                        Napi::External<void>::New(env, p), Napi::Number::New(env, d)});
  } catch (...) {
    cudaFree(p);
    throw;
  }
}

Napi::Value Synchronize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  require_available(env, "cudaSynchronize");
  check(env, cudaDeviceSynchronize(), "cudaSynchronize (cudaDeviceSynchronize)");
  return env.Undefined();
}

Napi::Value Gemm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* fn = "cudaGemmS8S8S32";
  require_available(env, fn);
  Args args(info, fn);
  const int64_t kMax = std::numeric_limits<int32_t>::max();
  const int64_t m = args.integer("m", 1, kMax), n = args.integer("n", 1, kMax), k = args.integer("k", 1, kMax);
  if (!args.has("outType")) throw_type(env, args.where("outType") + " is required ('s32' or 'f32')");
  const bool f32 = args.choice("outType", {"s32", "f32"}, 0) == 1;
  const int impl = args.choice("impl", {"auto", "cublaslt", "kernel"}, 0);
  DeviceBuffer* a = buffer_req(args, "a");
  DeviceBuffer* b = buffer_req(args, "b");
  DeviceBuffer* out = buffer_req(args, "out");
  DeviceBuffer* scale = buffer_opt(args, "scale");
  DeviceBuffer* bias = buffer_opt(args, "bias");
  need_bytes(args, "a", a, checked_mul(env, fn, m, k, "m * k"), "m * k int8");
  need_bytes(args, "b", b, checked_mul(env, fn, n, k, "n * k"), "n * k int8");
  need_bytes(args, "out", out, checked_mul(env, fn, checked_mul(env, fn, m, n, "m * n"), 4, "m * n * 4"),
             "m * n int32/float32");
  if (!f32 && (scale || bias))
    throw_range(env, args.where(scale ? "scale" : "bias") + " is only used with outType 'f32'");
  if (scale) need_bytes(args, "scale", scale, n * 4, "n float32");
  if (bias) need_bytes(args, "bias", bias, n * 4, "n float32");
  not_same(args, "out", out, "a", a);
  not_same(args, "out", out, "b", b);
  not_same(args, "out", out, "scale", scale);
  not_same(args, "out", out, "bias", bias);
  const int mi = static_cast<int>(m), ni = static_cast<int>(n), ki = static_cast<int>(k);
  const bool lt_shape = qf::cuda::lt_gemm_s8s8s32_shape_ok(mi, ni, ki);
  if (impl == 1 && !lt_shape)
    throw_range(env, std::string(fn) + ": impl 'cublaslt' needs n and k to be multiples of 4 (got n = " +
                         std::to_string(n) + ", k = " + std::to_string(k) + ")");
  const int8_t* pa = static_cast<const int8_t*>(a->ptr());
  const int8_t* pb = static_cast<const int8_t*>(b->ptr());
  int32_t* pc = static_cast<int32_t*>(out->ptr());
  const char* used = "kernel";
  if (impl != 2 && lt_shape) {
    std::string err;
    LtResult r = qf::cuda::lt_gemm_s8s8s32(pa, pb, pc, mi, ni, ki, &err);
    if (r == LtResult::Ok) {
      used = "cublaslt";
    } else if (r == LtResult::Error) {
      cudaGetLastError();
      throw_code(env, "E_CUDA", std::string(fn) + ": cuBLASLt: " + err);
    } else if (impl == 1) {
      throw_code(env, "E_CUDA", std::string(fn) + ": cuBLASLt offers no int8 algorithm for m = " + std::to_string(m) +
                                    ", n = " + std::to_string(n) + ", k = " + std::to_string(k));
    }
  }
  if (std::strcmp(used, "kernel") == 0) check(env, qf::cuda::gemm_s8s8s32_tiled(pa, pb, pc, mi, ni, ki), fn);
  if (f32)
    check(env,
          qf::cuda::epilogue_s32_to_f32(pc, scale ? static_cast<const float*>(scale->ptr()) : nullptr,
                                        bias ? static_cast<const float*>(bias->ptr()) : nullptr, m, ni),
          std::string(fn) + " (f32 epilogue)");
  return Napi::String::New(env, used);
}

// Integer range of the stored bytes: 's8' [-128, 127] or 'u8' [0, 255].
void check_dtype_range(const Args& args, bool is_signed, int64_t lo, int64_t hi, const char* what) {
  const int64_t tmin = is_signed ? -128 : 0, tmax = is_signed ? 127 : 255;
  if (lo < tmin || hi > tmax)
    throw_range(args.env(), std::string(args.fn()) + ": " + what + " must lie within [" + std::to_string(tmin) + ", " +
                                std::to_string(tmax) + "] for dtype '" + (is_signed ? "s8" : "u8") + "'");
}

float scale_arg(const Args& args) {
  const double s = args.number("scale");
  const float f = static_cast<float>(s);
  if (!(s > 0) || !std::isfinite(f) || !(f > 0))
    throw_range(args.env(), args.where("scale") + " must be > 0 and finite as a float32 (got " + std::to_string(s) + ")");
  return f;
}

Napi::Value Quantize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* fn = "cudaQuantize";
  require_available(env, fn);
  Args args(info, fn);
  DeviceBuffer* x = buffer_req(args, "x");
  DeviceBuffer* out = buffer_req(args, "out");
  const int64_t count = args.integer("count", 0, int64_t(1) << 53);
  const float scale = scale_arg(args);
  const int64_t qmin = args.integer("quantMin", -128, 255), qmax = args.integer("quantMax", -128, 255);
  if (qmin > qmax) throw_range(env, std::string(fn) + ": quantMin must be <= quantMax");
  const int dt = args.choice("dtype", {"s8", "u8"}, qmin < 0 ? 0 : 1);
  check_dtype_range(args, dt == 0, qmin, qmax, "[quantMin, quantMax]");
  const int64_t zp = args.integer("zeroPoint", qmin, qmax);
  need_bytes(args, "x", x, checked_mul(env, fn, count, 4, "count * 4"), "count float32");
  need_bytes(args, "out", out, count, "count bytes");
  not_same(args, "x", x, "out", out);
  check(env,
        qf::cuda::quantize_f32_to_8bit(static_cast<const float*>(x->ptr()), static_cast<uint8_t*>(out->ptr()), count,
                                       scale, static_cast<int32_t>(zp), static_cast<int32_t>(qmin),
                                       static_cast<int32_t>(qmax)),
        fn);
  return env.Undefined();
}

Napi::Value Dequantize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* fn = "cudaDequantize";
  require_available(env, fn);
  Args args(info, fn);
  DeviceBuffer* q = buffer_req(args, "q");
  DeviceBuffer* out = buffer_req(args, "out");
  const int64_t count = args.integer("count", 0, int64_t(1) << 53);
  const float scale = scale_arg(args);
  if (!args.has("dtype")) throw_type(env, args.where("dtype") + " is required ('s8' or 'u8')");
  const bool is_signed = args.choice("dtype", {"s8", "u8"}, 0) == 0;
  const int64_t zp = args.integer("zeroPoint", is_signed ? -128 : 0, is_signed ? 127 : 255);
  need_bytes(args, "q", q, count, "count bytes");
  need_bytes(args, "out", out, checked_mul(env, fn, count, 4, "count * 4"), "count float32");
  not_same(args, "q", q, "out", out);
  check(env,
        qf::cuda::dequantize_8bit_to_f32(q->ptr(), is_signed, static_cast<float*>(out->ptr()), count, scale,
                                         static_cast<int32_t>(zp)),
        fn);
  return env.Undefined();
}

// Device memory owned by one call (freed on every exit path).
struct Scratch {
  void* p = nullptr;
  ~Scratch() {
    if (p) {
      cudaFree(p);
      cudaGetLastError();
    }
  }
};

Napi::Value BenchBf16(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* fn = "cudaBenchBf16Gemm";
  require_available(env, fn);
  Args args(info, fn);
  const int64_t kMax = 65536;
  const int64_t m = args.integer("m", 1, kMax), n = args.integer("n", 1, kMax), k = args.integer("k", 1, kMax);
  const int64_t reps = args.integer("reps", 1, 1000, 10);
  const int64_t inner = args.integer("inner", 1, 100000, 10);
  const int64_t warmup = args.integer("warmup", 0, 1000, 2);
  const bool f32 = args.choice("outType", {"bf16", "f32"}, 0) == 1;
  Scratch a, b, d;
  check(env, cudaMalloc(&a.p, static_cast<size_t>(m * k * 2)), std::string(fn) + " (cudaMalloc a)");
  check(env, cudaMalloc(&b.p, static_cast<size_t>(n * k * 2)), std::string(fn) + " (cudaMalloc b)");
  check(env, cudaMalloc(&d.p, static_cast<size_t>(m * n * (f32 ? 4 : 2))), std::string(fn) + " (cudaMalloc d)");
  check(env, qf::cuda::fill_random_bf16(a.p, m * k, 1234u), fn);
  check(env, qf::cuda::fill_random_bf16(b.p, n * k, 5678u), fn);
  auto once = [&]() {
    std::string err;
    LtResult r = qf::cuda::lt_gemm_bf16(a.p, b.p, d.p, f32, static_cast<int>(m), static_cast<int>(n),
                                        static_cast<int>(k), &err);
    if (r == LtResult::Unsupported) throw_code(env, "E_CUDA", std::string(fn) + ": cuBLASLt has no bf16 algorithm for this shape");
    if (r == LtResult::Error) throw_code(env, "E_CUDA", std::string(fn) + ": cuBLASLt: " + err);
  };
  for (int64_t i = 0; i < warmup; i++) once();
  check(env, cudaDeviceSynchronize(), fn);
  Napi::Array times = Napi::Array::New(env);
  for (int64_t r = 0; r < reps; r++) {
    auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < inner; i++) once();
    check(env, cudaDeviceSynchronize(), fn);
    auto t1 = std::chrono::steady_clock::now();
    times.Set(static_cast<uint32_t>(r), std::chrono::duration<double>(t1 - t0).count());
  }
  Napi::Object res = Napi::Object::New(env);
  res.Set("times", times);
  res.Set("flopsPerRep", 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k) *
                             static_cast<double>(inner));
  res.Set("outType", f32 ? "f32" : "bf16");
  return res;
}

#endif  // QUANTFACE_HAVE_CUDA

void init_cuda(Napi::Env env, Napi::Object exports) {
  cuda_info_hook() = [](Napi::Env e) { return cuda_info(e); };
  init_device_buffer(env);
  exports.Set("cudaAlloc", Napi::Function::New(env, Alloc, "cudaAlloc"));
  exports.Set("cudaSynchronize", Napi::Function::New(env, Synchronize, "cudaSynchronize"));
  exports.Set("cudaGemmS8S8S32", Napi::Function::New(env, Gemm, "cudaGemmS8S8S32"));
  exports.Set("cudaQuantize", Napi::Function::New(env, Quantize, "cudaQuantize"));
  exports.Set("cudaDequantize", Napi::Function::New(env, Dequantize, "cudaDequantize"));
  exports.Set("cudaBenchBf16Gemm", Napi::Function::New(env, BenchBf16, "cudaBenchBf16Gemm"));
}

QF_REGISTER_EXPORTS(init_cuda)

}  // namespace
}  // namespace napi
}  // namespace qf
