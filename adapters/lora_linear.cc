#include "adapters/lora_linear.h"

#include <algorithm>
#include <limits>
#include <optional>

#include <torch/torch.h>

#include "adapters/adapter_weights.h"
#include "adapters/bgmv_cpu.h"
#include "adapters/bgmv_gather.h"
#ifdef LORAMUX_WITH_CUDA
#include "adapters/bgmv_cuda_torch.h"
#endif

namespace loramux {
namespace {

// Adds one module's delta to rows y (in place) for inputs x of the same rows.
// `scale` is the request scale c; the delta carries c·s.
void AddDelta(const ModuleAdapter& m, double scale, const LinearWeights& base,
              const torch::Tensor& x, torch::Tensor y) {
  using Kind = ModuleAdapter::Kind;
  // Factors kept in 16 bits under a float32 model widen exactly (a no-op when dtypes agree).
  const torch::Tensor a = m.a.to(x.scalar_type()), b_t = m.b_t.to(x.scalar_type());
  if (m.kind == Kind::kDoraCol) {
    // y = W (g ⊙ x) + s B A (g ⊙ x) + b = y0 + W((g - 1) ⊙ x) + sBA(g ⊙ x)
    const torch::Tensor g = m.GainAt(scale);
    const torch::Tensor gx = x * g;
    y.add_(BaseLinear(gx - x, base, /*with_bias=*/false));
    y.add_(torch::matmul(torch::matmul(gx, a.t()), b_t), scale * m.scale);
    return;
  }
  torch::Tensor lora = torch::matmul(torch::matmul(x, a.t()), b_t);
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

constexpr int64_t kShortMaxTokens = 4;  // decode (and short speculative runs)

// The longest prefill run that the fused CPU kernel takes (rows of one adapter share the factors'
// reads, four at a time). Measured in-process on the issue-17 model (32 decode rows + one prefill
// run of a rank-16 LoRA, all 7 projections, 2 threads; the side path's cost per step, against two
// GEMMs per run): float32 runs of 16 / 64 / 256 / 512 tokens cost 0.8 / 7 / 26 / 48 ms less: the
// kernel wins at every length; bfloat16 runs of 16 / 128 tokens 5.5 / 2.0 ms less, 256 tokens the
// same (14.9 against 15.2 ms), 512 tokens 9 ms more (oneDNN's bfloat16 GEMMs win on long runs).
int64_t FusedMaxTokens(const torch::Tensor& x) {
  if (!x.device().is_cpu()) return kShortMaxTokens;
  return x.scalar_type() == torch::kFloat32 ? std::numeric_limits<int64_t>::max() : 256;
}

// The kernel computes in float32; 16-bit activations widen exactly on the way in and the sums
// round once on the way out, so bfloat16 serving takes the same fused path as float32.
bool FusedKernelApplies(const torch::Tensor& x, const torch::Tensor& y) {
  const torch::ScalarType t = x.scalar_type();
  return x.device().is_cpu() &&
         (t == torch::kFloat32 || t == torch::kBFloat16 || t == torch::kFloat16) &&
         x.is_contiguous() && y.is_contiguous();
}

// The kernel's name for a factor dtype, if it takes it.
std::optional<FactorType> KernelFactorType(const ModuleAdapter& m) {
  if (m.rank > kBgmvMaxRank) return std::nullopt;
  switch (m.a.scalar_type()) {
    case torch::kFloat32: return FactorType::kFloat32;
    case torch::kBFloat16: return FactorType::kBFloat16;
    case torch::kFloat16: return FactorType::kFloat16;
    default: return std::nullopt;
  }
}

// Decode segments and runs of at most `max_tokens` of LoRA or per-row DoRA go to one batched call
// for all segments.
bool Batchable(const ModuleAdapter& m, const AdapterSegment& segment, DeltaPath path,
               int64_t max_tokens) {
  if (path == DeltaPath::kSegmentGemms || m.kind == ModuleAdapter::Kind::kDoraCol) return false;
  return path == DeltaPath::kGathered || segment.decode ||
         segment.end - segment.begin <= max_tokens;
}

void AddFusedCpu(const torch::Tensor& x, torch::Tensor& y, const LinearWeights& base,
                 const std::vector<ModuleRun>& runs) {
  const auto f32 = [](const torch::Tensor& t) { return t.to(torch::kFloat32).contiguous(); };
  std::vector<BgmvSegment> segments;
  std::vector<torch::Tensor> gains;  // keeps the DoRA gains the kernel reads alive
  for (const ModuleRun& run : runs) {
    const ModuleAdapter& m = *run.module;
    BgmvSegment s{m.a.data_ptr(), m.b_t.data_ptr(), *KernelFactorType(m),
                  nullptr,        m.rank,           static_cast<float>(run.scale * m.scale),
                  run.begin,      run.end};
    if (m.kind == ModuleAdapter::Kind::kDoraRow) {
      // At scale 1 the gain precomputed at load, else computed now; float32 for the kernel.
      torch::Tensor gain = run.scale != 1.0       ? m.GainAt(run.scale)
                           : m.gain_f32.defined() ? m.gain_f32
                                                  : m.gain;
      if (gain.scalar_type() != torch::kFloat32 || !gain.is_contiguous()) gain = f32(gain);
      s.gain = gains.emplace_back(std::move(gain)).data_ptr<float>();
    }
    segments.push_back(s);
  }
  torch::Tensor bias;  // read by DoRA rows only
  if (base.bias.defined()) bias = f32(base.bias);
  const float* bias_data = bias.defined() ? bias.data_ptr<float>() : nullptr;
  if (x.scalar_type() == torch::kBFloat16 && y.scalar_type() == torch::kBFloat16) {
    // Rows widen and round inside the kernel: no float32 copies of x and y.
    BgmvCpuBFloat16(static_cast<const uint16_t*>(x.data_ptr()),
                    static_cast<uint16_t*>(y.data_ptr()), bias_data, x.size(1), y.size(1),
                    segments);
    return;
  }
  const bool widen = x.scalar_type() != torch::kFloat32;
  const torch::Tensor x32 = widen ? f32(x) : x;
  torch::Tensor y32 = widen ? f32(y) : y;
  BgmvCpu(x32.data_ptr<float>(), y32.data_ptr<float>(), bias_data, x.size(1), y.size(1), segments);
  if (widen) y.copy_(y32);
}

}  // namespace

torch::Tensor BaseLinear(const torch::Tensor& x, const LinearWeights& base, bool with_bias) {
  const torch::Tensor bias = with_bias ? base.bias : torch::Tensor();
  if (!base.packed) return torch::linear(x, base.weight, bias);
  if (x.dim() == 2 && x.scalar_type() == base.packed->dtype()) return base.packed->Apply(x, bias);
  // Other shapes or dtypes (not the serving path's): through a plain copy.
  return torch::linear(x, base.packed->Unpack(), bias);
}

torch::Tensor AdaptedLinear(const torch::Tensor& x, const LinearWeights& base, int64_t module_index,
                            const std::vector<AdapterSegment>& segments, DeltaPath path) {
  torch::Tensor y = BaseLinear(x, base);
  AddAdapterDeltas(x, y, base, module_index, segments, path);
  return y;
}

void AddAdapterDeltas(const torch::Tensor& x, torch::Tensor& y, const LinearWeights& base,
                      int64_t module_index, const std::vector<AdapterSegment>& segments,
                      DeltaPath path) {
  std::vector<ModuleRun> batched;
  const int64_t max_tokens = FusedMaxTokens(x);
  for (const AdapterSegment& segment : segments) {
    if (segment.adapter == nullptr || segment.end <= segment.begin) continue;
    const ModuleAdapter* m = segment.adapter->module(module_index);
    if (m == nullptr) continue;
    const int64_t len = segment.end - segment.begin;
    if (Batchable(*m, segment, path, max_tokens)) {
      batched.push_back({m, segment.scale, segment.begin, segment.end});
      continue;
    }
    AddDelta(*m, segment.scale, base, x.narrow(0, segment.begin, len),
             y.narrow(0, segment.begin, len));
  }
  if (batched.empty()) return;
  if (path == DeltaPath::kGathered || !x.device().is_cpu()) {
#ifdef LORAMUX_WITH_CUDA
    // On CUDA, the fused gather-BGMV kernels (two launches per module) where they apply.
    if (path == DeltaPath::kAuto && CudaBgmvApplies(x, y, batched)) {
      AddCudaBgmvDeltas(x, y, base.bias, batched);
      return;
    }
#endif
    AddGatheredDeltas(x, y, base.bias, batched);
    return;
  }
  // On the CPU, LibTorch's batched GEMMs of matrix-vector products are slower than one small
  // GEMM pair per segment (adapter_bench measures both): the fused kernel, where it applies,
  // beats both.
  const bool fused = FusedKernelApplies(x, y) &&
                     std::all_of(batched.begin(), batched.end(), [](const ModuleRun& r) {
                       return KernelFactorType(*r.module).has_value();
                     });
  if (fused) {
    AddFusedCpu(x, y, base, batched);
    return;
  }
  for (const ModuleRun& run : batched) {
    const int64_t len = run.end - run.begin;
    AddDelta(*run.module, run.scale, base, x.narrow(0, run.begin, len),
             y.narrow(0, run.begin, len));
  }
}

}  // namespace loramux
