// Checks and times the CUDA gather-BGMV kernels (adapters/bgmv_cuda.h) on the GPU, without
// LibTorch: random bfloat16 activations and factors (fresh per case), the result against a float64
// host reference computed from the same rounded values (‖y − ref‖ / ‖ref‖ must stay under 1e-2,
// bfloat16 output; rows without an adapter must come back bit for bit), then the median of 50
// timed calls (CUDA events) and the bytes a call must move over that time, against a large
// device-to-device copy measured in the same run. Exit 1 when a check fails.
//
//   ./build-cuda/bench/bgmv_cuda_check
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <cuda_runtime.h>

#include "adapters/bgmv_cuda.h"

using loramux::BgmvCudaProblem;
using loramux::BgmvCudaSegment;
using loramux::CudaElement;
using loramux::kBgmvCudaMaxRank;

namespace {

// Normal(0, 1) draws from a 64-bit xorshift and Box-Muller (no <random>: CUDA 11.8's front end
// rejects libstdc++ 12's <random> on this machine).
class Normal {
 public:
  explicit Normal(uint64_t seed) : state_(seed | 1) {}
  float operator()() {
    const double u1 = (Next() >> 11) * (1.0 / 9007199254740992.0) + 1e-300;
    const double u2 = (Next() >> 11) * (1.0 / 9007199254740992.0);
    return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
  }

 private:
  uint64_t Next() {
    state_ ^= state_ << 13;
    state_ ^= state_ >> 7;
    state_ ^= state_ << 17;
    return state_;
  }
  uint64_t state_;
};

#define CHECK_CUDA(call)                                                                         \
  do {                                                                                           \
    cudaError_t e = (call);                                                                      \
    if (e != cudaSuccess) {                                                                      \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e)); \
      std::exit(1);                                                                              \
    }                                                                                            \
  } while (0)

