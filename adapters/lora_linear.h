// The adapter-aware linear layer: the frozen base GEMM runs once for all packed tokens, then each
// segment of tokens adds its own adapter's low-rank delta: decode (and on the CPU most prefill)
// runs through one batched call for all segments (BGMV-style), long prefill runs through a pair of
// small GEMMs per segment (SGMV-style). The base weight is only read, never copied or written.
//
// Shapes: x [T, in], base.weight [out, in] (or packed), base.bias [out] or undefined,
// result [T, out].
// Segments are disjoint token ranges; tokens in no segment get the base output.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <torch/types.h>

#include "tensor/packed_linear.h"

namespace loramux {

class AdapterWeights;

struct LinearWeights {
  torch::Tensor weight;  // [out, in], frozen; undefined when `packed` holds it
  torch::Tensor bias;    // [out] or undefined
  std::shared_ptr<const PackedLinear> packed;  // the weight in the CPU kernels' layout, or null

  // The weight [out, in]: `weight`, or a plain copy unpacked from `packed`.
  torch::Tensor Plain() const { return packed ? packed->Unpack() : weight; }
};

// x W^T (+ b unless `with_bias` is false), through the packed weight when there is one.
torch::Tensor BaseLinear(const torch::Tensor& x, const LinearWeights& base, bool with_bias = true);

// Tokens [begin, end) of the packed batch, served by `adapter` with request scale `scale`.
struct AdapterSegment {
  const AdapterWeights* adapter = nullptr;
  double scale = 1.0;
  int64_t begin = 0;
  int64_t end = 0;
  // Every row is one sequence's next token (decode): such rows always take the decode path,
  // however many share the adapter, so a row's delta never depends on its batch-mates.
  bool decode = false;
};

// How the side path serves segments. kAuto: decode segments and short runs (at most 4 tokens) go
// to the gathered batched GEMMs (bgmv_gather) on GPUs and other devices; on the CPU, decode
// segments and prefill runs (any length in float32, at most 256 tokens in 16 bits) go to the fused
// kernel (bgmv_cpu) when it applies (float32 or 16-bit activations, widened to float32 and the
// sums rounded once; float32 or 16-bit factors; rank <= 512); everything else — longer runs,
// per-column DoRA, float64 — gets two GEMMs per segment.
// The others force one path for every segment it can take (tests and benchmarks compare them).
enum class DeltaPath { kAuto, kSegmentGemms, kGathered };

// y = x W^T + b, plus each segment's adapter delta for module `module_index`.
torch::Tensor AdaptedLinear(const torch::Tensor& x, const LinearWeights& base, int64_t module_index,
                            const std::vector<AdapterSegment>& segments,
                            DeltaPath path = DeltaPath::kAuto);

// The side path alone: adds each segment's delta to y [T, out], which holds x W^T + b for inputs
// x [T, in] (DoRA rescales those rows in place; `base` supplies W and b for it).
void AddAdapterDeltas(const torch::Tensor& x, torch::Tensor& y, const LinearWeights& base,
                      int64_t module_index, const std::vector<AdapterSegment>& segments,
                      DeltaPath path = DeltaPath::kAuto);

}  // namespace loramux
