#include "tensor/packed_linear.h"

#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include "tensor/huge_pages.h"
#include "tensor/panel_gemm.h"

#ifdef LORAMUX_WITH_ONEDNN
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace loramux {

#ifdef LORAMUX_WITH_ONEDNN
namespace {

using Tag = dnnl::memory::format_tag;

// The packing is tuned for this many rows (a decode batch); every other count reads the same
// layout.
constexpr int64_t kPackRows = 32;

const dnnl::engine& CpuEngine() {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

std::optional<dnnl::memory::data_type> DnnlType(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat32: return dnnl::memory::data_type::f32;
    case torch::kBFloat16: return dnnl::memory::data_type::bf16;
    default: return std::nullopt;
  }
}

dnnl::memory::desc BiasDesc(int64_t out, dnnl::memory::data_type type) {
  return dnnl::memory::desc({1, out}, type, Tag::ab);
}

// x [m, in] · W [in, out] (+ bias [1, out]) -> [m, out], all plain row-major but W (`weights`).
dnnl::matmul::primitive_desc MatmulDesc(int64_t m, int64_t in, int64_t out,
                                        dnnl::memory::data_type type,
                                        const dnnl::memory::desc& weights, bool bias) {
  const dnnl::memory::desc src({m, in}, type, Tag::ab), dst({m, out}, type, Tag::ab);
  return dnnl::matmul::primitive_desc(
      bias ? dnnl::matmul::desc(src, weights, BiasDesc(out, type), dst)
           : dnnl::matmul::desc(src, weights, dst),
      CpuEngine());
}

}  // namespace

struct PackedLinear::OneDnn {
  dnnl::memory::data_type type;
  dnnl::memory::desc weights;  // the packed layout
  mutable std::mutex mu;
  // A primitive per (row count, bias): row counts are bounded by the batch token budget, and a
  // primitive is a few KB.
  mutable std::unordered_map<int64_t, dnnl::matmul> primitives;

  const dnnl::matmul& For(int64_t m, int64_t in, int64_t out, bool bias) const {
    const int64_t key = 2 * m + (bias ? 1 : 0);
    std::lock_guard<std::mutex> lock(mu);
    auto it = primitives.find(key);
    if (it == primitives.end()) {
      it = primitives.emplace(key, dnnl::matmul(MatmulDesc(m, in, out, type, weights, bias))).first;
    }
    return it->second;
  }
};

std::shared_ptr<const PackedLinear> PackedLinear::PackOneDnn(const torch::Tensor& weight) {
  const std::optional<dnnl::memory::data_type> type = DnnlType(weight.scalar_type());
  if (!type) return nullptr;
  const int64_t out = weight.size(0), in = weight.size(1);
  const dnnl::memory::desc any({in, out}, *type, Tag::any);
  dnnl::matmul::primitive_desc desc;
  try {
    desc = MatmulDesc(kPackRows, in, out, *type, any, false);
  } catch (const dnnl::error&) {
    return nullptr;  // no kernel for the dtype on this CPU (bfloat16 without AVX-512, for one)
  }
  if (std::string(desc.impl_info_str()).rfind("ref", 0) == 0) return nullptr;  // not native here
  torch::Tensor packed =
      EmptyOnHugePages({static_cast<int64_t>(desc.weights_desc().get_size())}, torch::kUInt8);
  // W [out, in] row-major is Wᵀ [in, out] in column-major order: tag `ba`.
  dnnl::memory plain({{in, out}, *type, Tag::ba}, CpuEngine(), weight.data_ptr());
  dnnl::memory target(desc.weights_desc(), CpuEngine(), packed.data_ptr());
  dnnl::stream stream(CpuEngine());
  dnnl::reorder(plain, target).execute(stream, plain, target);
  stream.wait();
  auto onednn = std::make_unique<OneDnn>();
  onednn->type = *type;
  onednn->weights = desc.weights_desc();
  return std::shared_ptr<const PackedLinear>(new PackedLinear(
      out, in, weight.scalar_type(), Kernel::kOneDnn, std::move(packed), std::move(onednn)));
}

torch::Tensor PackedLinear::ApplyOneDnn(const torch::Tensor& input,
                                        const torch::Tensor& bias) const {
  const int64_t m = input.size(0);
  torch::Tensor y = torch::empty({m, out_}, input.options());
  if (m == 0) return y;
  const dnnl::memory src({{m, in_}, onednn_->type, Tag::ab}, CpuEngine(), input.data_ptr());
  const dnnl::memory weights(onednn_->weights, CpuEngine(), packed_.data_ptr());
  const dnnl::memory dst({{m, out_}, onednn_->type, Tag::ab}, CpuEngine(), y.data_ptr());
  std::unordered_map<int, dnnl::memory> args = {
      {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, dst}};
  if (bias.defined()) {
    args.emplace(DNNL_ARG_BIAS,
                 dnnl::memory(BiasDesc(out_, onednn_->type), CpuEngine(), bias.data_ptr()));
  }
  dnnl::stream stream(CpuEngine());
  onednn_->For(m, in_, out_, bias.defined()).execute(stream, args);
  stream.wait();
  return y;
}

torch::Tensor PackedLinear::UnpackOneDnn() const {
  torch::Tensor plain = torch::empty({out_, in_}, torch::TensorOptions().dtype(dtype_));
  dnnl::memory source(onednn_->weights, CpuEngine(), packed_.data_ptr());
  dnnl::memory target({{in_, out_}, onednn_->type, Tag::ba}, CpuEngine(), plain.data_ptr());
  dnnl::stream stream(CpuEngine());
  dnnl::reorder(source, target).execute(stream, source, target);
  stream.wait();
  return plain;
}

#else  // no oneDNN in this build.

struct PackedLinear::OneDnn {};

std::shared_ptr<const PackedLinear> PackedLinear::PackOneDnn(const torch::Tensor&) {
  return nullptr;
}
torch::Tensor PackedLinear::ApplyOneDnn(const torch::Tensor&, const torch::Tensor&) const {
  TORCH_CHECK(false, "PackedLinear: built without oneDNN");
}
torch::Tensor PackedLinear::UnpackOneDnn() const {
  TORCH_CHECK(false, "PackedLinear: built without oneDNN");
}

#endif

namespace {

std::optional<PanelType> PanelTypeOf(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat32: return PanelType::kFloat32;
    case torch::kBFloat16: return PanelType::kBFloat16;
    default: return std::nullopt;
  }
}

}  // namespace

