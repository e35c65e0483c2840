#include "model/llama_model.h"

#include <cmath>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "formats/checkpoint.h"
#include "model/decode_attention.h"
#include "model/row_ops.h"
#include "tensor/tensor_util.h"

namespace loramux {

namespace {

// [out, in] of each projection.
std::array<std::array<int64_t, 2>, kNumProjections> ProjectionShapes(const ModelConfig& c) {
  const int64_t q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  return {{{q, c.hidden_size},
           {kv, c.hidden_size},
           {kv, c.hidden_size},
           {c.hidden_size, q},
           {c.intermediate_size, c.hidden_size},
           {c.intermediate_size, c.hidden_size},
           {c.hidden_size, c.intermediate_size}}};
}

bool HasBias(const ModelConfig& c, Projection p) {
  if (p <= kVProj) return c.qkv_bias;
  if (p == kOProj) return c.o_bias;
  return c.mlp_bias;
}

class WeightLoader {
 public:
  WeightLoader(const Checkpoint& checkpoint, torch::Device device, torch::ScalarType dtype)
      : checkpoint_(checkpoint), device_(device), dtype_(dtype) {}

  absl::StatusOr<torch::Tensor> Get(const std::string& name, std::vector<int64_t> shape) {
    const TensorView* view = checkpoint_.Find(name);
    if (view == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(checkpoint_.dir(), ": tensor \"", name,
                       "\" is missing (does config.json match the weights?)"));
    }
    if (view->shape != shape) {
      return absl::InvalidArgumentError(absl::StrCat(checkpoint_.dir(), ": tensor \"", name,
                                                     "\" has shape ", ShapeString(view->shape),
                                                     ", config.json implies ", ShapeString(shape)));
    }
    return ToTorch(*view, device_, dtype_);
  }

 private:
  const Checkpoint& checkpoint_;
  torch::Device device_;
  torch::ScalarType dtype_;
};

absl::StatusOr<ModelWeights> LoadWeights(const ModelConfig& c, const Checkpoint& checkpoint,
                                         torch::Device device, torch::ScalarType dtype) {
  WeightLoader loader(checkpoint, device, dtype);
  ModelWeights w;
  ASSIGN_OR_RETURN(w.embed, loader.Get("model.embed_tokens.weight", {c.vocab_size, c.hidden_size}));
  ASSIGN_OR_RETURN(w.final_norm, loader.Get("model.norm.weight", {c.hidden_size}));
  if (c.tie_word_embeddings && checkpoint.Find("lm_head.weight") == nullptr) {
    w.lm_head.weight = w.embed;
  } else {
    ASSIGN_OR_RETURN(w.lm_head.weight, loader.Get("lm_head.weight", {c.vocab_size, c.hidden_size}));
  }
  const auto shapes = ProjectionShapes(c);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string prefix = absl::StrCat("model.layers.", l, ".");
    LayerWeights layer;
    ASSIGN_OR_RETURN(layer.input_norm,
                     loader.Get(prefix + "input_layernorm.weight", {c.hidden_size}));
    ASSIGN_OR_RETURN(layer.post_norm,
                     loader.Get(prefix + "post_attention_layernorm.weight", {c.hidden_size}));
    for (int64_t p = 0; p < kNumProjections; ++p) {
      const std::string path = ModulePath(l, static_cast<Projection>(p));
      ASSIGN_OR_RETURN(layer.proj[p].weight,
                       loader.Get(path + ".weight", {shapes[p][0], shapes[p][1]}));
      if (HasBias(c, static_cast<Projection>(p))) {
        ASSIGN_OR_RETURN(layer.proj[p].bias, loader.Get(path + ".bias", {shapes[p][0]}));
      }
    }
    w.layers.push_back(std::move(layer));
  }
  return w;
}

