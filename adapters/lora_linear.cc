#include "adapters/lora_linear.h"

#include <torch/torch.h>

#include "adapters/adapter_weights.h"
#include "adapters/bgmv_cpu.h"

namespace loramux {
namespace {

// Adds one module's delta to rows y (in place) for inputs x of the same rows.
// `scale` is the request scale c; the delta carries c·s.
void AddDelta(const ModuleAdapter& m, double scale, const LinearWeights& base,
              const torch::Tensor& x, torch::Tensor y) {
  using Kind = ModuleAdapter::Kind;
  if (m.kind == Kind::kDoraCol) {
    // y = W (g ⊙ x) + s B A (g ⊙ x) + b = y0 + W((g - 1) ⊙ x) + sBA(g ⊙ x)
    const torch::Tensor g = m.GainAt(scale);
    const torch::Tensor gx = x * g;
    y.add_(torch::matmul(gx - x, base.weight.t()));
    y.add_(torch::matmul(torch::matmul(gx, m.a.t()), m.b_t), scale * m.scale);
    return;
  }
  torch::Tensor lora = torch::matmul(torch::matmul(x, m.a.t()), m.b_t);
  if (m.kind == Kind::kLora) {
    y.add_(lora, scale * m.scale);
    return;
  }
  // DoRA per output row: y = g ⊙ (y0 - b + c·sBAx) + b.
  const torch::Tensor g = m.GainAt(scale);
  if (base.bias.defined()) y.sub_(base.bias);
  y.add_(lora, scale * m.scale).mul_(g);
  if (base.bias.defined()) y.add_(base.bias);
}

}  // namespace

// Short segments (decode) go to the fused CPU kernel when the tensors allow it; longer ones
// (prefill) are better served by two GEMMs each.
constexpr int64_t kFusedMaxTokens = 4;
constexpr int64_t kFusedMaxRank = 512;

bool FusedKernelApplies(const torch::Tensor& x, const torch::Tensor& y) {
  return x.device().is_cpu() && x.scalar_type() == torch::kFloat32 && x.is_contiguous() &&
         y.is_contiguous();
}

bool FusedSegment(const ModuleAdapter& m, int64_t len) {
  return len <= kFusedMaxTokens && m.rank <= kFusedMaxRank && m.kind != ModuleAdapter::Kind::kDoraCol;
}

torch::Tensor AdaptedLinear(const torch::Tensor& x, const LinearWeights& base,
                            int64_t module_index, const std::vector<AdapterSegment>& segments) {
  torch::Tensor y = torch::linear(x, base.weight, base.bias);
  AddAdapterDeltas(x, y, base, module_index, segments);
  return y;
}

void AddAdapterDeltas(const torch::Tensor& x, torch::Tensor& y, const LinearWeights& base,
                      int64_t module_index, const std::vector<AdapterSegment>& segments) {
  const bool fused = FusedKernelApplies(x, y);
  std::vector<BgmvSegment> short_segments;
  std::vector<torch::Tensor> gains;  // keeps DoRA gains at non-unit scales alive for the kernel
  for (const AdapterSegment& segment : segments) {
    if (segment.adapter == nullptr || segment.end <= segment.begin) continue;
    const ModuleAdapter* m = segment.adapter->module(module_index);
    if (m == nullptr) continue;
    const int64_t len = segment.end - segment.begin;
    if (fused && FusedSegment(*m, len)) {
      BgmvSegment s{m->a.data_ptr<float>(), m->b_t.data_ptr<float>(), nullptr, m->rank,
                    static_cast<float>(segment.scale * m->scale), segment.begin, segment.end};
      if (m->kind == ModuleAdapter::Kind::kDoraRow && segment.scale == 1.0) {
        s.gain = m->gain.data_ptr<float>();  // precomputed at load, contiguous
      } else if (m->kind == ModuleAdapter::Kind::kDoraRow) {
        gains.push_back(m->GainAt(segment.scale).contiguous());
        s.gain = gains.back().data_ptr<float>();
      }
      short_segments.push_back(s);
      continue;
    }
    AddDelta(*m, segment.scale, base, x.narrow(0, segment.begin, len),
             y.narrow(0, segment.begin, len));
  }
  if (!short_segments.empty()) {
    const float* bias = base.bias.defined() ? base.bias.data_ptr<float>() : nullptr;
    BgmvCpu(x.data_ptr<float>(), y.data_ptr<float>(), bias, x.size(1), y.size(1), short_segments);
  }
}

}  // namespace loramux
