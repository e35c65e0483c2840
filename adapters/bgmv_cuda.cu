// The gather-BGMV kernels of bgmv_cuda.h. Two launches per call:
//   shrink: one block per token, one warp per rank row: v[t, k] = Σ_i A[k, i] x[t, i]
//           (lanes stride the row, so a warp's loads are coalesced; a warp-shuffle sum).
//   expand: blocks of 256 outputs per token: y[t, o] from Σ_k B^T[k, o] · c v[t, k] (B^T rows are
//           contiguous in o, so the loads are coalesced), with DoRA's gain and bias in the same
//           pass: one read and one write of y.
// Tokens of one segment re-read the same A and B^T rows, which then come from L2.
#include "adapters/bgmv_cuda.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace loramux {
namespace {

constexpr int kShrinkThreads = 256;
constexpr int kExpandThreads = 256;

__device__ __forceinline__ float Widen(float v) { return v; }
// bfloat16 and float16 as raw 16-bit words: bfloat16 widens exactly by a shift.
struct BF16 {
  uint16_t bits;
};
struct F16 {
  uint16_t bits;
};
__device__ __forceinline__ float Widen(BF16 v) {
  return __uint_as_float(static_cast<uint32_t>(v.bits) << 16);
}
__device__ __forceinline__ float Widen(F16 v) { return __half2float(__ushort_as_half(v.bits)); }

__device__ __forceinline__ void Store(float* p, float v) { *p = v; }
__device__ __forceinline__ void Store(BF16* p, float v) {  // round to nearest even
  uint32_t u = __float_as_uint(v);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu) != 0) {
    p->bits = static_cast<uint16_t>((u >> 16) | 0x40);  // NaN stays NaN
    return;
  }
  u += 0x7fffu + ((u >> 16) & 1u);
  p->bits = static_cast<uint16_t>(u >> 16);
}

__device__ __forceinline__ float WarpSum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Σ_i row[i] x[i] over this lane's share (i = lane, lane + 32, ...), four loads in flight.
template <typename F, typename Act>
__device__ __forceinline__ float LaneDot(const F* row, const Act* x, int64_t in, int lane) {
  float acc0 = 0, acc1 = 0, acc2 = 0, acc3 = 0;
  int64_t i = lane;
  for (; i + 96 < in; i += 128) {
    acc0 += Widen(row[i]) * Widen(x[i]);
    acc1 += Widen(row[i + 32]) * Widen(x[i + 32]);
    acc2 += Widen(row[i + 64]) * Widen(x[i + 64]);
    acc3 += Widen(row[i + 96]) * Widen(x[i + 96]);
  }
  for (; i < in; i += 32) acc0 += Widen(row[i]) * Widen(x[i]);
  return (acc0 + acc1) + (acc2 + acc3);
}

template <typename Act>
__global__ void Shrink(BgmvCudaProblem p) {
  const int64_t t = blockIdx.x;
  const int32_t si = p.token_segment[t];
  if (si < 0) return;
  const BgmvCudaSegment s = p.segments[si];
  if (s.rank < 1 || s.rank > kBgmvCudaMaxRank) return;
  const Act* x = static_cast<const Act*>(p.x) + t * p.in;
  const int lane = threadIdx.x % 32;
  for (int k = threadIdx.x / 32; k < s.rank; k += blockDim.x / 32) {
    float acc = 0;
    switch (s.factor) {
      case CudaElement::kFloat32:
        acc = LaneDot(static_cast<const float*>(s.a) + k * p.in, x, p.in, lane);
        break;
      case CudaElement::kBFloat16:
        acc = LaneDot(static_cast<const BF16*>(s.a) + k * p.in, x, p.in, lane);
        break;
      case CudaElement::kFloat16:
        acc = LaneDot(static_cast<const F16*>(s.a) + k * p.in, x, p.in, lane);
        break;
    }
    acc = WarpSum(acc);
    if (lane == 0) p.workspace[t * kBgmvCudaMaxRank + k] = acc;
  }
}

template <typename F>
__device__ __forceinline__ float ColumnDot(const F* b_t, const float* v, int32_t rank, int64_t out,
                                           int64_t o) {
  float acc = 0;
  for (int32_t k = 0; k < rank; ++k) acc += Widen(b_t[k * out + o]) * v[k];
  return acc;
}

template <typename Act>
__global__ void Expand(BgmvCudaProblem p) {
  const int64_t t = blockIdx.y;
  const int32_t si = p.token_segment[t];
  if (si < 0) return;  // uniform over the block: the barrier below is safe
  const BgmvCudaSegment s = p.segments[si];
  if (s.rank < 1 || s.rank > kBgmvCudaMaxRank) return;
  __shared__ float v[kBgmvCudaMaxRank];
  for (int k = threadIdx.x; k < s.rank; k += blockDim.x) {
    v[k] = s.scale * p.workspace[t * kBgmvCudaMaxRank + k];
  }
  __syncthreads();
  const int64_t o = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (o >= p.out) return;
  float d = 0;
  switch (s.factor) {
    case CudaElement::kFloat32:
      d = ColumnDot(static_cast<const float*>(s.b_t), v, s.rank, p.out, o);
      break;
    case CudaElement::kBFloat16:
      d = ColumnDot(static_cast<const BF16*>(s.b_t), v, s.rank, p.out, o);
      break;
    case CudaElement::kFloat16:
      d = ColumnDot(static_cast<const F16*>(s.b_t), v, s.rank, p.out, o);
      break;
  }
  Act* y = static_cast<Act*>(p.y) + t * p.out + o;
  float value = Widen(*y);
  if (s.gain != nullptr) {
    const float b = p.bias != nullptr ? p.bias[o] : 0.0f;
    value = s.gain[o] * (value - b + d) + b;
  } else {
    value += d;
  }
  Store(y, value);
}

template <typename Act>
cudaError_t Launch(const BgmvCudaProblem& p) {
  cudaStream_t stream = static_cast<cudaStream_t>(p.stream);
  Shrink<Act><<<static_cast<unsigned>(p.tokens), kShrinkThreads, 0, stream>>>(p);
  cudaError_t error = cudaGetLastError();
  if (error != cudaSuccess) return error;
  const dim3 grid(static_cast<unsigned>((p.out + kExpandThreads - 1) / kExpandThreads),
                  static_cast<unsigned>(p.tokens));
  Expand<Act><<<grid, kExpandThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

int BgmvCuda(const BgmvCudaProblem& p) {
  if (p.x == nullptr || p.y == nullptr || p.segments == nullptr || p.token_segment == nullptr ||
      p.workspace == nullptr || p.in < 1 || p.out < 1 || p.tokens < 0 || p.tokens > 65535) {
    return cudaErrorInvalidValue;
  }
  if (p.tokens == 0) return cudaSuccess;
  switch (p.activation) {
    case CudaElement::kFloat32: return Launch<float>(p);
    case CudaElement::kBFloat16: return Launch<BF16>(p);
    case CudaElement::kFloat16: break;
  }
  return cudaErrorInvalidValue;
}

const char* BgmvCudaErrorString(int code) {
  return cudaGetErrorString(static_cast<cudaError_t>(code));
}

}  // namespace loramux
