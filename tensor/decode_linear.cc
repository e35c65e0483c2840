#include "tensor/decode_linear.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include "tensor/cpu_isa.h"

namespace loramux {
namespace {

// Four W rows per pass: four independent streams keep more memory requests in flight.
constexpr int64_t kRowsPerPass = 4;

// y[t][o] for W rows [first, last) and every x row t < rows.
LORAMUX_INLINE void RowsOf(const float* x, int64_t rows, const float* w, const float* b, float* y,
                           int64_t in, int64_t out, int64_t first, int64_t last) {
  int64_t o = first;
  for (; o + kRowsPerPass <= last; o += kRowsPerPass) {
    const float *w0 = w + o * in, *w1 = w0 + in, *w2 = w1 + in, *w3 = w2 + in;
    for (int64_t t = 0; t < rows; ++t) {
      const float* xt = x + t * in;
      float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
      for (int64_t i = 0; i < in; ++i) {
        s0 += w0[i] * xt[i];
        s1 += w1[i] * xt[i];
        s2 += w2[i] * xt[i];
        s3 += w3[i] * xt[i];
      }
      float* yt = y + t * out + o;
      yt[0] = s0 + (b ? b[o] : 0.0f);
      yt[1] = s1 + (b ? b[o + 1] : 0.0f);
      yt[2] = s2 + (b ? b[o + 2] : 0.0f);
      yt[3] = s3 + (b ? b[o + 3] : 0.0f);
    }
  }
  for (; o < last; ++o) {
    const float* wo = w + o * in;
    for (int64_t t = 0; t < rows; ++t) {
      const float* xt = x + t * in;
      float s = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t i = 0; i < in; ++i) s += wo[i] * xt[i];
      y[t * out + o] = s + (b ? b[o] : 0.0f);
    }
  }
}

LORAMUX_ISA_CLONES void Rows(const float* x, int64_t rows, const float* w, const float* b, float* y,
                             int64_t in, int64_t out, int64_t first, int64_t last) {
  RowsOf(x, rows, w, b, y, in, out, first, last);
}

}  // namespace

bool DecodeLinearApplies(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  const auto ok = [&](const torch::Tensor& t) {
    return t.device().is_cpu() && t.scalar_type() == torch::kFloat32 && t.is_contiguous();
  };
  return x.dim() == 2 && x.size(0) <= kDecodeLinearMaxRows && w.dim() == 2 &&
         x.size(1) == w.size(1) && ok(x) && ok(w) && (!b.defined() || (ok(b) && b.dim() == 1));
}

torch::Tensor DecodeLinear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  const int64_t rows = x.size(0), in = w.size(1), out = w.size(0);
  torch::Tensor y = torch::empty({rows, out}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  const float* bp = b.defined() ? b.data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  // Chunks of whole passes, at least 64 W rows each (a few KB of W per task at the least).
  const int64_t passes = (out + kRowsPerPass - 1) / kRowsPerPass;
  at::parallel_for(0, passes, 16, [&](int64_t first, int64_t last) {
    Rows(xp, rows, wp, bp, yp, in, out, first * kRowsPerPass, std::min(out, last * kRowsPerPass));
  });
  return y;
}

torch::Tensor Linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  return DecodeLinearApplies(x, w, b) ? DecodeLinear(x, w, b) : torch::linear(x, w, b);
}

}  // namespace loramux