// Per-forward attention metadata, shared by all layers.
struct AttentionPlan {
  torch::Tensor write_slots;  // [T] cache slot of each packed token
  // Decode chunks (one token each) on the CPU: DecodeAttention over each row's own slots.
  std::vector<int64_t> decode_slot_list;  // every row's context slots, one after another
  std::vector<DecodeContext> decode_contexts;
  // Decode chunks elsewhere, attended together as a padded batch.
  torch::Tensor decode_rows;   // [B] packed token index
  torch::Tensor decode_slots;  // [B, max_ctx] context slots (padded with the cache's zero slot)
  torch::Tensor decode_mask;   // [B, 1, 1, max_ctx] true where a key must be ignored
  // Prefill chunks, attended one by one.
  struct Prefill {
    int64_t offset, length;
    torch::Tensor slots;  // [ctx]
    torch::Tensor mask;   // [1, 1, length, ctx] true where a key must be ignored
  };
  std::vector<Prefill> prefills;
};

// A key at position j is visible from a query at position p when j <= p (and p - j < window).
bool Hidden(int64_t j, int64_t p, int64_t window) {
  return j > p || (window > 0 && p - j >= window);
}

// Each decode row's slots and visible range, for DecodeAttention.
void PlanDecodeKernel(const std::vector<const SequenceChunk*>& decodes, const KvCache& cache,
                      int64_t window, AttentionPlan& plan) {
  std::vector<int64_t> starts;
  for (const SequenceChunk* d : decodes) {
    starts.push_back(static_cast<int64_t>(plan.decode_slot_list.size()));
    cache.AppendSlots(d->cache_id, 0, d->start_pos + 1, plan.decode_slot_list);
  }
  for (size_t i = 0; i < decodes.size(); ++i) {  // pointers once the list stops growing
    const SequenceChunk& d = *decodes[i];
    const int64_t begin = window > 0 ? std::max<int64_t>(0, d.start_pos + 1 - window) : 0;
    plan.decode_contexts.push_back(
        {d.offset, plan.decode_slot_list.data() + starts[i], begin, d.start_pos + 1});
  }
}

AttentionPlan PlanAttention(const ForwardBatch& batch, const KvCache& cache, int64_t window,
                            torch::Device device, bool decode_kernel) {
  AttentionPlan plan;
  std::vector<int64_t> write_slots;
  std::vector<const SequenceChunk*> decodes;
  for (const SequenceChunk& chunk : batch.chunks) {
    cache.AppendSlots(chunk.cache_id, chunk.start_pos, chunk.length, write_slots);
    if (chunk.length == 1 && chunk.start_pos > 0) {
      decodes.push_back(&chunk);
      continue;
    }
    const int64_t ctx = chunk.start_pos + chunk.length;
    std::vector<int64_t> slots;
    cache.AppendSlots(chunk.cache_id, 0, ctx, slots);
    torch::Tensor mask = torch::zeros({chunk.length, ctx}, torch::kBool);
    auto m = mask.accessor<bool, 2>();
    for (int64_t i = 0; i < chunk.length; ++i) {
      for (int64_t j = 0; j < ctx; ++j) m[i][j] = Hidden(j, chunk.start_pos + i, window);
    }
    plan.prefills.push_back({chunk.offset, chunk.length, torch::tensor(slots).to(device),
                             mask.view({1, 1, chunk.length, ctx}).to(device)});
  }
  plan.write_slots = torch::tensor(write_slots).to(device);
  if (decode_kernel) {
    PlanDecodeKernel(decodes, cache, window, plan);
  } else if (!decodes.empty()) {
    int64_t max_ctx = 0;
    for (const SequenceChunk* d : decodes) max_ctx = std::max(max_ctx, d->start_pos + 1);
    const int64_t b = static_cast<int64_t>(decodes.size());
    std::vector<int64_t> rows, slots(b * max_ctx, cache.padding_slot());
    torch::Tensor mask = torch::ones({b, max_ctx}, torch::kBool);
    auto m = mask.accessor<bool, 2>();
    for (int64_t i = 0; i < b; ++i) {
      const SequenceChunk& d = *decodes[i];
      rows.push_back(d.offset);
      std::vector<int64_t> ctx_slots;
      cache.AppendSlots(d.cache_id, 0, d.start_pos + 1, ctx_slots);
      for (int64_t j = 0; j <= d.start_pos; ++j) {
        slots[i * max_ctx + j] = ctx_slots[j];
        m[i][j] = Hidden(j, d.start_pos, window);
      }
    }
    plan.decode_rows = torch::tensor(rows).to(device);
    plan.decode_slots = torch::tensor(slots).view({b, max_ctx}).to(device);
    plan.decode_mask = mask.view({b, 1, 1, max_ctx}).to(device);
  }
  return plan;
}