std::shared_ptr<const PackedLinear> PackedLinear::PackPanels(const torch::Tensor& weight) {
  const std::optional<PanelType> type = PanelTypeOf(weight.scalar_type());
  if (!type || !PanelGemmRuns(*type)) return nullptr;
  const int64_t out = weight.size(0), in = weight.size(1), group = PanelGroup(*type);
  const int64_t panels = PanelCount(out), groups = (in + group - 1) / group;
  // [out, in] zero-padded to [panels·64, groups·group], then [panel][group of inputs][64][group].
  const torch::Tensor padded =
      torch::constant_pad_nd(weight, {0, groups * group - in, 0, panels * kPanelWidth - out}, 0);
  torch::Tensor packed = EmptyOnHugePages({padded.numel()}, weight.scalar_type());
  packed.view({panels, groups, kPanelWidth, group})
      .copy_(padded.view({panels, kPanelWidth, groups, group}).permute({0, 2, 1, 3}));
  return std::shared_ptr<const PackedLinear>(
      new PackedLinear(out, in, weight.scalar_type(), Kernel::kPanels, std::move(packed), nullptr));
}

torch::Tensor PackedLinear::ApplyPanels(const torch::Tensor& input,
                                        const torch::Tensor& bias) const {
  const int64_t m = input.size(0);
  torch::Tensor y = torch::empty({m, out_}, input.options());
  if (m == 0) return y;
  const torch::Tensor bias32 = bias.defined() ? bias.to(torch::kFloat32).contiguous() : bias;
  const PanelType type = *PanelTypeOf(dtype_);
  const void* x = input.data_ptr();
  const void* panels = packed_.data_ptr();
  const float* b = bias32.defined() ? bias32.data_ptr<float>() : nullptr;
  void* out = y.data_ptr();
  at::parallel_for(0, PanelCount(out_), 1, [&](int64_t first, int64_t last) {
    PanelGemm(type, x, m, in_, panels, out_, b, out, first, last);
  });
  return y;
}

