#include "tensor/tensor_util.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>
#include <vector>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

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

namespace {

// The CPU's native bfloat16 instructions as /proc/cpuinfo names them, or "" when it has none.
std::string NativeBf16CpuFlag() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("flags", 0) != 0 && line.rfind("Features", 0) != 0) continue;
    const std::vector<std::string> flags = absl::StrSplit(line, ' ', absl::SkipEmpty());
    for (const char* flag : {"amx_bf16", "avx512_bf16", "bf16"}) {
      if (std::find(flags.begin(), flags.end(), flag) != flags.end()) return flag;
    }
    return "";  // every core lists the same flags
  }
  return "";
}

}  // namespace

double LinearGflops(torch::Device device, torch::ScalarType dtype, int64_t m, int64_t k,
                    int64_t n) {
  torch::NoGradGuard no_grad;
  const auto options = torch::TensorOptions().device(device).dtype(dtype);
  const torch::Tensor x = torch::randn({m, k}, options), w = torch::randn({n, k}, options);
  torch::linear(x, w);  // warm-up: packing, allocations, the library's first-call set-up
  double best = 0;
  for (int i = 0; i < 5; ++i) {
    const auto start = std::chrono::steady_clock::now();
    torch::linear(x, w).sum().item<float>();  // item() waits for a device to finish
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    best = std::max(best, 2.0 * m * k * n / took.count() / 1e9);
  }
  return best;
}

AutoDtype ChooseAutoDtype(torch::Device device) {
  constexpr int64_t kM = 32, kK = 1024, kN = 2816;  // batch-32 decode through an MLP projection
  const bool bf16_multiplies = CheckMatmulSupport(device, torch::kBFloat16).ok();
  std::string why;
  bool bf16 = false;
  if (device.is_cpu()) {
    const std::string flag = NativeBf16CpuFlag();
    bf16 = !flag.empty() && bf16_multiplies;
    why = flag.empty() ? "the CPU has no native bfloat16 arithmetic"
                       : absl::StrCat("the CPU multiplies bfloat16 natively (", flag, ")");
  } else {
    bf16 = bf16_multiplies;
    why = bf16 ? "the device multiplies bfloat16" : "this LibTorch cannot multiply bfloat16 there";
  }
  const double f32_rate = LinearGflops(device, torch::kFloat32, kM, kK, kN);
  const double bf16_rate =
      bf16_multiplies ? LinearGflops(device, torch::kBFloat16, kM, kK, kN) : 0.0;
  return {bf16 ? torch::kBFloat16 : torch::kFloat32,
          absl::StrFormat("--dtype=auto serves in %s: %s; x[%d,%d]·W[%d,%d]^T now runs at %.0f "
                          "GFLOP/s in bfloat16, %.0f in float32",
                          bf16 ? "bfloat16" : "float32", why, kM, kK, kN, kK, bf16_rate, f32_rate)};
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
