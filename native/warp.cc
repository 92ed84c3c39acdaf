// Face-pipeline image kernels (scalar, portable; exports warpAffineU8 and
// cropGreyU8, synchronous): the per-face crops of lib/runtime/pipeline.ts,
// all faces of a photo in one call.
//
// Both follow their JavaScript references operation by operation in double
// precision (the build compiles with -ffp-contract=off, so no fused
// multiply-adds), which makes them bit-identical to them:
// - warpAffineU8 = lib/data/align.ts warpAffine (cv2.warpAffine INTER_LINEAR,
//   border 0) stored as float32, then lib/runtime/input.ts roundCrop (round
//   half to even, clamp 0..255);
// - cropGreyU8 = lib/runtime/pipeline.ts cropGrey (grey 0.299 R + 0.587 G +
//   0.114 B, bilinear at pixel centres with clamped edges, k x k samples per
//   output pixel when shrinking by more than 2x, Math.round, clamp).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "napi_util.h"

namespace qf {
namespace napi {
namespace {

// floor() of |x| < 2^52 without a libm call (the baseline x86-64 build has no
// SSE4.1 round instruction): exact for every such double.
inline double floor_small(double x) {
  const double t = static_cast<double>(static_cast<int64_t>(x));
  return t > x ? t - 1 : t;
}

// Round half to even of a float32 value, clamped to 0..255 (NaN -> 0): roundCrop.
inline uint8_t round_even_u8(float f) {
  const double v = static_cast<double>(f);
  if (!(v > 0)) return 0;
  if (v >= 255) return 255;
  double r = floor_small(v + 0.5);  // exact: v has a 24-bit mantissa
  if (r - v == 0.5 && (static_cast<int64_t>(r) & 1)) r -= 1;
  return static_cast<uint8_t>(r);
}

// Coordinates beyond this are outside any image (sides <= 2^20) and too large for floor_small.
constexpr double kFar = 1099511627776.0;  // 2^40

// One size x size x 3 crop: output (u, v) samples the source at inv * (u, v, 1).
void warp_one(const uint8_t* data, int64_t W, int64_t H, const double* inv, int64_t size, uint8_t* dst) {
  const double Wd = static_cast<double>(W), Hd = static_cast<double>(H);
  for (int64_t v = 0; v < size; v++) {
    const double vd = static_cast<double>(v);
    for (int64_t u = 0; u < size; u++) {
      const double ud = static_cast<double>(u);
      const double xs = inv[0] * ud + inv[1] * vd + inv[2];
      const double ys = inv[3] * ud + inv[4] * vd + inv[5];
      uint8_t* o = dst + (v * size + u) * 3;
      if (!(xs > -kFar && xs < kFar && ys > -kFar && ys < kFar)) {
        o[0] = 0;
        o[1] = 0;
        o[2] = 0;
        continue;
      }
      const double x0f = floor_small(xs), y0f = floor_small(ys);
      const double fx = xs - x0f, fy = ys - y0f;
      if (x0f >= 0 && y0f >= 0 && x0f + 1 < Wd && y0f + 1 < Hd) {
        const int64_t x0 = static_cast<int64_t>(x0f), y0 = static_cast<int64_t>(y0f);
        const uint8_t* p00 = data + (y0 * W + x0) * 3;
        const uint8_t* p01 = p00 + 3;
        const uint8_t* p10 = p00 + W * 3;
        const uint8_t* p11 = p10 + 3;
        for (int c = 0; c < 3; c++) {
          const double a = p00[c], b = p01[c], cc = p10[c], d = p11[c];
          const double top = a + (b - a) * fx;
          const double bot = cc + (d - cc) * fx;
          o[c] = round_even_u8(static_cast<float>(top + (bot - top) * fy));
        }
      } else if (x0f + 1 < 0 || y0f + 1 < 0 || x0f >= Wd || y0f >= Hd) {
        o[0] = 0;
        o[1] = 0;
        o[2] = 0;
      } else {
        // x0f in [-1, W-1], y0f in [-1, H-1]: samples outside the image are 0
        const int64_t x0 = static_cast<int64_t>(x0f), y0 = static_cast<int64_t>(y0f);
        auto px = [&](int64_t x, int64_t y, int c) -> double {
          return x < 0 || y < 0 || x >= W || y >= H ? 0.0 : static_cast<double>(data[(y * W + x) * 3 + c]);
        };
        for (int c = 0; c < 3; c++) {
          const double top = px(x0, y0, c) * (1 - fx) + px(x0 + 1, y0, c) * fx;
          const double bot = px(x0, y0 + 1, c) * (1 - fx) + px(x0 + 1, y0 + 1, c) * fx;
          o[c] = round_even_u8(static_cast<float>(top * (1 - fy) + bot * fy));
        }
      }
    }
  }
}

// Math.round (half up), clamped to 0..255.
inline uint8_t round_half_up_u8(double x) {
  if (!(x > -kFar && x < kFar)) return x > 0 ? 255 : 0;
  double r = floor_small(x);
  if (x - r >= 0.5) r += 1;
  return static_cast<uint8_t>(std::min(255.0, std::max(0.0, r)));
}

// Sample positions along one axis of a grey crop: for output index t and
// sub-sample q (k per output pixel), the clamped coordinate's two source
// indices and the weight of the second (cropGrey's sample()).
struct AxisTaps {
  std::vector<int64_t> i0, i1;
  std::vector<double> a;
};
AxisTaps axis_taps(double r0, double f, int64_t size, int64_t k, int64_t n) {
  AxisTaps t;
  t.i0.resize(size * k);
  t.i1.resize(size * k);
  t.a.resize(size * k);
  const double kd = static_cast<double>(k), last = static_cast<double>(n - 1);
  for (int64_t u = 0; u < size; u++)
    for (int64_t q = 0; q < k; q++) {
      double sx = r0 + (static_cast<double>(u) + (static_cast<double>(q) + 0.5) / kd) * f - 0.5;
      sx = std::min(std::max(sx, 0.0), last);
      const double x0f = floor_small(sx);
      const int64_t x0 = static_cast<int64_t>(x0f);
      t.i0[u * k + q] = x0;
      t.i1[u * k + q] = std::min<int64_t>(x0 + 1, n - 1);
      t.a[u * k + q] = sx - x0f;
    }
  return t;
}

// One size x size grey crop of the rectangle (rx, ry, rw, rh).
void grey_one(const uint8_t* d, int64_t W, int64_t H, const double* rect, int64_t size, uint8_t* out) {
  const double rx = rect[0], ry = rect[1], rw = rect[2], rh = rect[3];
  const double sized = static_cast<double>(size);
  const double fx = rw / sized, fy = rh / sized;
  const double kf = std::ceil(std::max(fx, fy) / 2);
  const int64_t k = std::max<int64_t>(1, static_cast<int64_t>(kf));
  const double kd = static_cast<double>(k);
  // rx, ry may lie far outside: clamping makes every coordinate an index in the image
  const AxisTaps X = axis_taps(std::min(std::max(rx, -kFar), kFar), fx, size, k, W);
  const AxisTaps Y = axis_taps(std::min(std::max(ry, -kFar), kFar), fy, size, k, H);
  const double w0 = 0.299, w1 = 0.587, w2 = 0.114;
  for (int64_t v = 0; v < size; v++)
    for (int64_t u = 0; u < size; u++) {
      double s = 0;
      for (int64_t j = 0; j < k; j++) {
        const int64_t yj = v * k + j;
        const uint8_t* r0 = d + Y.i0[yj] * W * 3;
        const uint8_t* r1 = d + Y.i1[yj] * W * 3;
        const double ay = Y.a[yj];
        for (int64_t i = 0; i < k; i++) {
          const int64_t xi = u * k + i;
          const int64_t c0 = X.i0[xi] * 3, c1 = X.i1[xi] * 3;
          const double ax = X.a[xi];
          double g = 0;
          const double ws[3] = {w0, w1, w2};
          for (int c = 0; c < 3; c++) {
            const double v00 = r0[c0 + c], v01 = r0[c1 + c], v10 = r1[c0 + c], v11 = r1[c1 + c];
            g += ws[c] * ((1 - ay) * ((1 - ax) * v00 + ax * v01) + ay * ((1 - ax) * v10 + ax * v11));
          }
          s += g;
        }
      }
      out[v * size + u] = round_half_up_u8(s / (kd * kd));
    }
}

struct Image {
  const uint8_t* data;
  int64_t width, height;
  Napi::Value value;
};

Image read_image(const Args& a) {
  Image im;
  im.width = a.integer("width", 1, int64_t(1) << 20);
  im.height = a.integer("height", 1, int64_t(1) << 20);
  const int64_t need = checked_mul(a.env(), a.fn(), checked_mul(a.env(), a.fn(), im.width, im.height, "width x height"), 3, "the image");
  Span<uint8_t> src = a.array<uint8_t>("src", need, "width x height x 3 RGB bytes");
  im.data = src.data;
  im.value = src.value;
  return im;
}

// Rows of `per` finite numbers; returns how many rows.
int64_t read_rows(const Args& a, const char* key, int64_t per, Span<double>* out) {
  *out = a.array<double>(key, per);
  if (out->length % per) throw_range(a.env(), a.where(key) + " must hold " + std::to_string(per) + " numbers per crop (got " + std::to_string(out->length) + ")");
  for (size_t i = 0; i < out->length; i++)
    if (!std::isfinite(out->data[i])) throw_range(a.env(), a.where(key) + " must be finite (element " + std::to_string(i) + ")");
  return static_cast<int64_t>(out->length) / per;
}

Prepared prepare_warp(const Napi::CallbackInfo& info) {
  Args a(info, "warpAffineU8");
  const Image im = read_image(a);
  Span<double> m;
  const int64_t n = read_rows(a, "matrices", 6, &m);
  const int64_t size = a.integer("size", 1, 4096);
  const int64_t per = size * size * 3;
  Span<uint8_t> out = a.array<uint8_t>("out", checked_mul(a.env(), a.fn(), n, per, "the output"), "crops x size x size x 3 bytes");
  Prepared p;
  p.keep = {im.value, m.value, out.value};
  const uint8_t* src = im.data;
  const double* mats = m.data;
  uint8_t* dst = out.data;
  const int64_t W = im.width, H = im.height;
  p.run = [=]() {
    for (int64_t i = 0; i < n; i++) warp_one(src, W, H, mats + 6 * i, size, dst + i * per);
  };
  return p;
}

Prepared prepare_grey(const Napi::CallbackInfo& info) {
  Args a(info, "cropGreyU8");
  const Image im = read_image(a);
  Span<double> r;
  const int64_t n = read_rows(a, "rects", 4, &r);
  // rectangles: positive sides no larger than twice the image (bounds the k x k samples per pixel)
  const double lim = 2.0 * static_cast<double>(std::max(im.width, im.height));
  for (int64_t i = 0; i < n; i++)
    if (!(r.data[4 * i + 2] > 0 && r.data[4 * i + 3] > 0 && r.data[4 * i + 2] <= lim && r.data[4 * i + 3] <= lim))
      throw_range(a.env(), std::string("cropGreyU8: rects: crop ") + std::to_string(i) + " must have a width and height in (0, " + std::to_string(static_cast<int64_t>(lim)) + "] (twice the image's longer side)");
  const int64_t size = a.integer("size", 1, 4096);
  const int64_t per = size * size;
  Span<uint8_t> out = a.array<uint8_t>("out", checked_mul(a.env(), a.fn(), n, per, "the output"), "crops x size x size bytes");
  Prepared p;
  p.keep = {im.value, r.value, out.value};
  const uint8_t* src = im.data;
  const double* rects = r.data;
  uint8_t* dst = out.data;
  const int64_t W = im.width, H = im.height;
  p.run = [=]() {
    for (int64_t i = 0; i < n; i++) grey_one(src, W, H, rects + 4 * i, size, dst + i * per);
  };
  return p;
}

void init_warp(Napi::Env env, Napi::Object exports) {
  exports.Set("warpAffineU8", Napi::Function::New(env, sync_entry<prepare_warp>, "warpAffineU8"));
  exports.Set("cropGreyU8", Napi::Function::New(env, sync_entry<prepare_grey>, "cropGreyU8"));
}

}  // namespace
QF_REGISTER_EXPORTS(init_warp)
}  // namespace napi
}  // namespace qf
