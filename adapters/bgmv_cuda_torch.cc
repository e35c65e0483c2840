#include "adapters/bgmv_cuda_torch.h"

#include <cstring>

#include <c10/cuda/CUDAStream.h>
#include <torch/torch.h>

#include "adapters/adapter_weights.h"
#include "adapters/bgmv_cuda.h"

namespace loramux {
namespace {

bool KernelElement(torch::ScalarType t, CudaElement* out) {
  switch (t) {
    case torch::kFloat32: *out = CudaElement::kFloat32; return true;
    case torch::kBFloat16: *out = CudaElement::kBFloat16; return true;
    case torch::kFloat16: *out = CudaElement::kFloat16; return true;
    default: return false;
  }
}

// `bytes` copied into pinned host memory, then to `device` without blocking the host: the copy is
// ordered on the current stream before the kernels that read it.
torch::Tensor UploadAsync(const void* bytes, int64_t size, torch::Device device) {
  torch::Tensor host =
      torch::empty({size}, torch::TensorOptions().dtype(torch::kUInt8).pinned_memory(true));
  std::memcpy(host.data_ptr(), bytes, static_cast<size_t>(size));
  return host.to(device, /*non_blocking=*/true);
}

}  // namespace

bool CudaBgmvApplies(const torch::Tensor& x, const torch::Tensor& y,
                     const std::vector<ModuleRun>& runs) {
  const torch::ScalarType t = x.scalar_type();
  if (!x.is_cuda() || (t != torch::kFloat32 && t != torch::kBFloat16) || y.scalar_type() != t ||
      !x.is_contiguous() || !y.is_contiguous() || x.size(0) > 65535) {
    return false;
  }
  for (const ModuleRun& run : runs) {
    const ModuleAdapter& m = *run.module;
    CudaElement e;
    if (m.kind == ModuleAdapter::Kind::kDoraCol || m.rank < 1 || m.rank > kBgmvCudaMaxRank ||
        !KernelElement(m.a.scalar_type(), &e) || m.b_t.scalar_type() != m.a.scalar_type() ||
        !m.a.is_contiguous() || !m.b_t.is_contiguous()) {
      return false;
    }
  }
  return true;
}

void AddCudaBgmvDeltas(const torch::Tensor& x, torch::Tensor& y, const torch::Tensor& bias,
                       const std::vector<ModuleRun>& runs) {
  const int64_t tokens = x.size(0);
  std::vector<BgmvCudaSegment> segments;
  std::vector<int32_t> token_segment(static_cast<size_t>(tokens), -1);
  std::vector<torch::Tensor> gains;  // alive until the launch is queued (stream-ordered reuse)
  for (const ModuleRun& run : runs) {
    const ModuleAdapter& m = *run.module;
    BgmvCudaSegment s;
    s.a = m.a.data_ptr();
    s.b_t = m.b_t.data_ptr();
    KernelElement(m.a.scalar_type(), &s.factor);
    s.rank = static_cast<int32_t>(m.rank);
    s.scale = static_cast<float>(run.scale * m.scale);
    if (m.kind == ModuleAdapter::Kind::kDoraRow) {
      // At scale 1 the gain precomputed at load (its float32 copy where the load kept one; on
      // CUDA it does not yet, so a 16-bit gain widens here, [out] floats), else computed now.
      torch::Tensor gain = run.scale != 1.0       ? m.GainAt(run.scale)
                           : m.gain_f32.defined() ? m.gain_f32
                                                  : m.gain;
      gain = gain.to(torch::kFloat32).contiguous();
      s.gain = gains.emplace_back(std::move(gain)).data_ptr<float>();
    }
    for (int64_t t = run.begin; t < run.end; ++t) {
      token_segment[static_cast<size_t>(t)] = static_cast<int32_t>(segments.size());
    }
    segments.push_back(s);
  }
  const torch::Tensor device_segments = UploadAsync(
      segments.data(), static_cast<int64_t>(segments.size() * sizeof(BgmvCudaSegment)), x.device());
  const torch::Tensor device_map =
      UploadAsync(token_segment.data(),
                  static_cast<int64_t>(token_segment.size() * sizeof(int32_t)), x.device());
  torch::Tensor workspace = torch::empty(
      {tokens, kBgmvCudaMaxRank}, torch::TensorOptions().device(x.device()).dtype(torch::kFloat32));
  torch::Tensor bias32;
  if (bias.defined()) bias32 = bias.to(torch::kFloat32).contiguous();

  BgmvCudaProblem p;
  p.x = x.data_ptr();
  p.y = y.data_ptr();
  p.bias = bias32.defined() ? bias32.data_ptr<float>() : nullptr;
  p.activation =
      x.scalar_type() == torch::kBFloat16 ? CudaElement::kBFloat16 : CudaElement::kFloat32;
  p.tokens = tokens;
  p.in = x.size(1);
  p.out = y.size(1);
  p.segments = static_cast<const BgmvCudaSegment*>(device_segments.data_ptr());
  p.token_segment = static_cast<const int32_t*>(device_map.data_ptr());
  p.workspace = workspace.data_ptr<float>();
  p.stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
  const int code = BgmvCuda(p);
  TORCH_CHECK(code == 0, "BgmvCuda: ", BgmvCudaErrorString(code));
}

}  // namespace loramux
