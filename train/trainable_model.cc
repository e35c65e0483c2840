#include "train/trainable_model.h"

#include <algorithm>
#include <cmath>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "model/row_ops.h"
#include "tensor/tensor_util.h"

namespace loramux {

namespace {

namespace F = torch::nn::functional;

// The autograd compositions of RMS norm and the rotary embedding (model/row_ops.h has the
// serving path's fused passes, which autograd cannot see through).
torch::Tensor DifferentiableRmsNorm(const torch::Tensor& x, const torch::Tensor& weight,
                                    double eps) {
  return weight * (x * torch::rsqrt(x.pow(2).mean(-1, true) + eps));
}

// x [B, heads, T, hd]; cos/sin [T, hd].
torch::Tensor DifferentiableRope(const torch::Tensor& x, const torch::Tensor& cos,
                                 const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  const torch::Tensor rotated = torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos + rotated * sin;
}

torch::Tensor Frozen(const torch::Tensor& t, torch::ScalarType dtype) {
  return t.defined() ? t.to(dtype).detach() : t;
}

torch::Tensor Trainable(const torch::Tensor& t, torch::ScalarType dtype) {
  return t.defined() ? t.to(dtype).detach().clone().set_requires_grad(true) : t;
}

template <typename Fn>
void ForEachWeight(ModelWeights& w, bool tied, Fn&& fn) {
  fn("model.embed_tokens.weight", w.embed);
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const std::string prefix = absl::StrCat("model.layers.", l, ".");
    fn(prefix + "input_layernorm.weight", w.layers[l].input_norm);
    fn(prefix + "post_attention_layernorm.weight", w.layers[l].post_norm);
    for (int64_t p = 0; p < kNumProjections; ++p) {
      const std::string path = ModulePath(static_cast<int64_t>(l), static_cast<Projection>(p));
      fn(path + ".weight", w.layers[l].proj[p].weight);
      if (w.layers[l].proj[p].bias.defined()) fn(path + ".bias", w.layers[l].proj[p].bias);
    }
  }
  fn("model.norm.weight", w.final_norm);
  if (!tied) fn("lm_head.weight", w.lm_head.weight);
}

bool Tied(const ModelWeights& w) { return w.lm_head.weight.is_same(w.embed); }

}  // namespace

TrainableModel::TrainableModel(const LlamaModel& base, torch::ScalarType dtype, bool full,
                               DoraNorm dora_norm)
    : config_(base.config()),
      weights_(base.weights()),
      dtype_(dtype),
      full_(full),
      dora_norm_(dora_norm) {
  const bool tied = Tied(weights_);
  ForEachWeight(weights_, tied, [&](const std::string&, torch::Tensor& t) {
    t = full ? Trainable(t, dtype) : Frozen(t, dtype);
  });
  if (tied) weights_.lm_head.weight = weights_.embed;
  std::tie(rope_cos_, rope_sin_) = RopeTables(config_, torch::kFloat64);
  rope_cos_ = rope_cos_.to(dtype);
  rope_sin_ = rope_sin_.to(dtype);
  module_slot_.assign(config_.num_layers * kNumProjections, -1);
}