uint16_t ToBf16(float v) {  // round to nearest even (finite inputs)
  uint32_t u;
  std::memcpy(&u, &v, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
double FromBf16(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float v;
  std::memcpy(&v, &u, 4);
  return v;
}

template <typename T>
T* Upload(const std::vector<T>& host) {
  T* device = nullptr;
  CHECK_CUDA(cudaMalloc(&device, host.size() * sizeof(T)));
  CHECK_CUDA(cudaMemcpy(device, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  return device;
}

struct Case {
  const char* name;
  int64_t tokens, in, out, adapters, rank;
  bool dora;
  int base_rows;  // rows served by no adapter (the last ones)
};

struct HostAdapter {
  std::vector<uint16_t> a, b_t;  // bf16
  std::vector<float> gain;
};

// Returns false when the check fails; prints one table row.
bool Run(const Case& c, double copy_gbps, Normal& normal) {
  std::vector<uint16_t> x(c.tokens * c.in), y(c.tokens * c.out);
  for (auto& v : x) v = ToBf16(normal());
  for (auto& v : y) v = ToBf16(normal());
  std::vector<float> bias(c.out);
  for (auto& v : bias) v = 0.1f * normal();
  std::vector<HostAdapter> adapters(c.adapters);
  std::vector<uint16_t*> device_a, device_b;
  std::vector<float*> device_gain;
  for (auto& ad : adapters) {
    ad.a.resize(c.rank * c.in);
    ad.b_t.resize(c.rank * c.out);
    for (auto& v : ad.a) v = ToBf16(0.02f * normal());
    for (auto& v : ad.b_t) v = ToBf16(0.02f * normal());
    if (c.dora) {
      ad.gain.resize(c.out);
      for (auto& v : ad.gain) v = 1.0f + 0.1f * normal();
    }
    device_a.push_back(Upload(ad.a));
    device_b.push_back(Upload(ad.b_t));
    device_gain.push_back(c.dora ? Upload(ad.gain) : nullptr);
  }
  // Adapter rows first, split into `adapters` contiguous segments, then the base rows.
  const int64_t served = c.tokens - c.base_rows;
  std::vector<int32_t> token_segment(c.tokens, -1);
  for (int64_t t = 0; t < served; ++t)
    token_segment[t] = static_cast<int32_t>(t * c.adapters / served);
  std::vector<BgmvCudaSegment> segments(c.adapters);
  const float scale = 2.0f;
  for (int64_t s = 0; s < c.adapters; ++s) {
    segments[s].a = device_a[s];
    segments[s].b_t = device_b[s];
    segments[s].gain = device_gain[s];
    segments[s].factor = CudaElement::kBFloat16;
    segments[s].rank = static_cast<int32_t>(c.rank);
    segments[s].scale = scale;
  }
  uint16_t* dx = Upload(x);
  uint16_t* dy = Upload(y);
  float* dbias = Upload(bias);
  BgmvCudaSegment* dsegments = Upload(segments);
  int32_t* dmap = Upload(token_segment);
  float* workspace = nullptr;
  CHECK_CUDA(cudaMalloc(&workspace, c.tokens * kBgmvCudaMaxRank * sizeof(float)));

  BgmvCudaProblem p;
  p.x = dx;
  p.y = dy;
  p.bias = dbias;
  p.activation = CudaElement::kBFloat16;
  p.tokens = c.tokens;
  p.in = c.in;
  p.out = c.out;
  p.segments = dsegments;
  p.token_segment = dmap;
  p.workspace = workspace;
  int code = loramux::BgmvCuda(p);
  if (code != 0) {
    std::fprintf(stderr, "BgmvCuda: %s\n", loramux::BgmvCudaErrorString(code));
    std::exit(1);
  }
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<uint16_t> result(y.size());
  CHECK_CUDA(cudaMemcpy(result.data(), dy, y.size() * 2, cudaMemcpyDeviceToHost));

  // float64 reference from the same bf16 values.
  double err2 = 0, ref2 = 0;
  bool base_exact = true, finite = true;
  for (int64_t t = 0; t < c.tokens; ++t) {
    const int32_t s = token_segment[t];
    for (int64_t o = 0; o < c.out; ++o) {
      const uint16_t got_bits = result[t * c.out + o];
      const double got = FromBf16(got_bits);
      if (!std::isfinite(got)) finite = false;
      if (s < 0) base_exact &= got_bits == y[t * c.out + o];
    }
    if (s < 0) continue;
    const HostAdapter& ad = adapters[s];
    std::vector<double> v(c.rank, 0.0);
    for (int64_t k = 0; k < c.rank; ++k) {
      for (int64_t i = 0; i < c.in; ++i)
        v[k] += FromBf16(ad.a[k * c.in + i]) * FromBf16(x[t * c.in + i]);
    }
    for (int64_t o = 0; o < c.out; ++o) {
      double d = 0;
      for (int64_t k = 0; k < c.rank; ++k) d += FromBf16(ad.b_t[k * c.out + o]) * v[k];
      d *= scale;
      const double y0 = FromBf16(y[t * c.out + o]);
      const double ref = c.dora ? ad.gain[o] * (y0 - bias[o] + d) + bias[o] : y0 + d;
      const double got = FromBf16(result[t * c.out + o]);
      err2 += (got - ref) * (got - ref);
      ref2 += ref * ref;
    }
  }
  const double rel = std::sqrt(err2 / std::max(ref2, 1e-30));
  const bool ok = finite && base_exact && rel < 1e-2;

  // Timing: the median of 50 calls, each between two events.
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  for (int i = 0; i < 5; ++i) loramux::BgmvCuda(p);
  std::vector<float> ms;
  for (int i = 0; i < 50; ++i) {
    CHECK_CUDA(cudaEventRecord(start));
    loramux::BgmvCuda(p);
    CHECK_CUDA(cudaEventRecord(stop));
    CHECK_CUDA(cudaEventSynchronize(stop));
    float m = 0;
    CHECK_CUDA(cudaEventElapsedTime(&m, start, stop));
    ms.push_back(m);
  }
  CHECK_CUDA(cudaGetLastError());
  std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
  const double seconds = ms[ms.size() / 2] / 1e3;
  // The fewest bytes: each adapter's factors once, x read once, the served rows of y read and
  // written, gains once.
  const double bytes = c.adapters * (c.rank * (c.in + c.out) * 2.0 + (c.dora ? c.out * 4.0 : 0.0)) +
                       c.tokens * c.in * 2.0 + served * c.out * 4.0;
  const double gbps = bytes / seconds / 1e9;
  std::printf("| %-34s | %6lld | %4lld | %4lld | %9.2e | %s | %9.1f | %8.1f | %5.1f%% |\n", c.name,
              static_cast<long long>(c.tokens), static_cast<long long>(c.adapters),
              static_cast<long long>(c.rank), rel, ok ? "ok  " : "FAIL", seconds * 1e6, gbps,
              100 * gbps / copy_gbps);
  for (size_t s = 0; s < device_a.size(); ++s) {
    cudaFree(device_a[s]);
    cudaFree(device_b[s]);
    if (device_gain[s]) cudaFree(device_gain[s]);
  }
  cudaFree(dx);
  cudaFree(dy);
  cudaFree(dbias);
  cudaFree(dsegments);
  cudaFree(dmap);
  cudaFree(workspace);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return ok;
}

// GB/s of a 2 GiB device-to-device copy (bytes read plus written), the median of 10.
double CopyBandwidth() {
  const size_t bytes = size_t{1} << 31;
  void *a = nullptr, *b = nullptr;
  CHECK_CUDA(cudaMalloc(&a, bytes));
  CHECK_CUDA(cudaMalloc(&b, bytes));
  CHECK_CUDA(cudaMemset(a, 1, bytes));
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  CHECK_CUDA(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice));
  std::vector<float> ms;
  for (int i = 0; i < 10; ++i) {
    CHECK_CUDA(cudaEventRecord(start));
    CHECK_CUDA(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice));
    CHECK_CUDA(cudaEventRecord(stop));
    CHECK_CUDA(cudaEventSynchronize(stop));
    float m = 0;
    CHECK_CUDA(cudaEventElapsedTime(&m, start, stop));
    ms.push_back(m);
  }
  std::nth_element(ms.begin(), ms.begin() + 5, ms.end());
  cudaFree(a);
  cudaFree(b);
  return 2.0 * bytes / (ms[5] / 1e3) / 1e9;
}

}  // namespace

int main() {
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  const double copy_gbps = CopyBandwidth();
  std::printf("# bgmv_cuda_check on %s (%d SMs); device-to-device copy %.0f GB/s (read + write)\n",
              prop.name, prop.multiProcessorCount, copy_gbps);
  std::printf(
      "| %-34s | tokens | segs | rank | rel. error | chk  | median us |     GB/s | of copy |\n",
      "case (bf16; in -> out 2048 -> 2048)");
  std::printf("|%s|-------:|-----:|-----:|----------:|------|----------:|---------:|--------:|\n",
              std::string(36, '-').c_str());
  Normal normal(20261130);
  const Case cases[] = {
      {"32 LoRA, one token each", 32, 2048, 2048, 32, 16, false, 0},
      {"32 DoRA, one token each", 32, 2048, 2048, 32, 16, true, 0},
      {"128 LoRA, one token each", 128, 2048, 2048, 128, 16, false, 0},
      {"128 DoRA, one token each", 128, 2048, 2048, 128, 16, true, 0},
      {"1 LoRA, 32 tokens", 32, 2048, 2048, 1, 16, false, 0},
      {"8 LoRA x 3 tokens + 8 base rows", 32, 2048, 2048, 8, 16, false, 8},
      {"32 LoRA rank 64, 5632 -> 2048", 32, 5632, 2048, 32, 64, false, 0},
      {"32 DoRA rank 128, 2048 -> 5632", 32, 2048, 5632, 32, 128, true, 0},
  };
  bool ok = true;
  for (const Case& c : cases) ok &= Run(c, copy_gbps, normal);
  std::printf(
      "# rel. error: ||y - ref|| / ||ref|| against float64 on the same bf16 inputs (< 1e-2 "
      "passes; base rows must be unchanged bit for bit)\n");
  return ok ? 0 : 1;
}
