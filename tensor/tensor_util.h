// Bridges between file formats and LibTorch tensors. Engine-internal: includes torch.
#pragma once

#include <string>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "formats/safetensors.h"

namespace loramux {

// "float32" | "bfloat16" | "float16" (also "fp32", "bf16", "fp16").
absl::StatusOr<torch::ScalarType> ParseScalarType(absl::string_view name);
// "cpu", "cuda", "cuda:N". UNAVAILABLE when LibTorch has no CUDA.
absl::StatusOr<torch::Device> ParseDevice(absl::string_view name);

// OK when this LibTorch multiplies `dtype` matrices on `device`; FAILED_PRECONDITION otherwise
// (CPU builds before 2.x have no float16 matmul), so a server refuses to start rather than fail
// every request.
absl::Status CheckMatmulSupport(torch::Device device, torch::ScalarType dtype);

// What --dtype=auto serves in on `device`: bfloat16 where the hardware multiplies it natively
// (a CPU whose /proc/cpuinfo lists avx512_bf16, amx_bf16 or, on Arm, bf16; any other device whose
// LibTorch multiplies bfloat16), float32 elsewhere. `reason` is one line for the start-up log:
// the choice, why, and the GEMM rates of both dtypes measured now at a decode shape.
struct AutoDtype {
  torch::ScalarType dtype;
  std::string reason;
};
AutoDtype ChooseAutoDtype(torch::Device device);

// GFLOP/s of x[m,k]·W[n,k]^T (torch::linear) in `dtype` on `device`: the best of a few runs.
double LinearGflops(torch::Device device, torch::ScalarType dtype, int64_t m, int64_t k, int64_t n);

// Sets LibTorch's intra-op thread count to `threads`, or when 0 to OMP_NUM_THREADS if set, else to
// every online CPU. (LibTorch's default counts physical cores from cpuinfo, which reads 1 on some
// VMs and halves throughput.) Returns the count in effect.
int ConfigureThreads(int threads = 0);

// Copies a safetensors view into a new tensor on `device` with `dtype`. Floating point views only
// (F64/F32/F16/BF16); INVALID_ARGUMENT names the tensor otherwise.
absl::StatusOr<torch::Tensor> ToTorch(const TensorView& view, torch::Device device,
                                      torch::ScalarType dtype);

// A view's shape as text: "[320,64]".
std::string ShapeString(c10::IntArrayRef shape);

// Runs `fn` and turns a LibTorch exception into INTERNAL, prefixed with `what`.
template <typename Fn>
absl::Status CatchTorch(absl::string_view what, Fn&& fn) {
  try {
    fn();
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return absl::InternalError(std::string(what) + ": " + e.what());
  }
}

}  // namespace loramux