absl::StatusOr<std::unique_ptr<TrainableModel>> TrainableModel::ForAdapter(
    const LlamaModel& base, const PeftAdapterConfig& config, torch::ScalarType dtype, uint64_t seed,
    DoraNorm dora_norm) {
  std::unique_ptr<TrainableModel> model(new TrainableModel(base, dtype, /*full=*/false, dora_norm));
  torch::NoGradGuard no_grad;
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const auto options = torch::TensorOptions().dtype(dtype);
  for (int64_t index = 0; index < static_cast<int64_t>(base.module_paths().size()); ++index) {
    const std::string& path = base.module_paths()[index];
    if (!config.Targets(path)) continue;
    auto ms = config.ScaleOf(path);
    if (!ms.ok()) return ms.status();
    const torch::Tensor& w =
        model->weights_.layers[index / kNumProjections].proj[index % kNumProjections].weight;
    const int64_t out = w.size(0), in = w.size(1);
    TrainableModule m;
    m.index = index;
    m.path = path;
    m.rank = ms->rank;
    m.scale = ms->scale;
    m.dora = config.use_dora;
    // kaiming_uniform_(a=sqrt(5)) on [r, in]: bound = sqrt(6 / ((1 + 5) in)) = 1 / sqrt(in).
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));
    m.lora_a = torch::empty({m.rank, in}, torch::kFloat64).uniform_(-bound, bound, gen).to(options);
    m.lora_b = torch::zeros({out, m.rank}, options);
    if (m.dora) m.magnitude = w.to(dtype).norm(2, {1}).clone();
    for (torch::Tensor* t : {&m.lora_a, &m.lora_b, &m.magnitude}) {
      if (t->defined()) t->set_requires_grad(true);
    }
    model->module_slot_[index] = static_cast<int64_t>(model->modules_.size());
    model->modules_.push_back(std::move(m));
  }
  for (const std::string& name : config.target_list) {
    const bool found = std::any_of(
        base.module_paths().begin(), base.module_paths().end(), [&](const std::string& path) {
          return path == name || (path.size() > name.size() &&
                                  path.compare(path.size() - name.size(), name.size(), name) == 0 &&
                                  path[path.size() - name.size() - 1] == '.');
        });
    if (!found) {
      return absl::InvalidArgumentError(
          absl::StrCat("target module \"", name,
                       "\" is not a module of the base model; its "
                       "linear modules are q_proj, k_proj, v_proj, o_proj, gate_proj, "
                       "up_proj and down_proj (or all-linear)"));
    }
  }
  if (model->modules_.empty()) {
    return absl::InvalidArgumentError(
        "the adapter targets no module of the base model: check --targets (module names such as "
        "q_proj,v_proj, a regex, or all-linear) and --layers_to_transform");
  }
  return model;
}

std::unique_ptr<TrainableModel> TrainableModel::ForFullFineTune(const LlamaModel& base,
                                                                torch::ScalarType dtype) {
  return std::unique_ptr<TrainableModel>(
      new TrainableModel(base, dtype, /*full=*/true, DoraNorm::kDetached));
}

torch::Tensor TrainableModel::Linear(const torch::Tensor& x, int64_t layer, Projection p) const {
  const LinearWeights& lw = weights_.layers[layer].proj[p];
  const int64_t slot = module_slot_[layer * kNumProjections + p];
  if (slot < 0) return F::linear(x, lw.weight, lw.bias);
  const TrainableModule& m = modules_[slot];
  const torch::Tensor side = F::linear(F::linear(x, m.lora_a), m.lora_b) * m.scale;
  if (!m.dora) return F::linear(x, lw.weight, lw.bias) + side;
  torch::Tensor norm = m.norm_override.defined()
                           ? m.norm_override
                           : (lw.weight + m.scale * m.lora_b.mm(m.lora_a)).norm(2, {1});
  if (dora_norm_ == DoraNorm::kDetached) norm = norm.detach();
  const torch::Tensor gain = m.magnitude / norm;
  torch::Tensor y = gain * (F::linear(x, lw.weight) + side);
  return lw.bias.defined() ? y + lw.bias : y;
}

torch::Tensor TrainableModel::Forward(const torch::Tensor& tokens) const {
  const ModelConfig& c = config_;
  const int64_t batch = tokens.size(0), len = tokens.size(1);
  TORCH_CHECK(len <= c.max_position_embeddings, "sequence of ", len,
              " tokens is longer than the model's ", c.max_position_embeddings, " positions");
  const torch::Tensor cos = rope_cos_.narrow(0, 0, len), sin = rope_sin_.narrow(0, 0, len);
  // Key j is hidden from query i when j > i (or outside the sliding window).
  torch::Tensor hidden = torch::ones({len, len}, torch::kBool).triu(1);
  if (c.sliding_window > 0)
    hidden = hidden | torch::ones({len, len}, torch::kBool).tril(-c.sliding_window);
  const int64_t group = c.num_heads / c.num_kv_heads;
  const double inv_sqrt_hd = 1.0 / std::sqrt(static_cast<double>(c.head_dim));

  torch::Tensor h =
      weights_.embed.index_select(0, tokens.reshape({-1})).view({batch, len, c.hidden_size});
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& lw = weights_.layers[l];
    const torch::Tensor x = DifferentiableRmsNorm(h, lw.input_norm, c.rms_norm_eps);
    auto heads = [&](Projection p, int64_t n) {
      return Linear(x, l, p).view({batch, len, n, c.head_dim}).transpose(1, 2);
    };
    const torch::Tensor q = DifferentiableRope(heads(kQProj, c.num_heads), cos, sin);
    torch::Tensor k = DifferentiableRope(heads(kKProj, c.num_kv_heads), cos, sin);
    torch::Tensor v = heads(kVProj, c.num_kv_heads);
    if (group > 1) {
      k = k.repeat_interleave(group, 1);
      v = v.repeat_interleave(group, 1);
    }
    const torch::Tensor scores = torch::matmul(q, k.transpose(-1, -2))
                                     .mul(inv_sqrt_hd)
                                     .masked_fill(hidden, -std::numeric_limits<double>::infinity());
    const torch::Tensor attn = torch::matmul(torch::softmax(scores, -1), v)
                                   .transpose(1, 2)
                                   .reshape({batch, len, c.num_heads * c.head_dim});
    h = h + Linear(attn, l, kOProj);
    const torch::Tensor y = DifferentiableRmsNorm(h, lw.post_norm, c.rms_norm_eps);
    h = h + Linear(torch::silu(Linear(y, l, kGateProj)) * Linear(y, l, kUpProj), l, kDownProj);
  }
  return F::linear(DifferentiableRmsNorm(h, weights_.final_norm, c.rms_norm_eps),
                   weights_.lm_head.weight);
}