// q [n, kv_heads, group, L, hd]-compatible attention: q [..., L, hd], k [..., hd, ctx],
// v [..., ctx, hd], mask broadcastable to the scores. Softmax in float32, as HF's eager path.
torch::Tensor Attend(const torch::Tensor& q, const torch::Tensor& k_t, const torch::Tensor& v,
                     const torch::Tensor& mask, double scale) {
  torch::Tensor scores = torch::matmul(q, k_t).to(torch::kFloat32) * scale;
  scores.masked_fill_(mask, -std::numeric_limits<float>::infinity());
  const torch::Tensor probs = torch::softmax(scores, -1).to(v.scalar_type());
  return torch::matmul(probs, v);
}

}  // namespace

LlamaModel::LlamaModel(ModelConfig config, ModelWeights weights, torch::Device device,
                       torch::ScalarType dtype)
    : config_(std::move(config)), weights_(std::move(weights)), device_(device), dtype_(dtype) {
  // HF computes the tables in float32.
  std::tie(rope_cos_, rope_sin_) = RopeTables(config_, torch::kFloat32);
  rope_cos_ = rope_cos_.to(device_);
  rope_sin_ = rope_sin_.to(device_);
  for (int64_t l = 0; l < config_.num_layers; ++l) {
    for (int64_t p = 0; p < kNumProjections; ++p) {
      module_paths_.push_back(ModulePath(l, static_cast<Projection>(p)));
      module_index_[module_paths_.back()] = ModuleIndex(l, static_cast<Projection>(p));
    }
  }
}

int64_t LlamaModel::ModuleIndexOf(const std::string& path) const {
  auto it = module_index_.find(path);
  return it == module_index_.end() ? -1 : it->second;
}

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Load(const std::string& model_dir,
                                                             torch::Device device,
                                                             torch::ScalarType dtype) {
  ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::FromDirectory(model_dir));
  ASSIGN_OR_RETURN(auto checkpoint, Checkpoint::Open(model_dir));
  torch::NoGradGuard no_grad;
  absl::StatusOr<ModelWeights> weights = absl::InternalError("unset");
  RETURN_IF_ERROR(
      CatchTorch(model_dir, [&] { weights = LoadWeights(config, *checkpoint, device, dtype); }));
  RETURN_IF_ERROR(weights.status());
  return std::unique_ptr<LlamaModel>(
      new LlamaModel(std::move(config), *std::move(weights), device, dtype));
}

std::unique_ptr<LlamaModel> LlamaModel::Random(const ModelConfig& c, torch::Device device,
                                               torch::ScalarType dtype, uint64_t seed) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(seed);
  const auto options = torch::TensorOptions().device(device).dtype(dtype);
  auto normal = [&](std::vector<int64_t> shape) {
    return (torch::randn(shape, torch::kFloat32) * 0.02).to(device, dtype);
  };
  ModelWeights w;
  w.embed = normal({c.vocab_size, c.hidden_size});
  w.final_norm = torch::ones({c.hidden_size}, options);
  w.lm_head.weight = c.tie_word_embeddings ? w.embed : normal({c.vocab_size, c.hidden_size});
  const auto shapes = ProjectionShapes(c);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    LayerWeights layer;
    layer.input_norm = torch::ones({c.hidden_size}, options);
    layer.post_norm = torch::ones({c.hidden_size}, options);
    for (int64_t p = 0; p < kNumProjections; ++p) {
      layer.proj[p].weight = normal({shapes[p][0], shapes[p][1]});
      if (HasBias(c, static_cast<Projection>(p))) layer.proj[p].bias = normal({shapes[p][0]});
    }
    w.layers.push_back(std::move(layer));
  }
  return std::unique_ptr<LlamaModel>(new LlamaModel(c, std::move(w), device, dtype));
}

