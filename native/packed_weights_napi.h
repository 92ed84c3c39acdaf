// N-API helpers shared by the int8 GEMM and the int8 convolutions
// (implemented in gemm_u8s8.cc). Binding files only.
#pragma once
#include <napi.h>

#include <vector>

#include "gemm_u8s8.h"
#include "napi_util.h"

namespace qf {
namespace napi {

// The PackedS8 held by a PackedWeights object (made by packWeights()).
// Throws TypeError "<fn>: <key> must be a PackedWeights ..." for anything
// else (plain objects that merely look like one included). The pointer lives
// as long as the JS object: keep `v` referenced (Prepared::keep) for async work.
const PackedS8* unwrap_packed_weights(Napi::Value v, const char* fn, const char* key);

// Reads and validates the Int8Epilogue fields of an options object
// (outType, scale, bias, activation, slope, outScale, outZeroPoint,
// clampMin, clampMax) for n output channels, and the output array named
// out_key, whose type must match outType. The caller checks the output's
// length (out_len) against its shape. Arrays that must stay alive while the
// kernel runs are appended to keep.
struct Int8EpilogueArgs {
  Epilogue ep;
  void* out = nullptr;
  size_t out_len = 0;      // elements
  size_t out_elem = 0;     // bytes per element
};
Int8EpilogueArgs read_int8_epilogue(const Args& args, int64_t n, const char* out_key, std::vector<Napi::Value>* keep);

}  // namespace napi
}  // namespace qf