std::vector<torch::Tensor> TrainableModel::parameters() const {
  std::vector<torch::Tensor> params;
  if (full_) {
    ModelWeights& w = const_cast<ModelWeights&>(weights_);
    ForEachWeight(w, Tied(w), [&](const std::string&, torch::Tensor& t) { params.push_back(t); });
    return params;
  }
  for (const TrainableModule& m : modules_) {
    params.push_back(m.lora_a);
    params.push_back(m.lora_b);
    if (m.dora) params.push_back(m.magnitude);
  }
  return params;
}

int64_t TrainableModel::num_parameters() const {
  int64_t n = 0;
  for (const torch::Tensor& t : parameters()) n += t.numel();
  return n;
}

std::vector<std::pair<std::string, torch::Tensor>> TrainableModel::NamedTensors() const {
  std::vector<std::pair<std::string, torch::Tensor>> named;
  if (full_) {
    ModelWeights& w = const_cast<ModelWeights&>(weights_);
    ForEachWeight(w, Tied(w), [&](const std::string& name, torch::Tensor& t) {
      named.emplace_back(name, t.detach());
    });
    return named;
  }
  for (const TrainableModule& m : modules_) {
    const std::string prefix = "base_model.model." + m.path;
    named.emplace_back(prefix + ".lora_A.weight", m.lora_a.detach());
    named.emplace_back(prefix + ".lora_B.weight", m.lora_b.detach());
    if (m.dora) named.emplace_back(prefix + ".lora_magnitude_vector", m.magnitude.detach());
  }
  return named;
}

absl::Status TrainableModel::LoadTensors(const SafetensorsFile& file) {
  const auto named = NamedTensors();
  if (named.size() != file.tensors().size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        file.label(), ": holds ", file.tensors().size(), " tensors, the model being trained has ",
        named.size(), " (was it saved for other targets or another base?)"));
  }
  torch::NoGradGuard no_grad;
  for (const auto& [name, tensor] : named) {
    const TensorView* view = file.Find(name);
    if (view == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(file.label(), ": tensor \"", name, "\" is missing"));
    }
    if (view->shape != tensor.sizes().vec()) {
      return absl::InvalidArgumentError(absl::StrCat(file.label(), ": tensor \"", name,
                                                     "\" has shape ", ShapeString(view->shape),
                                                     ", expected ", ShapeString(tensor.sizes())));
    }
    auto loaded = ToTorch(*view, tensor.device(), tensor.scalar_type());
    if (!loaded.ok()) return loaded.status();
    const_cast<torch::Tensor&>(tensor).copy_(*loaded);
  }
  return absl::OkStatus();
}

std::pair<torch::Tensor, int64_t> CompletionLoss(const torch::Tensor& logits,
                                                 const torch::Tensor& tokens,
                                                 const torch::Tensor& loss_mask) {
  const int64_t vocab = logits.size(-1);
  const torch::Tensor mask = loss_mask.narrow(1, 1, tokens.size(1) - 1).reshape({-1});
  const torch::Tensor rows = mask.nonzero().squeeze(1);
  const torch::Tensor picked =
      logits.narrow(1, 0, tokens.size(1) - 1).reshape({-1, vocab}).index_select(0, rows);
  const torch::Tensor targets =
      tokens.narrow(1, 1, tokens.size(1) - 1).reshape({-1}).index_select(0, rows);
  const torch::Tensor loss =
      F::cross_entropy(picked, targets, F::CrossEntropyFuncOptions().reduction(torch::kSum));
  return {loss, rows.size(0)};
}

}  // namespace loramux
