// Decode attention on the CPU, read straight from the paged KV cache: one query token per sequence
// against its own context, with no gather of keys and values into a padded batch.
//
// For each decode row b, query head h (KV head h / group) and visible position j of its sequence:
//   s_j = scale · q[b, h] · k[slot(b, j)],  p = softmax(s),  out[b, h] = Σ_j p_j · v[slot(b, j)]
// accumulated in float32 (16-bit inputs widen exactly; the output rounds once), each (row, KV
// head) on its own, so a row's result never depends on its batch-mates.
//
// Thread-safety: reads the caches, writes `out` only; runs on LibTorch's intra-op threads.
#pragma once

#include <cstdint>
#include <vector>

#include <torch/types.h>

namespace loramux {

// The context of one decode row: its cache slots in position order and the visible range.
struct DecodeContext {
  int64_t row = 0;                 // the query's row in q and out
  const int64_t* slots = nullptr;  // slots[j]: the cache slot of position j, for j < end
  int64_t begin = 0;               // first visible position (> 0 under a sliding window)
  int64_t end = 0;                 // one past the query's own position
};

// Whether DecodeAttention takes tensors of this device and dtype (else use batched GEMMs).
bool DecodeAttentionApplies(torch::Device device, torch::ScalarType dtype);

// q [T, heads, hd]; key_cache/value_cache [slots, kv_heads, hd] (q's dtype, contiguous);
// out [T, heads, hd] (contiguous): the rows named by `contexts` are written, others untouched.
void DecodeAttention(const torch::Tensor& q, const torch::Tensor& key_cache,
                     const torch::Tensor& value_cache, const std::vector<DecodeContext>& contexts,
                     double scale, torch::Tensor& out);

}  // namespace loramux
