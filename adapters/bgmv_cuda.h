// A fused CUDA kernel pair for the LoRA/DoRA deltas of mixed-adapter decode (gather-BGMV over
// segments): every token row t of segment s gets
//   LoRA:  y[t] += c · B (A x[t])
//   DoRA:  y[t]  = g ⊙ (y[t] - b + c · B (A x[t])) + b      (g: the row gain, b: the bias or 0)
// for all segments in two launches (shrink: v = A x into a float32 workspace; expand: y from v,
// the gain and bias fused in), reading each adapter's A and B^T straight from device memory. It is
// the device twin of adapters/bgmv_cpu.h, written against raw device pointers: no LibTorch, no CUDA
// header here, so torch-free and CUDA-free code may include it; only bgmv_cuda.cu needs nvcc, and
// it is built only when CMake finds CUDA (LORAMUX_CUDA, top-level CMakeLists.txt).
//
// Accumulation is float32; activations are float32 or bfloat16, factors float32, bfloat16 or
// float16 per segment (widened exactly as read), gains and bias float32. Nothing synchronises the
// host: the segment table and the token→segment map are device arrays the caller fills
// (asynchronously, e.g. from pinned memory on the same stream) before the call.
#pragma once

#include <cstdint>

namespace loramux {

enum class CudaElement : int32_t { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

struct BgmvCudaSegment {
  const void* a = nullptr;      // device [rank, in] of `factor`
  const void* b_t = nullptr;    // device B^T [rank, out] of `factor`
  const float* gain = nullptr;  // device [out] DoRA row gain, or null for LoRA
  CudaElement factor = CudaElement::kFloat32;
  int32_t rank = 0;    // 1..kBgmvCudaMaxRank
  float scale = 1.0f;  // c·s: request scale times the adapter's scale
};

constexpr int32_t kBgmvCudaMaxRank = 128;

struct BgmvCudaProblem {
  const void* x = nullptr;      // device [tokens, in] of `activation`
  void* y = nullptr;            // device [tokens, out] of `activation`, x W^T + b
  const float* bias = nullptr;  // device [out] or null (read by DoRA rows only)
  CudaElement activation = CudaElement::kFloat32;  // kFloat32 or kBFloat16
  int64_t tokens = 0, in = 0, out = 0;             // tokens <= 65535 (a decode batch)
  const BgmvCudaSegment* segments = nullptr;       // device array
  const int32_t* token_segment = nullptr;  // device [tokens]: segment index, or -1 (base only)
  float* workspace = nullptr;              // device [tokens, kBgmvCudaMaxRank] float32
  void* stream = nullptr;                  // cudaStream_t; null: the default stream
};

// Enqueues both launches on `stream`. Returns 0, or the cudaError_t of a failed launch (a bad
// argument: activation float16, a null pointer, in/out < 1, is cudaErrorInvalidValue). Segments
// with rank outside 1..kBgmvCudaMaxRank are the caller's error (checked on the host by callers
// that build the table; the kernel skips them instead of reading out of bounds).
int BgmvCuda(const BgmvCudaProblem& problem);

// cudaGetErrorString of a code BgmvCuda returned.
const char* BgmvCudaErrorString(int code);

}  // namespace loramux