torch::Tensor PackedLinear::UnpackPanels() const {
  const int64_t group = PanelGroup(*PanelTypeOf(dtype_)), groups = (in_ + group - 1) / group;
  return packed_.view({PanelCount(out_), groups, kPanelWidth, group})
      .permute({0, 2, 1, 3})
      .reshape({PanelCount(out_) * kPanelWidth, groups * group})
      .narrow(0, 0, out_)
      .narrow(1, 0, in_)
      .contiguous();
}

std::shared_ptr<const PackedLinear> PackedLinear::Pack(const torch::Tensor& weight, Kernel kernel) {
  if (!weight.device().is_cpu() || weight.dim() != 2 || !weight.is_contiguous()) return nullptr;
  switch (kernel) {
    case Kernel::kPanels: return PackPanels(weight);
    case Kernel::kOneDnn: return PackOneDnn(weight);
    case Kernel::kAuto: {
      std::shared_ptr<const PackedLinear> panels = PackPanels(weight);
      return panels != nullptr ? panels : PackOneDnn(weight);
    }
  }
  return nullptr;
}

torch::Tensor PackedLinear::Apply(const torch::Tensor& x, const torch::Tensor& bias) const {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == in_ && x.scalar_type() == dtype_ && x.device().is_cpu(),
              "PackedLinear: x must be [m, ", in_, "] ", dtype_, " on the CPU, got ", x.sizes(),
              " ", x.scalar_type());
  TORCH_CHECK(!bias.defined() ||
                  (bias.numel() == out_ && bias.scalar_type() == dtype_ && bias.device().is_cpu()),
              "PackedLinear: bias must be [", out_, "] ", dtype_, " on the CPU");
  const torch::Tensor input = x.contiguous();
  const torch::Tensor b = bias.defined() ? bias.contiguous() : bias;
  return kernel_ == Kernel::kPanels ? ApplyPanels(input, b) : ApplyOneDnn(input, b);
}

torch::Tensor PackedLinear::Unpack() const {
  return kernel_ == Kernel::kPanels ? UnpackPanels() : UnpackOneDnn();
}

torch::Tensor PackedLinear::Rows(const torch::Tensor& index) const {
  if (kernel_ != Kernel::kPanels) return UnpackOneDnn().index_select(0, index);
  // Row r is column r % 64 of panel r / 64: [panel][group of inputs][64][group].
  const int64_t group = PanelGroup(*PanelTypeOf(dtype_)), groups = (in_ + group - 1) / group;
  const torch::Tensor panels = packed_.view({PanelCount(out_), groups, kPanelWidth, group});
  const torch::Tensor row = index.to(torch::kInt64);
  TORCH_CHECK(row.dim() == 1 && (row.numel() == 0 || (row.min().item<int64_t>() >= 0 &&
                                                      row.max().item<int64_t>() < out_)),
              "PackedLinear::Rows: indices must be a vector in [0, ", out_, ")");
  using torch::indexing::Slice;
  return panels.index({row.div(kPanelWidth, "floor"), Slice(), row.remainder(kPanelWidth), Slice()})
      .reshape({row.numel(), groups * group})
      .narrow(1, 0, in_)
      .contiguous();
}

PackedLinear::PackedLinear(int64_t out, int64_t in, torch::ScalarType dtype, Kernel kernel,
                           torch::Tensor packed, std::unique_ptr<OneDnn> onednn)
    : out_(out),
      in_(in),
      dtype_(dtype),
      kernel_(kernel),
      packed_(std::move(packed)),
      onednn_(std::move(onednn)) {}

PackedLinear::~PackedLinear() = default;

}  // namespace loramux
