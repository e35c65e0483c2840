// A frozen linear weight stored once in the layout the CPU's matmul kernels read, and y = x·Wᵀ
// through oneDNN's matmul with it.
//
// LibTorch multiplies a plain [out, in] weight by repacking it on every call (oneDNN for bfloat16)
// or through the system BLAS (float32). Packing once at load instead measured, on the issue-17
// model's 57 decoder GEMMs (bench/model_bench, bench/dtype_bench.sh): bfloat16 1.25-1.3x and
// float32 ~2x faster at 1 to 32 rows. One layout serves every row count (it is the one the kernels
// choose for 32 rows), so a row's result never depends on how many rows share the call: batching
// stays bit-exact.
//
// Pack replaces the plain tensor (the caller drops it), so the weight is held once; Unpack makes a
// plain copy for the rare readers of the values (DoRA's column norms at adapter load).
//
// Applies on the CPU to contiguous float32 or bfloat16 [out, in] weights when this build has
// oneDNN and its kernels for the dtype are native (not the reference implementation); elsewhere
// Pack returns null and callers multiply the plain weight.
//
// Thread-safety: immutable after Pack; Apply and Unpack may be called from any thread.
#pragma once

#include <cstdint>
#include <memory>

#include <torch/types.h>

namespace loramux {

class PackedLinear {
 public:
  // The packed form of `weight` [out, in], or null where packing does not apply (see above).
  static std::shared_ptr<const PackedLinear> Pack(const torch::Tensor& weight);
  ~PackedLinear();

  // x [m, in] of the weight's dtype (made contiguous if it is not) -> x·Wᵀ + bias [m, out], the
  // bias ([out], the weight's dtype) added before the one rounding to the dtype, as torch::linear;
  // an undefined bias adds nothing.
  torch::Tensor Apply(const torch::Tensor& x, const torch::Tensor& bias = {}) const;
  // A plain [out, in] copy of the weight.
  torch::Tensor Unpack() const;

  int64_t out_features() const { return out_; }
  int64_t in_features() const { return in_; }
  torch::ScalarType dtype() const { return dtype_; }
  // Bytes of the packed weight (the plain size plus the layout's padding).
  int64_t bytes() const { return static_cast<int64_t>(packed_.numel()); }

 private:
  struct Kernels;
  PackedLinear(int64_t out, int64_t in, torch::ScalarType dtype, torch::Tensor packed,
               std::unique_ptr<Kernels> kernels);

  int64_t out_, in_;
  torch::ScalarType dtype_;
  torch::Tensor packed_;  // uint8 [bytes]: the weight in the kernels' layout
  std::unique_ptr<Kernels> kernels_;
};

}  // namespace loramux