int64_t LlamaModel::weight_bytes() const {
  auto bytes = [](const torch::Tensor& t) {
    return t.defined() ? t.numel() * t.element_size() : 0;
  };
  auto linear_bytes = [&](const LinearWeights& w) {
    return bytes(w.weight) + bytes(w.bias) + (w.packed ? w.packed->bytes() : 0);
  };
  int64_t total = bytes(weights_.embed) + bytes(weights_.final_norm);
  if (!TiedPlain()) total += linear_bytes(weights_.lm_head);
  for (const LayerWeights& layer : weights_.layers) {
    total += bytes(layer.input_norm) + bytes(layer.post_norm);
    for (const LinearWeights& p : layer.proj) total += linear_bytes(p);
  }
  return total;
}

std::array<int64_t, 2> LlamaModel::module_shape(int64_t index) const {
  const LinearWeights& w = module(index);
  if (w.packed) return {w.packed->out_features(), w.packed->in_features()};
  return {w.weight.size(0), w.weight.size(1)};
}

bool LlamaModel::TiedPlain() const {
  return weights_.embed.defined() && weights_.lm_head.weight.is_same(weights_.embed);
}

torch::Tensor LlamaModel::Embed(const torch::Tensor& token_ids) const {
  if (weights_.embed.defined()) return weights_.embed.index_select(0, token_ids);
  return weights_.lm_head.packed->Rows(token_ids);  // tied, packed (PackWeights)
}

int64_t LlamaModel::PackWeights() {
  torch::NoGradGuard no_grad;
  int64_t packed = 0;
  auto pack = [&](LinearWeights& w, PackedLinear::Kernel kernel) {
    if (w.packed) return;
    w.packed = PackedLinear::Pack(w.weight, kernel);
    if (!w.packed) return;
    w.weight = torch::Tensor();  // held once: packed
    ++packed;
  };
  for (LayerWeights& layer : weights_.layers) {
    for (LinearWeights& p : layer.proj) pack(p, PackedLinear::Kernel::kAuto);
  }
  // A tied head is the embedding table itself: packed for the panel kernel only (whose rows' bits
  // do not depend on their batch-mates, unlike the BLAS's), lookups then read its rows from the
  // panels (PackedLinear::Rows), so the table is still held once. Where that kernel does not run,
  // it stays plain.
  const bool tied = TiedPlain();
  pack(weights_.lm_head, tied ? PackedLinear::Kernel::kPanels : PackedLinear::Kernel::kAuto);
  if (tied && weights_.lm_head.packed) weights_.embed = torch::Tensor();
  return packed;
}

absl::StatusOr<torch::Tensor> LlamaModel::Forward(const ForwardBatch& batch, KvCache& cache) const {
  torch::Tensor logits;
  RETURN_IF_ERROR(CatchTorch("model forward", [&] { logits = ForwardImpl(batch, cache); }));
  return logits;
}

