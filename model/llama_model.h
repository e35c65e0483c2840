// The frozen base model: a Llama-family decoder (Llama, Mistral, Qwen2) on LibTorch.
//
//   h = embed(tokens)
//   for each layer:  h = h + o(attn(rope(q(n1(h))), rope(k(n1(h))), v(n1(h))))
//                    h = h + down(silu(gate(n2(h))) * up(n2(h)))
//   logits = lm_head(norm(h))
//
// Every projection goes through AdaptedLinear, so each token may carry its own adapter delta.
// Weights are loaded once, frozen, on the configured device and dtype, and never written.
//
// Thread-safety: const methods may be called from any thread; Forward must be called by one thread
// at a time (the scheduler's) because it writes the KV cache.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "adapters/base_modules.h"
#include "adapters/lora_linear.h"
#include "formats/model_config.h"
#include "model/kv_cache.h"

namespace loramux {

struct LayerWeights {
  torch::Tensor input_norm;  // [hidden]
  torch::Tensor post_norm;   // [hidden]
  std::array<LinearWeights, kNumProjections> proj;
  // q [heads*hd, hidden], k/v [kv_heads*hd, hidden], o [hidden, heads*hd],
  // gate/up [inter, hidden], down [hidden, inter]
};

struct ModelWeights {
  torch::Tensor embed;  // [vocab, hidden]; undefined once a tied head holds it packed (PackWeights)
  std::vector<LayerWeights> layers;
  torch::Tensor final_norm;  // [hidden]
  LinearWeights lm_head;  // [vocab, hidden], no bias; its weight is the embedding itself when tied
};

// One sequence's slice of a packed batch.
struct SequenceChunk {
  int64_t cache_id = 0;     // KvCache sequence; positions [start_pos, start_pos + length) reserved
  int64_t start_pos = 0;    // tokens of this sequence already in the cache
  int64_t offset = 0;       // first token in the packed batch
  int64_t length = 0;       // tokens in this chunk (1 for a decode step)
  bool all_logits = false;  // logits for every token (scoring); else only for the last
};

struct ForwardBatch {
  std::vector<int64_t> token_ids;           // packed, T tokens
  std::vector<SequenceChunk> chunks;        // in packed order, covering all tokens
  std::vector<AdapterSegment> adapters;     // token ranges served by adapters
  DeltaPath delta_path = DeltaPath::kAuto;  // benchmarks force one path to compare them
};

class LlamaModel final : public BaseModules {
 public:
  // Loads config.json and the safetensors weights from a HuggingFace directory.
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Load(const std::string& model_dir,
                                                          torch::Device device,
                                                          torch::ScalarType dtype);
  // A model with random weights (benchmarks): normal(0, 0.02) linear weights, unit norms.
  static std::unique_ptr<LlamaModel> Random(const ModelConfig& config, torch::Device device,
                                            torch::ScalarType dtype, uint64_t seed);

  // Runs the batch through the model, writing its keys/values to `cache`. Returns float32
  // logits on the model's device: one row per chunk (its last token), or one row per token for
  // chunks with all_logits, in chunk order. INTERNAL if LibTorch fails.
  absl::StatusOr<torch::Tensor> Forward(const ForwardBatch& batch, KvCache& cache) const;

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  const LinearWeights& linear(int64_t layer, Projection p) const {
    return weights_.layers[layer].proj[p];
  }
  torch::Device device() const override { return device_; }
  torch::ScalarType dtype() const override { return dtype_; }
  // Bytes held by the weights.
  int64_t weight_bytes() const;

  // The served linear modules by index (layer * kNumProjections + projection): their paths,
  // "model.layers.<layer>.<projection path>", and the reverse lookup (-1 when not a module).
  const std::vector<std::string>& module_paths() const override { return module_paths_; }
  int64_t ModuleIndexOf(const std::string& path) const override;
  // BaseModules: what adapters see of the model.
  int64_t num_layers() const override { return config_.num_layers; }
  torch::Tensor module_weight(int64_t index) const override { return module(index).Plain(); }
  std::array<int64_t, 2> module_shape(int64_t index) const override;

  // Packs every projection's weight and the output head for the CPU's matmul kernels
  // (tensor/packed_linear.h), dropping the plain copies: the weights stay held once (a head tied to
  // the embedding is packed for the panel kernel only, and lookups then read the table's rows from
  // it). Returns how many were packed (none off the CPU, or where packing does not apply). Call
  // before serving; not for a model that will be trained on.
  int64_t PackWeights();

 private:
  LlamaModel(ModelConfig config, ModelWeights weights, torch::Device device,
             torch::ScalarType dtype);
  torch::Tensor ForwardImpl(const ForwardBatch& batch, KvCache& cache) const;
  // Whether the head is the plain embedding table itself (tied, not packed).
  bool TiedPlain() const;
  // The embedding rows of token_ids (int64 [n]) -> [n, hidden].
  torch::Tensor Embed(const torch::Tensor& token_ids) const;
  const LinearWeights& module(int64_t index) const {
    return linear(index / kNumProjections, static_cast<Projection>(index % kNumProjections));
  }

  ModelConfig config_;
  ModelWeights weights_;
  torch::Device device_;
  torch::ScalarType dtype_;
  torch::Tensor rope_cos_;  // [max_positions, head_dim], float32
  torch::Tensor rope_sin_;  // [max_positions, head_dim], float32
  std::vector<std::string> module_paths_;
  absl::flat_hash_map<std::string, int64_t> module_index_;
};

}  // namespace loramux
