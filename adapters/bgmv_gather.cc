#include "adapters/bgmv_gather.h"

#include <map>
#include <utility>

#include <torch/torch.h>

#include "adapters/adapter_weights.h"

namespace loramux {
namespace {

// One group: runs whose modules share rank and kind, so their factors stack.
void AddGroup(const torch::Tensor& x, torch::Tensor& y, const torch::Tensor& bias,
              const std::vector<const ModuleRun*>& group) {
  const bool dora = group.front()->module->kind == ModuleAdapter::Kind::kDoraRow;
  std::vector<torch::Tensor> a, b_t, gains;
  std::vector<int64_t> rows;
  std::vector<double> scales;
  for (const ModuleRun* run : group) {
    const ModuleAdapter& m = *run->module;
    const torch::Tensor gain = dora ? m.GainAt(run->scale) : torch::Tensor();
    for (int64_t t = run->begin; t < run->end; ++t) {
      a.push_back(m.a);
      b_t.push_back(m.b_t);
      if (dora) gains.push_back(gain);
      rows.push_back(t);
      scales.push_back(run->scale * m.scale);
    }
  }
  // Scales apply at float32 or better, whatever the serving dtype.
  const torch::ScalarType scale_type =
      x.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
  const torch::Tensor index = torch::tensor(rows).to(x.device());
  const torch::Tensor scale =
      torch::tensor(scales, torch::kFloat64).to(x.device(), scale_type).view({-1, 1, 1});
  // [n,r,in] x [n,in,1] -> [n,r,1], scaled, then (as [n,1,r]) x [n,r,out] -> [n,out].
  // Factors kept in another dtype than the activations widen exactly (a no-op when they agree).
  const torch::Tensor v =
      torch::bmm(torch::stack(a).to(x.scalar_type()), x.index_select(0, index).unsqueeze(2));
  const torch::Tensor scaled = (v.to(scale_type) * scale).to(x.scalar_type());
  const torch::Tensor delta =
      torch::bmm(scaled.transpose(1, 2), torch::stack(b_t).to(x.scalar_type())).squeeze(1);
  if (!dora) {
    y.index_add_(0, index, delta);
    return;
  }
  torch::Tensor out = y.index_select(0, index);
  if (bias.defined()) out.sub_(bias);
  out.add_(delta).mul_(torch::stack(gains));
  if (bias.defined()) out.add_(bias);
  y.index_copy_(0, index, out);
}

}  // namespace

void AddGatheredDeltas(const torch::Tensor& x, torch::Tensor& y, const torch::Tensor& bias,
                       const std::vector<ModuleRun>& runs) {
  std::map<std::pair<int64_t, ModuleAdapter::Kind>, std::vector<const ModuleRun*>> groups;
  for (const ModuleRun& run : runs) {
    if (run.end > run.begin) groups[{run.module->rank, run.module->kind}].push_back(&run);
  }
  for (const auto& [key, group] : groups) AddGroup(x, y, bias, group);
}

}  // namespace loramux
