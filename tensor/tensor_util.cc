#include "tensor/tensor_util.h"

#include <cstdlib>
#include <cstring>
#include <thread>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace loramux {

absl::StatusOr<torch::ScalarType> ParseScalarType(absl::string_view name) {
  if (name == "float32" || name == "fp32" || name == "float") return torch::kFloat32;
  if (name == "bfloat16" || name == "bf16") return torch::kBFloat16;
  if (name == "float16" || name == "fp16" || name == "half") return torch::kFloat16;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dtype \"", name, "\" (use float32, bfloat16 or float16)"));
}

absl::Status CheckMatmulSupport(torch::Device device, torch::ScalarType dtype) {
  try {
    const torch::Tensor m = torch::ones({2, 2}, torch::TensorOptions().device(device).dtype(dtype));
    torch::mm(m, m);
    return absl::OkStatus();
  } catch (const c10::Error&) {
    return absl::FailedPreconditionError(
        absl::StrCat("this LibTorch cannot multiply ", c10::toString(dtype), " matrices on ",
                     device.str(), "; use another --dtype (float32 or bfloat16) or --device"));
  }
}

absl::StatusOr<torch::Device> ParseDevice(absl::string_view name) {
  try {
    torch::Device device{std::string(name)};
    if (device.is_cuda() && !torch::cuda::is_available()) {
      return absl::UnavailableError(absl::StrCat(
          "device \"", name, "\" requested but this LibTorch build sees no CUDA device"));
    }
    return device;
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown device \"", name, "\" (use cpu, cuda or cuda:N)"));
  }
}

absl::StatusOr<torch::Tensor> ToTorch(const TensorView& view, torch::Device device,
                                      torch::ScalarType dtype) {
  torch::ScalarType source;
  switch (view.dtype) {
    case DType::kF64: source = torch::kFloat64; break;
    case DType::kF32: source = torch::kFloat32; break;
    case DType::kF16: source = torch::kFloat16; break;
    case DType::kBF16: source = torch::kBFloat16; break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("tensor \"", view.name, "\" has dtype ", std::string(DTypeName(view.dtype)),
                       "; expected a floating point type (F32, F16, BF16, F64)"));
  }
  // Copy into an aligned, owned CPU tensor first: the mapping may be unaligned.
  torch::Tensor host = torch::empty(view.shape, torch::TensorOptions().dtype(source));
  std::memcpy(host.data_ptr(), view.data, view.nbytes);
  return host.to(device, dtype);
}

int ConfigureThreads(int threads) {
  if (threads <= 0) {
    const char* env = std::getenv("OMP_NUM_THREADS");
    threads = env && std::atoi(env) > 0 ? std::atoi(env)
                                        : static_cast<int>(std::thread::hardware_concurrency());
  }
  at::set_num_threads(std::max(1, threads));
  return at::get_num_threads();
}

std::string ShapeString(c10::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

}  // namespace loramux
