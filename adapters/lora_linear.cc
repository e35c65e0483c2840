#include "adapters/lora_linear.h"

#include <torch/torch.h>

#include "adapters/adapter_weights.h"

namespace loramux {
namespace {

// Adds one module's delta to rows y (in place) for inputs x of the same rows.
void AddDelta(const ModuleAdapter& m, double scale, const LinearWeights& base,
              const torch::Tensor& x, torch::Tensor y) {
  using Kind = ModuleAdapter::Kind;
  if (m.kind == Kind::kDoraCol) {
    // y = W (g ⊙ x) + s B A (g ⊙ x) + b = y0 + W((g - 1) ⊙ x) + sBA(g ⊙ x)
    const torch::Tensor g = m.GainAt(scale);
    const torch::Tensor gx = x * g;
    y.add_(torch::matmul(gx - x, base.weight.t()));
    y.add_(torch::matmul(torch::matmul(gx, m.a.t()), m.b.t()), scale);
    return;
  }
  torch::Tensor lora = torch::matmul(torch::matmul(x, m.a.t()), m.b.t());
  if (m.kind == Kind::kLora) {
    y.add_(lora, scale);
    return;
  }
  // DoRA per output row: y = g ⊙ (y0 - b + c·sBAx) + b.
  const torch::Tensor g = m.GainAt(scale);
  if (base.bias.defined()) y.sub_(base.bias);
  y.add_(lora, scale).mul_(g);
  if (base.bias.defined()) y.add_(base.bias);
}

}  // namespace

torch::Tensor AdaptedLinear(const torch::Tensor& x, const LinearWeights& base,
                            int64_t module_index, const std::vector<AdapterSegment>& segments) {
  torch::Tensor y = torch::linear(x, base.weight, base.bias);
  for (const AdapterSegment& segment : segments) {
    if (segment.adapter == nullptr || segment.end <= segment.begin) continue;
    const ModuleAdapter* m = segment.adapter->module(module_index);
    if (m == nullptr) continue;
    const int64_t len = segment.end - segment.begin;
    AddDelta(*m, segment.scale, base, x.narrow(0, segment.begin, len),
             y.narrow(0, segment.begin, len));
  }
  return y;
}

}  // namespace loramux
