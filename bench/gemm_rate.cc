// The machine's GEMM rate in float32 and bfloat16 at the shapes a decode step and a prefill chunk
// run, and its memory read rate (batch-1 decode streams every weight once a step: its ceiling is
// the weights' bytes over this rate), measured now (these machines vary from run to run): what
// bench/dtype_bench.sh prints next to the serving numbers.
//
//   ./build/bench/gemm_rate [hidden=1024] [intermediate=2816]
#include <cstdio>
#include <cstdlib>

#include "bench/bench_util.h"
#include "tensor/tensor_util.h"

using namespace loramux;

int main(int argc, char** argv) {
  const int64_t hidden = argc > 1 ? std::atoll(argv[1]) : 1024;
  const int64_t inter = argc > 2 ? std::atoll(argv[2]) : 2816;
  ConfigureThreads();
  std::printf("| x[m,%lld] · W[%lld,%lld]^T | float32 GFLOP/s | bfloat16 GFLOP/s | bf16 / f32 |\n",
              static_cast<long long>(hidden), static_cast<long long>(inter),
              static_cast<long long>(hidden));
  std::printf("|---|--:|--:|--:|\n");
  for (int64_t m : {1, 32, 512}) {
    const double f32 = LinearGflops(torch::kCPU, torch::kFloat32, m, hidden, inter);
    const double bf16 = LinearGflops(torch::kCPU, torch::kBFloat16, m, hidden, inter);
    std::printf("| m = %lld | %.1f | %.1f | %.2fx |\n", static_cast<long long>(m), f32, bf16,
                bf16 / f32);
  }
  std::printf("\nMemory read rate (512 MB, 4 streams a thread): %.1f GB/s\n",
              bench::MemoryReadGBs());
  return 0;
}
