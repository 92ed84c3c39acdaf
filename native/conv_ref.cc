// Reference convolutions: plain direct loops, the definition every faster
// kernel is tested against. fp32 references accumulate in float64.
#include <cstring>
#include <vector>

#include "conv.h"

namespace qf {

namespace {
inline int64_t in_row(const ConvGeom& g, int64_t oy, int64_t ky) { return oy * g.sh - g.pt + ky * g.dh; }
inline int64_t in_col(const ConvGeom& g, int64_t ox, int64_t kx) { return ox * g.sw - g.pl + kx * g.dw; }
}  // namespace

void conv2d_f32_ref(const ConvGeom& g, const float* x, const float* w, const float* bias, float* out) {
  const int64_t cg = g.c / g.groups, coutg = g.cout / g.groups;
  for (int64_t n = 0; n < g.n; n++)
    for (int64_t oy = 0; oy < g.oh; oy++)
      for (int64_t ox = 0; ox < g.ow; ox++)
        for (int64_t co = 0; co < g.cout; co++) {
          const int64_t grp = co / coutg;
          double acc = bias ? bias[co] : 0.0;
          for (int64_t ky = 0; ky < g.kh; ky++) {
            const int64_t iy = in_row(g, oy, ky);
            if (iy < 0 || iy >= g.h) continue;
            for (int64_t kx = 0; kx < g.kw; kx++) {
              const int64_t ix = in_col(g, ox, kx);
              if (ix < 0 || ix >= g.w) continue;
              const float* xp = x + ((n * g.h + iy) * g.w + ix) * g.c + grp * cg;
              const float* wp = w + ((co * g.kh + ky) * g.kw + kx) * cg;
              for (int64_t ci = 0; ci < cg; ci++) acc += static_cast<double>(xp[ci]) * wp[ci];
            }
          }
          out[((n * g.oh + oy) * g.ow + ox) * g.cout + co] = static_cast<float>(acc);
        }
}

void conv2d_backward_input_f32_ref(const ConvGeom& g, const float* gout, const float* w, float* gin, bool accumulate) {
  const int64_t cg = g.c / g.groups, coutg = g.cout / g.groups;
  const int64_t total = g.n * g.h * g.w * g.c;
  std::vector<double> acc(static_cast<size_t>(total), 0.0);
  for (int64_t n = 0; n < g.n; n++)
    for (int64_t oy = 0; oy < g.oh; oy++)
      for (int64_t ox = 0; ox < g.ow; ox++)
        for (int64_t co = 0; co < g.cout; co++) {
          const int64_t grp = co / coutg;
          const double gv = gout[((n * g.oh + oy) * g.ow + ox) * g.cout + co];
          for (int64_t ky = 0; ky < g.kh; ky++) {
            const int64_t iy = in_row(g, oy, ky);
            if (iy < 0 || iy >= g.h) continue;
            for (int64_t kx = 0; kx < g.kw; kx++) {
              const int64_t ix = in_col(g, ox, kx);
              if (ix < 0 || ix >= g.w) continue;
              double* ap = acc.data() + ((n * g.h + iy) * g.w + ix) * g.c + grp * cg;
              const float* wp = w + ((co * g.kh + ky) * g.kw + kx) * cg;
              for (int64_t ci = 0; ci < cg; ci++) ap[ci] += gv * wp[ci];
            }
          }
        }
  for (int64_t i = 0; i < total; i++)
    gin[i] = accumulate ? static_cast<float>(gin[i] + acc[i]) : static_cast<float>(acc[i]);
}

void conv2d_backward_weight_f32_ref(const ConvGeom& g, const float* x, const float* gout, float* gw, float* gb,
                                    bool accumulate) {
  const int64_t cg = g.c / g.groups, coutg = g.cout / g.groups;
  const int64_t wsize = g.cout * g.kh * g.kw * cg;
  std::vector<double> acc(static_cast<size_t>(wsize), 0.0), accb(static_cast<size_t>(g.cout), 0.0);
  for (int64_t n = 0; n < g.n; n++)
    for (int64_t oy = 0; oy < g.oh; oy++)
      for (int64_t ox = 0; ox < g.ow; ox++)
        for (int64_t co = 0; co < g.cout; co++) {
          const int64_t grp = co / coutg;
          const double gv = gout[((n * g.oh + oy) * g.ow + ox) * g.cout + co];
          accb[co] += gv;
          for (int64_t ky = 0; ky < g.kh; ky++) {
            const int64_t iy = in_row(g, oy, ky);
            if (iy < 0 || iy >= g.h) continue;
            for (int64_t kx = 0; kx < g.kw; kx++) {
              const int64_t ix = in_col(g, ox, kx);
              if (ix < 0 || ix >= g.w) continue;
              const float* xp = x + ((n * g.h + iy) * g.w + ix) * g.c + grp * cg;
              double* ap = acc.data() + ((co * g.kh + ky) * g.kw + kx) * cg;
              for (int64_t ci = 0; ci < cg; ci++) ap[ci] += gv * xp[ci];
            }
          }
        }
  for (int64_t i = 0; i < wsize; i++)
    gw[i] = accumulate ? static_cast<float>(gw[i] + acc[i]) : static_cast<float>(acc[i]);
  if (gb)
    for (int64_t i = 0; i < g.cout; i++)
      gb[i] = accumulate ? static_cast<float>(gb[i] + accb[i]) : static_cast<float>(accb[i]);
}

// ------------------------------------------------------------ depthwise (row kernels)
void dw_fwd_f32_ref(const ConvGeom& g, const float* x, const float* wt, const float* bias, float* out, int64_t r0,
                    int64_t r1) {
  const int64_t C = g.c;
  for (int64_t r = r0; r < r1; r++) {
    const int64_t n = r / g.oh, oy = r % g.oh;
    for (int64_t ox = 0; ox < g.ow; ox++)
      for (int64_t ch = 0; ch < C; ch++) {
        double acc = bias ? bias[ch] : 0.0;
        for (int64_t ky = 0; ky < g.kh; ky++) {
          const int64_t iy = in_row(g, oy, ky);
          if (iy < 0 || iy >= g.h) continue;
          for (int64_t kx = 0; kx < g.kw; kx++) {
            const int64_t ix = in_col(g, ox, kx);
            if (ix < 0 || ix >= g.w) continue;
            acc += static_cast<double>(x[((n * g.h + iy) * g.w + ix) * C + ch]) * wt[(ky * g.kw + kx) * C + ch];
          }
        }
        out[(r * g.ow + ox) * C + ch] = static_cast<float>(acc);
      }
  }
}

void dw_bwd_input_f32_ref(const ConvGeom& g, const float* gout, const float* wt, float* gin, bool accumulate,
                          int64_t r0, int64_t r1) {
  const int64_t C = g.c;
  for (int64_t r = r0; r < r1; r++) {
    const int64_t n = r / g.h, iy = r % g.h;
    for (int64_t ix = 0; ix < g.w; ix++)
      for (int64_t ch = 0; ch < C; ch++) {
        double acc = 0.0;
        for (int64_t ky = 0; ky < g.kh; ky++) {
          const int64_t ty = iy + g.pt - ky * g.dh;
          if (ty < 0 || ty % g.sh != 0 || ty / g.sh >= g.oh) continue;
          const int64_t oy = ty / g.sh;
          for (int64_t kx = 0; kx < g.kw; kx++) {
            const int64_t tx = ix + g.pl - kx * g.dw;
            if (tx < 0 || tx % g.sw != 0 || tx / g.sw >= g.ow) continue;
            const int64_t ox = tx / g.sw;
            acc += static_cast<double>(gout[((n * g.oh + oy) * g.ow + ox) * C + ch]) * wt[(ky * g.kw + kx) * C + ch];
          }
        }
        float* o = gin + (r * g.w + ix) * C + ch;
        *o = accumulate ? static_cast<float>(*o + acc) : static_cast<float>(acc);
      }
  }
}

void dw_bwd_weight_f32_ref(const ConvGeom& g, const float* x, const float* gout, float* gwt, float* gb, int64_t r0,
                           int64_t r1) {
  const int64_t C = g.c, T = g.kh * g.kw;
  std::vector<double> acc(static_cast<size_t>(T * C), 0.0), accb(static_cast<size_t>(C), 0.0);
  for (int64_t r = r0; r < r1; r++) {
    const int64_t n = r / g.oh, oy = r % g.oh;
    for (int64_t ox = 0; ox < g.ow; ox++) {
      const float* gp = gout + (r * g.ow + ox) * C;
      for (int64_t ch = 0; ch < C; ch++) accb[ch] += gp[ch];
      for (int64_t ky = 0; ky < g.kh; ky++) {
        const int64_t iy = in_row(g, oy, ky);
        if (iy < 0 || iy >= g.h) continue;
        for (int64_t kx = 0; kx < g.kw; kx++) {
          const int64_t ix = in_col(g, ox, kx);
          if (ix < 0 || ix >= g.w) continue;
          const float* xp = x + ((n * g.h + iy) * g.w + ix) * C;
          double* ap = acc.data() + (ky * g.kw + kx) * C;
          for (int64_t ch = 0; ch < C; ch++) ap[ch] += static_cast<double>(gp[ch]) * xp[ch];
        }
      }
    }
  }
  for (int64_t i = 0; i < T * C; i++) gwt[i] = static_cast<float>(gwt[i] + acc[i]);
  if (gb)
    for (int64_t ch = 0; ch < C; ch++) gb[ch] = static_cast<float>(gb[ch] + accb[ch]);
}

// ------------------------------------------------------------ int8 depthwise
// acc = sum_t (x - xzp) * (w - wzp) in int32 with wrap-around (the exact
// value whenever it fits), then the shared reference epilogue.
void dw_u8s8_ref(const ConvGeom& g, const uint8_t* x, const DwU8Prep& p, const Epilogue& ep, void* out, int64_t r0,
                 int64_t r1) {
  const int64_t C = g.c, T = g.kh * g.kw;
  for (int64_t r = r0; r < r1; r++) {
    const int64_t n = r / g.oh, oy = r % g.oh;
    for (int64_t ox = 0; ox < g.ow; ox++)
      for (int64_t ch = 0; ch < C; ch++) {
        uint32_t acc = 0;
        const int32_t wz = p.wzp ? p.wzp[ch] : 0;
        for (int64_t ky = 0; ky < g.kh; ky++) {
          const int64_t iy = in_row(g, oy, ky);
          for (int64_t kx = 0; kx < g.kw; kx++) {
            const int64_t ix = in_col(g, ox, kx);
            const bool inside = iy >= 0 && iy < g.h && ix >= 0 && ix < g.w;
            const int32_t xv = inside ? x[((n * g.h + iy) * g.w + ix) * C + ch] : p.xzp;
            const int32_t wv = p.w[ch * T + ky * g.kw + kx];
            acc += static_cast<uint32_t>(static_cast<int64_t>(xv - p.xzp) * (static_cast<int64_t>(wv) - wz));
          }
        }
        epilogue_ref(ep, ch, static_cast<int32_t>(acc), out, (r * g.ow + ox) * C + ch);
      }
  }
}

}  // namespace qf
