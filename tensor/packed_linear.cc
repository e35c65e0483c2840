#include "tensor/packed_linear.h"

#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include <torch/torch.h>

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

struct PackedLinear::Kernels {
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

std::shared_ptr<const PackedLinear> PackedLinear::Pack(const torch::Tensor& weight) {
  const std::optional<dnnl::memory::data_type> type = DnnlType(weight.scalar_type());
  if (!type || !weight.device().is_cpu() || weight.dim() != 2 || !weight.is_contiguous()) {
    return nullptr;
  }
  const int64_t out = weight.size(0), in = weight.size(1);
  const dnnl::memory::desc any({in, out}, *type, Tag::any);
  const dnnl::matmul::primitive_desc desc = MatmulDesc(kPackRows, in, out, *type, any, false);
  if (std::string(desc.impl_info_str()).rfind("ref", 0) == 0) return nullptr;  // not native here
  torch::Tensor packed =
      torch::empty({static_cast<int64_t>(desc.weights_desc().get_size())}, torch::kUInt8);
  // W [out, in] row-major is Wᵀ [in, out] in column-major order: tag `ba`.
  dnnl::memory plain({{in, out}, *type, Tag::ba}, CpuEngine(), weight.data_ptr());
  dnnl::memory target(desc.weights_desc(), CpuEngine(), packed.data_ptr());
  dnnl::stream stream(CpuEngine());
  dnnl::reorder(plain, target).execute(stream, plain, target);
  stream.wait();
  auto kernels = std::make_unique<Kernels>();
  kernels->type = *type;
  kernels->weights = desc.weights_desc();
  return std::shared_ptr<const PackedLinear>(
      new PackedLinear(out, in, weight.scalar_type(), std::move(packed), std::move(kernels)));
}

torch::Tensor PackedLinear::Apply(const torch::Tensor& x, const torch::Tensor& bias) const {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == in_ && x.scalar_type() == dtype_ && x.device().is_cpu(),
              "PackedLinear: x must be [m, ", in_, "] ", dtype_, " on the CPU, got ", x.sizes(),
              " ", x.scalar_type());
  TORCH_CHECK(!bias.defined() ||
                  (bias.numel() == out_ && bias.scalar_type() == dtype_ && bias.device().is_cpu()),
              "PackedLinear: bias must be [", out_, "] ", dtype_, " on the CPU");
  const torch::Tensor input = x.contiguous();
  const int64_t m = input.size(0);
  torch::Tensor y = torch::empty({m, out_}, input.options());
  if (m == 0) return y;
  const dnnl::memory src({{m, in_}, kernels_->type, Tag::ab}, CpuEngine(), input.data_ptr());
  const dnnl::memory weights(kernels_->weights, CpuEngine(), packed_.data_ptr());
  const dnnl::memory dst({{m, out_}, kernels_->type, Tag::ab}, CpuEngine(), y.data_ptr());
  std::unordered_map<int, dnnl::memory> args = {
      {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, dst}};
  torch::Tensor b;
  if (bias.defined()) {
    b = bias.contiguous();
    args.emplace(DNNL_ARG_BIAS,
                 dnnl::memory(BiasDesc(out_, kernels_->type), CpuEngine(), b.data_ptr()));
  }
  dnnl::stream stream(CpuEngine());
  kernels_->For(m, in_, out_, bias.defined()).execute(stream, args);
  stream.wait();
  return y;
}

torch::Tensor PackedLinear::Unpack() const {
  torch::Tensor plain = torch::empty({out_, in_}, torch::TensorOptions().dtype(dtype_));
  dnnl::memory source(kernels_->weights, CpuEngine(), packed_.data_ptr());
  dnnl::memory target({{in_, out_}, kernels_->type, Tag::ba}, CpuEngine(), plain.data_ptr());
  dnnl::stream stream(CpuEngine());
  dnnl::reorder(source, target).execute(stream, source, target);
  stream.wait();
  return plain;
}

#else  // no oneDNN in this build: nothing packs.

struct PackedLinear::Kernels {};

std::shared_ptr<const PackedLinear> PackedLinear::Pack(const torch::Tensor&) { return nullptr; }
torch::Tensor PackedLinear::Apply(const torch::Tensor&, const torch::Tensor&) const {
  TORCH_CHECK(false, "PackedLinear: built without oneDNN");
}
torch::Tensor PackedLinear::Unpack() const {
  TORCH_CHECK(false, "PackedLinear: built without oneDNN");
}

#endif

PackedLinear::PackedLinear(int64_t out, int64_t in, torch::ScalarType dtype, torch::Tensor packed,
                           std::unique_ptr<Kernels> kernels)
    : out_(out), in_(in), dtype_(dtype), packed_(std::move(packed)), kernels_(std::move(kernels)) {}

PackedLinear::~PackedLinear() = default;

}  // namespace loramux
