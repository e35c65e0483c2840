#include "model/row_ops.h"

#include <cmath>

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include "model/float_elements.h"

namespace loramux {
namespace {

bool Fused(const torch::Tensor& x) {
  const torch::ScalarType t = x.scalar_type();
  return x.device().is_cpu() && x.is_contiguous() &&
         (t == torch::kFloat32 || t == torch::kBFloat16);
}

// --- RMS norm -----------------------------------------------------------------------------------

template <typename T>
LORAMUX_ALWAYS_INLINE void RmsNormRows(const T* x, const T* w, T* out, int64_t n, float eps,
                                       int64_t first, int64_t last) {
  for (int64_t r = first; r < last; ++r) {
    const T* xr = x + r * n;
    T* o = out + r * n;
    float sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < n; ++i) sum += Widen(xr[i]) * Widen(xr[i]);
    const float inv = 1.0f / std::sqrt(sum / static_cast<float>(n) + eps);
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) o[i] = Narrow<T>(Widen(w[i]) * Rounded<T>(Widen(xr[i]) * inv));
  }
}

LORAMUX_ISA_CLONES void RmsNormF32(const float* x, const float* w, float* out, int64_t n, float eps,
                                   int64_t first, int64_t last) {
  RmsNormRows(x, w, out, n, eps, first, last);
}
LORAMUX_ISA_CLONES void RmsNormBF16(const c10::BFloat16* x, const c10::BFloat16* w,
                                    c10::BFloat16* out, int64_t n, float eps, int64_t first,
                                    int64_t last) {
  RmsNormRows(x, w, out, n, eps, first, last);
}

// --- rotary embedding ---------------------------------------------------------------------------

template <typename T>
LORAMUX_ALWAYS_INLINE void RopeRows(T* x, const float* cos, const float* sin,
                                    const int64_t* positions, int64_t heads, int64_t hd,
                                    int64_t first, int64_t last) {
  const int64_t half = hd / 2;
  for (int64_t t = first; t < last; ++t) {
    const float* c = cos + positions[t] * hd;
    const float* s = sin + positions[t] * hd;
    for (int64_t h = 0; h < heads; ++h) {
      T* v = x + (t * heads + h) * hd;
#pragma omp simd
      for (int64_t i = 0; i < half; ++i) {
        const float a = Widen(v[i]), b = Widen(v[i + half]);
        v[i] = Narrow<T>(a * c[i] - b * s[i]);
        v[i + half] = Narrow<T>(b * c[i + half] + a * s[i + half]);
      }
    }
  }
}

LORAMUX_ISA_CLONES void RopeF32(float* x, const float* cos, const float* sin,
                                const int64_t* positions, int64_t heads, int64_t hd, int64_t first,
                                int64_t last) {
  RopeRows(x, cos, sin, positions, heads, hd, first, last);
}
LORAMUX_ISA_CLONES void RopeBF16(c10::BFloat16* x, const float* cos, const float* sin,
                                 const int64_t* positions, int64_t heads, int64_t hd, int64_t first,
                                 int64_t last) {
  RopeRows(x, cos, sin, positions, heads, hd, first, last);
}

// --- SwiGLU gate --------------------------------------------------------------------------------

template <typename T>
LORAMUX_ALWAYS_INLINE void SiluMulRange(const T* gate, const T* up, T* out, int64_t first,
                                        int64_t last) {
#pragma omp simd
  for (int64_t i = first; i < last; ++i) {
    const float g = Widen(gate[i]);
    out[i] = Narrow<T>(Rounded<T>(g / (1.0f + FastExp(-g))) * Widen(up[i]));
  }
}

LORAMUX_ISA_CLONES void SiluMulF32(const float* gate, const float* up, float* out, int64_t first,
                                   int64_t last) {
  SiluMulRange(gate, up, out, first, last);
}
LORAMUX_ISA_CLONES void SiluMulBF16(const c10::BFloat16* gate, const c10::BFloat16* up,
                                    c10::BFloat16* out, int64_t first, int64_t last) {
  SiluMulRange(gate, up, out, first, last);
}

}  // namespace

torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  if (!Fused(x) || !weight.is_contiguous() || weight.scalar_type() != x.scalar_type()) {
    const torch::Tensor xf = x.to(torch::kFloat32);
    const torch::Tensor normed = xf * torch::rsqrt(xf.pow(2).mean(-1, true) + eps);
    return weight * normed.to(x.scalar_type());
  }
  torch::Tensor out = torch::empty_like(x);
  const int64_t n = x.size(-1), rows = x.numel() / n;
  at::parallel_for(0, rows, 1, [&](int64_t first, int64_t last) {
    if (x.scalar_type() == torch::kFloat32) {
      RmsNormF32(x.data_ptr<float>(), weight.data_ptr<float>(), out.data_ptr<float>(), n,
                 static_cast<float>(eps), first, last);
    } else {
      RmsNormBF16(x.data_ptr<c10::BFloat16>(), weight.data_ptr<c10::BFloat16>(),
                  out.data_ptr<c10::BFloat16>(), n, static_cast<float>(eps), first, last);
    }
  });
  return out;
}

std::pair<torch::Tensor, torch::Tensor> RopeTables(const ModelConfig& c, torch::ScalarType dtype) {
  torch::Tensor inv_freq =
      1.0 / torch::pow(c.rope_theta, torch::arange(0, c.head_dim, 2, torch::kInt64).to(dtype) /
                                         static_cast<double>(c.head_dim));
  const RopeScaling& s = c.rope_scaling;
  if (s.type == RopeScaling::Type::kLinear) {
    inv_freq = inv_freq / s.factor;
  } else if (s.type == RopeScaling::Type::kLlama3) {
    const double old_len = static_cast<double>(s.original_max_position_embeddings);
    const double low_wavelen = old_len / s.low_freq_factor;
    const double high_wavelen = old_len / s.high_freq_factor;
    const torch::Tensor wavelen = 2 * M_PI / inv_freq;
    const torch::Tensor smooth =
        (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
    const torch::Tensor smoothed = (1 - smooth) * inv_freq / s.factor + smooth * inv_freq;
    inv_freq = torch::where(wavelen < high_wavelen, inv_freq,
                            torch::where(wavelen > low_wavelen, inv_freq / s.factor, smoothed));
  }
  const torch::Tensor positions = torch::arange(c.max_position_embeddings, torch::kInt64).to(dtype);
  const torch::Tensor freqs = torch::outer(positions, inv_freq);
  const torch::Tensor emb = torch::cat({freqs, freqs}, -1);
  return {emb.cos(), emb.sin()};
}

void ApplyRope(torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
               const torch::Tensor& positions) {
  if (!Fused(x) || !cos.is_contiguous() || !sin.is_contiguous() || x.size(-1) % 2 != 0 ||
      positions.scalar_type() != torch::kInt64 || !positions.is_contiguous()) {
    const torch::Tensor c = cos.index_select(0, positions).unsqueeze(1);
    const torch::Tensor s = sin.index_select(0, positions).unsqueeze(1);
    const int64_t half = x.size(-1) / 2;
    const torch::Tensor xf = x.to(torch::kFloat32);
    const torch::Tensor rotated =
        torch::cat({-xf.narrow(-1, half, half), xf.narrow(-1, 0, half)}, -1);
    x.copy_(xf * c + rotated * s);
    return;
  }
  const int64_t tokens = x.size(0), heads = x.size(1), hd = x.size(2);
  at::parallel_for(0, tokens, 1, [&](int64_t first, int64_t last) {
    if (x.scalar_type() == torch::kFloat32) {
      RopeF32(x.data_ptr<float>(), cos.data_ptr<float>(), sin.data_ptr<float>(),
              positions.data_ptr<int64_t>(), heads, hd, first, last);
    } else {
      RopeBF16(x.data_ptr<c10::BFloat16>(), cos.data_ptr<float>(), sin.data_ptr<float>(),
               positions.data_ptr<int64_t>(), heads, hd, first, last);
    }
  });
}

torch::Tensor SiluMul(const torch::Tensor& gate, const torch::Tensor& up) {
  if (!Fused(gate) || !up.is_contiguous() || up.scalar_type() != gate.scalar_type()) {
    return torch::silu(gate) * up;
  }
  torch::Tensor out = torch::empty_like(gate);
  at::parallel_for(0, gate.numel(), 4096, [&](int64_t first, int64_t last) {
    if (gate.scalar_type() == torch::kFloat32) {
      SiluMulF32(gate.data_ptr<float>(), up.data_ptr<float>(), out.data_ptr<float>(), first, last);
    } else {
      SiluMulBF16(gate.data_ptr<c10::BFloat16>(), up.data_ptr<c10::BFloat16>(),
                  out.data_ptr<c10::BFloat16>(), first, last);
    }
  });
  return out;
}

}  // namespace loramux
