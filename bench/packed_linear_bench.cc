// The base model's GEMMs for one decode or prefill step, by kernel: loramux's panel kernels
// (tensor/panel_gemm.h), oneDNN's matmul on its packed layout, and LibTorch on the plain weights,
// side by side at 1 to 512 rows, on the 8 layers' 57 weights of a Llama (random, cold in memory:
// each step reads every weight once, as a server does), next to the machine's memory read rate
// measured in the same run (batch 1 streams the weights, so its ceiling is that rate).
//
//   ./build/bench/packed_linear_bench [dtype=bfloat16|float32] [hidden=1024] [intermediate=2816]
//                                     [kv=256] [vocab=32000] [layers=8]
//
// The defaults are issue 17's peer model. Kernels that do not run here are left out.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "bench/bench_util.h"
#include "tensor/packed_linear.h"

using namespace loramux;
using namespace loramux::bench;

namespace {

struct Kernel {
  const char* name;
  // y = x·Wᵀ for weight i.
  std::function<void(size_t, const torch::Tensor&)> apply;
};

}  // namespace

int main(int argc, char** argv) {
  const std::string dtype_name = argc > 1 ? argv[1] : "bfloat16";
  const torch::ScalarType dtype = dtype_name == "float32" ? torch::kFloat32 : torch::kBFloat16;
  const int64_t hidden = argc > 2 ? std::atoll(argv[2]) : 1024;
  const int64_t inter = argc > 3 ? std::atoll(argv[3]) : 2816;
  const int64_t kv = argc > 4 ? std::atoll(argv[4]) : 256;
  const int64_t vocab = argc > 5 ? std::atoll(argv[5]) : 32000;
  const int64_t layers = argc > 6 ? std::atoll(argv[6]) : 8;
  PrintHeader("loramux packed_linear_bench: a step's base GEMMs by kernel");

  // [out, in] of each weight a step reads: q k v o gate up down per layer, then the head.
  std::vector<std::pair<int64_t, int64_t>> shapes;
  for (int64_t l = 0; l < layers; ++l) {
    for (auto s : {std::pair{hidden, hidden},
                   {kv, hidden},
                   {kv, hidden},
                   {hidden, hidden},
                   {inter, hidden},
                   {inter, hidden},
                   {hidden, inter}}) {
      shapes.push_back(s);
    }
  }
  shapes.push_back({vocab, hidden});
  torch::manual_seed(0);
  std::vector<torch::Tensor> plain;
  std::vector<std::shared_ptr<const PackedLinear>> panels, onednn;
  double weight_bytes = 0;
  for (const auto& [out, in] : shapes) {
    plain.push_back((torch::randn({out, in}) * 0.03).to(dtype));
    panels.push_back(PackedLinear::Pack(plain.back(), PackedLinear::Kernel::kPanels));
    onednn.push_back(PackedLinear::Pack(plain.back(), PackedLinear::Kernel::kOneDnn));
    weight_bytes += static_cast<double>(plain.back().nbytes());
  }
  std::vector<Kernel> kernels;
  if (panels.front()) {
    kernels.push_back({"panels", [&](size_t i, const torch::Tensor& x) { panels[i]->Apply(x); }});
  }
  if (onednn.front()) {
    kernels.push_back({"oneDNN", [&](size_t i, const torch::Tensor& x) { onednn[i]->Apply(x); }});
  }
  kernels.push_back(
      {"LibTorch, plain", [&](size_t i, const torch::Tensor& x) { torch::linear(x, plain[i]); }});

  std::printf("# %s, %zu weights, %.0f MB; memory read rate now: %.1f GB/s\n\n", dtype_name.c_str(),
              shapes.size(), weight_bytes / 1e6, MemoryReadGBs());
  std::printf("| rows | kernel | ms a step | GFLOP/s | weights GB/s | vs %s |\n", kernels[0].name);
  std::printf("|--:|---|--:|--:|--:|--:|\n");
  for (int64_t m : {1, 2, 8, 32, 128, 512}) {
    const torch::Tensor x = torch::randn({m, std::max(hidden, inter)}).to(dtype);
    std::vector<torch::Tensor> inputs;
    double flop = 0;
    for (const auto& [out, in] : shapes) {
      inputs.push_back(x.narrow(1, 0, in).contiguous());
      flop += 2.0 * m * out * in;
    }
    // Kernels take turns, best of `rounds` whole steps each.
    const int rounds = m >= 128 ? 3 : 6;
    std::vector<double> best(kernels.size(), 1e9);
    for (int r = 0; r < rounds; ++r) {
      for (size_t k = 0; k < kernels.size(); ++k) {
        const auto start = std::chrono::steady_clock::now();
        for (size_t i = 0; i < shapes.size(); ++i) kernels[k].apply(i, inputs[i]);
        best[k] = std::min(best[k], Seconds(start));
      }
    }
    for (size_t k = 0; k < kernels.size(); ++k) {
      std::printf("| %lld | %s | %.2f | %.0f | %.1f | %.2fx |\n", static_cast<long long>(m),
                  kernels[k].name, best[k] * 1e3, flop / best[k] / 1e9,
                  weight_bytes / best[k] / 1e9, best[0] / best[k]);
    }
  }
  return 0;
}
