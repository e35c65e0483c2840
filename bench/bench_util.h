// Shared pieces of the benchmarks: a random Llama, random adapters, a timer, the BLAS header.
#pragma once

#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <torch/torch.h>

#include "adapters/adapter_weights.h"
#include "engine/engine.h"
#include "model/kv_cache.h"
#include "model/llama_model.h"
#include "tensor/tensor_util.h"

namespace loramux::bench {

inline double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// The memory's read rate now, GB/s: 512 MB (far past the caches) read by as many threads as
// intra-op threads, each its share as 4 streams (a core reads several streams faster than one) of
// whole cache lines, best of 3. Batch-1 decode streams every weight once a step: its ceiling is
// about the weights' bytes over this rate.
inline double MemoryReadGBs() {
  const torch::Tensor big = torch::ones({int64_t{64} << 20}, torch::kInt64);
  const int64_t* data = big.data_ptr<int64_t>();
  const int64_t threads = at::get_num_threads(), share = big.numel() / threads;
  constexpr int64_t kStreams = 4;
  double best = 1e9;
  for (int i = 0; i < 3; ++i) {
    std::vector<int64_t> sums(threads);
    std::vector<std::thread> readers;
    const auto start = std::chrono::steady_clock::now();
    for (int64_t t = 0; t < threads; ++t) {
      readers.emplace_back([&, t] {
        const int64_t* part = data + t * share;
        const int64_t len = share / kStreams;
        int64_t sum[kStreams] = {};
        // One word a 64-byte line: the memory moves every line, the core does little else.
        for (int64_t j = 0; j < len; j += 8) {
          for (int64_t s = 0; s < kStreams; ++s) sum[s] += part[s * len + j];
        }
        sums[t] = sum[0] + sum[1] + sum[2] + sum[3];
      });
    }
    for (std::thread& r : readers) r.join();
    best = std::min(best, Seconds(start));
    int64_t total = 0;
    for (int64_t v : sums) total += v;
    if (total > big.numel()) std::abort();  // uses the sums, so the reads stay
  }
  return static_cast<double>(big.nbytes()) / best / 1e9;
}

// A Llama-shaped config: `hidden` (default 1024), intermediate 2.75x hidden, heads of 64 with
// half as many KV heads, vocab 32000.
inline ModelConfig BenchConfig(int64_t layers, int64_t hidden = 1024) {
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.vocab_size = 32000;
  c.hidden_size = hidden;
  c.intermediate_size = hidden * 11 / 4;
  c.num_layers = layers;
  c.head_dim = 64;
  c.num_heads = hidden / c.head_dim;
  c.num_kv_heads = c.num_heads / 2;
  c.max_position_embeddings = 2048;
  c.eos_token_ids = {2};
  return c;
}

inline int64_t ParameterCount(const LlamaModel& m) {
  return m.weight_bytes() / static_cast<int64_t>(c10::elementSize(m.dtype()));
}

// GFLOP/s of a large square float32 matmul on this machine, best of a few runs.
inline double MatmulGflops(torch::Device device, int64_t n = 2048,
                           torch::ScalarType dtype = torch::kFloat32) {
  torch::NoGradGuard guard;
  const auto options = torch::TensorOptions().device(device).dtype(dtype);
  const torch::Tensor a = torch::randn({n, n}, options);
  const torch::Tensor b = torch::randn({n, n}, options);
  torch::mm(a, b);
  double best = 0;
  for (int i = 0; i < 3; ++i) {
    const auto start = std::chrono::steady_clock::now();
    torch::mm(a, b).sum().item<float>();
    best = std::max(best, 2.0 * n * n * n / Seconds(start) / 1e9);
  }
  return best;
}

// A random adapter of `rank` on every projection of every layer (LoRA, or DoRA per output row),
// its factors in `factor_dtype` (default: the model's).
inline std::shared_ptr<AdapterWeights> RandomAdapter(
    const LlamaModel& model, int64_t rank, bool dora, int seed,
    std::optional<torch::ScalarType> factor_dtype = std::nullopt) {
  torch::NoGradGuard guard;
  torch::manual_seed(seed);
  // Drawn on the model's device (float32, then the factor dtype): a GPU fills its own memory.
  const auto on_device = torch::TensorOptions().device(model.device());
  std::vector<std::unique_ptr<ModuleAdapter>> modules;
  for (int64_t l = 0; l < model.config().num_layers; ++l) {
    for (int64_t p = 0; p < kNumProjections; ++p) {
      const auto [out, in] = model.module_shape(l * kNumProjections + p);
      auto m = std::make_unique<ModuleAdapter>();
      m->kind = dora ? ModuleAdapter::Kind::kDoraRow : ModuleAdapter::Kind::kLora;
      m->rank = rank;
      m->scale = 2.0;
      const torch::ScalarType dtype = factor_dtype.value_or(model.dtype());
      m->a = (torch::randn({rank, in}, on_device) * 0.02).to(dtype);
      m->b_t = (torch::randn({rank, out}, on_device) * 0.02).to(dtype);
      if (dora) {
        m->gain = (1 + 0.1 * torch::randn({out}, on_device)).to(model.dtype());
        m->magnitude = m->gain.to(torch::kFloat64);
        m->norm_terms = torch::ones({3, out}, on_device.dtype(torch::kFloat64));
      }
      modules.push_back(std::move(m));
    }
  }
  return AdapterWeights::FromModules("bench", std::move(modules));
}

inline void PrintHeader(const char* title) {
  ConfigureThreads();
  std::printf("# %s\n# BLAS: %s | torch threads: %d\n", title, BlasLibrary().c_str(),
              at::get_num_threads());
}

}  // namespace loramux::bench
