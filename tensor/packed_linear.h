// A frozen linear weight stored once in the layout a CPU matmul kernel reads, and y = x·Wᵀ with it.
//
// LibTorch multiplies a plain [out, in] weight by repacking it on every call (oneDNN for bfloat16)
// or through the system BLAS (float32). Packing once at load is faster at every row count; two
// kernels read packed weights:
//  - kPanels (tensor/panel_gemm.h, CPUs with AVX-512 or AVX2 + FMA): column panels, one sequential
//    stream per 64 outputs. On the issue-17 model's 57 GEMMs a step
//    (bench/packed_linear_bench) it beats oneDNN with the same weights packed at every row count
//    from 1 to 512: bfloat16 batch 1 streams the weights at ~41 against ~26 GB/s, batch 32 runs
//    at ~410 against ~345 GFLOP/s (float32: ~42 against ~27 GB/s; ~214 against ~185 GFLOP/s).
//  - kOneDnn (where this build has oneDNN and its kernels for the dtype are native): oneDNN's
//    matmul on the layout it chooses for 32 rows.
// kAuto takes the first that applies. The panel kernels' sums for a row run in an order that does
// not depend on the rows beside it, so a row's result never depends on how many rows share the
// call: batching stays bit-exact. (oneDNN's keep that with its AVX-512 kernels only; its AVX2
// GEMM blocks by the row count.)
//
// Pack replaces the plain tensor (the caller drops it), so the weight is held once; Unpack makes a
// plain copy for the rare readers of the values (DoRA's column norms at adapter load).
//
// Applies on the CPU to contiguous float32 or bfloat16 [out, in] weights where a kernel applies;
// elsewhere Pack returns null and callers multiply the plain weight.
//
// Thread-safety: immutable after Pack; Apply and Unpack may be called from any thread.
#pragma once

#include <cstdint>
#include <memory>

#include <torch/types.h>

namespace loramux {

class PackedLinear {
 public:
  enum class Kernel { kAuto, kPanels, kOneDnn };

  // The packed form of `weight` [out, in] for `kernel`, or null where it does not apply (above).
  static std::shared_ptr<const PackedLinear> Pack(const torch::Tensor& weight,
                                                  Kernel kernel = Kernel::kAuto);
  ~PackedLinear();

  // x [m, in] of the weight's dtype (made contiguous if it is not) -> x·Wᵀ + bias [m, out], the
  // bias ([out], the weight's dtype) added before the one rounding to the dtype, as torch::linear;
  // an undefined bias adds nothing.
  torch::Tensor Apply(const torch::Tensor& x, const torch::Tensor& bias = {}) const;
  // A plain [out, in] copy of the weight.
  torch::Tensor Unpack() const;
  // Rows `index` (int64 [n], each in [0, out)) of the weight as a plain [n, in] tensor: lookups in
  // an embedding table that is held once, packed, as the head tied to it. kPanels reads just those
  // rows; kOneDnn unpacks the whole weight first.
  torch::Tensor Rows(const torch::Tensor& index) const;

  int64_t out_features() const { return out_; }
  int64_t in_features() const { return in_; }
  torch::ScalarType dtype() const { return dtype_; }
  Kernel kernel() const { return kernel_; }
  // Bytes of the packed weight (the plain size plus the layout's padding).
  int64_t bytes() const { return packed_.numel() * static_cast<int64_t>(packed_.element_size()); }

 private:
  struct OneDnn;
  PackedLinear(int64_t out, int64_t in, torch::ScalarType dtype, Kernel kernel,
               torch::Tensor packed, std::unique_ptr<OneDnn> onednn);
  static std::shared_ptr<const PackedLinear> PackPanels(const torch::Tensor& weight);
  static std::shared_ptr<const PackedLinear> PackOneDnn(const torch::Tensor& weight);
  // x contiguous, bias contiguous or undefined: checked by Apply.
  torch::Tensor ApplyPanels(const torch::Tensor& x, const torch::Tensor& bias) const;
  torch::Tensor ApplyOneDnn(const torch::Tensor& x, const torch::Tensor& bias) const;
  torch::Tensor UnpackPanels() const;
  torch::Tensor UnpackOneDnn() const;

  int64_t out_, in_;
  torch::ScalarType dtype_;
  Kernel kernel_;                   // kPanels or kOneDnn
  torch::Tensor packed_;            // the weight in the kernel's layout (kOneDnn: uint8 [bytes])
  std::unique_ptr<OneDnn> onednn_;  // kOneDnn: its layout and primitives
};

}  // namespace loramux