torch::Tensor LlamaModel::ForwardImpl(const ForwardBatch& batch, KvCache& cache) const {
  torch::InferenceMode inference_mode;
  const ModelConfig& c = config_;
  const int64_t num_tokens = static_cast<int64_t>(batch.token_ids.size());
  const int64_t group = c.num_heads / c.num_kv_heads;
  const double attn_scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));

  std::vector<int64_t> positions;
  positions.reserve(num_tokens);
  for (const SequenceChunk& chunk : batch.chunks) {
    for (int64_t i = 0; i < chunk.length; ++i) positions.push_back(chunk.start_pos + i);
  }
  const torch::Tensor pos = torch::tensor(positions).to(device_);
  const AttentionPlan plan = PlanAttention(batch, cache, c.sliding_window, device_,
                                           DecodeAttentionApplies(device_, dtype_));

  torch::Tensor h = Embed(torch::tensor(batch.token_ids).to(device_));
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& layer = weights_.layers[l];
    auto linear = [&](const torch::Tensor& x, Projection p) {
      return AdaptedLinear(x, layer.proj[p], ModuleIndex(l, p), batch.adapters, batch.delta_path);
    };
    const torch::Tensor x = RmsNorm(h, layer.input_norm, c.rms_norm_eps);
    torch::Tensor q = linear(x, kQProj).view({num_tokens, c.num_heads, c.head_dim});
    torch::Tensor k = linear(x, kKProj).view({num_tokens, c.num_kv_heads, c.head_dim});
    ApplyRope(q, rope_cos_, rope_sin_, pos);
    ApplyRope(k, rope_cos_, rope_sin_, pos);
    const torch::Tensor v = linear(x, kVProj).view({num_tokens, c.num_kv_heads, c.head_dim});
    torch::Tensor& key_cache = cache.keys(l);
    torch::Tensor& value_cache = cache.values(l);
    key_cache.index_copy_(0, plan.write_slots, k);
    value_cache.index_copy_(0, plan.write_slots, v);

    torch::Tensor attn = torch::empty({num_tokens, c.num_heads, c.head_dim}, q.options());
    for (const AttentionPlan::Prefill& p : plan.prefills) {
      // q [kv, group, L, hd]; k^T [kv, 1, hd, ctx]; v [kv, 1, ctx, hd]
      const torch::Tensor qp = q.narrow(0, p.offset, p.length)
                                   .view({p.length, c.num_kv_heads, group, c.head_dim})
                                   .permute({1, 2, 0, 3});
      const torch::Tensor kp = key_cache.index_select(0, p.slots).permute({1, 2, 0}).unsqueeze(1);
      const torch::Tensor vp = value_cache.index_select(0, p.slots).permute({1, 0, 2}).unsqueeze(1);
      const torch::Tensor out = Attend(qp, kp, vp, p.mask, attn_scale);  // [kv, group, L, hd]
      attn.narrow(0, p.offset, p.length)
          .copy_(out.permute({2, 0, 1, 3}).reshape({p.length, c.num_heads, c.head_dim}));
    }
    if (!plan.decode_contexts.empty()) {
      DecodeAttention(q, key_cache, value_cache, plan.decode_contexts, attn_scale, attn);
    } else if (plan.decode_rows.defined()) {
      const int64_t b = plan.decode_rows.size(0), ctx = plan.decode_slots.size(1);
      const torch::Tensor flat = plan.decode_slots.view({-1});
      // q [B, kv, group, hd]; k^T [B, kv, hd, ctx]; v [B, kv, ctx, hd]
      const torch::Tensor qd =
          q.index_select(0, plan.decode_rows).view({b, c.num_kv_heads, group, c.head_dim});
      const torch::Tensor kd = key_cache.index_select(0, flat)
                                   .view({b, ctx, c.num_kv_heads, c.head_dim})
                                   .permute({0, 2, 3, 1});
      const torch::Tensor vd = value_cache.index_select(0, flat)
                                   .view({b, ctx, c.num_kv_heads, c.head_dim})
                                   .permute({0, 2, 1, 3});
      const torch::Tensor out = Attend(qd, kd, vd, plan.decode_mask, attn_scale);
      attn.index_copy_(0, plan.decode_rows, out.reshape({b, c.num_heads, c.head_dim}));
    }
    h = h + linear(attn.view({num_tokens, c.num_heads * c.head_dim}), kOProj);
    const torch::Tensor y = RmsNorm(h, layer.post_norm, c.rms_norm_eps);
    h = h + linear(SiluMul(linear(y, kGateProj), linear(y, kUpProj)), kDownProj);
  }

  std::vector<int64_t> logit_rows;
  for (const SequenceChunk& chunk : batch.chunks) {
    if (chunk.all_logits) {
      for (int64_t i = 0; i < chunk.length; ++i) logit_rows.push_back(chunk.offset + i);
    } else {
      logit_rows.push_back(chunk.offset + chunk.length - 1);
    }
  }
  const torch::Tensor rows = h.index_select(0, torch::tensor(logit_rows).to(device_));
  return BaseLinear(RmsNorm(rows, weights_.final_norm, c.rms_norm_eps), weights_.lm_head)
      .to(torch::kFloat32);
}

}  // namespace loramux
