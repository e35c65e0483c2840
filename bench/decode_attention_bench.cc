// Decode attention of one batch-32 step over the issue-17 model's 8 layers (16 query heads on 4 KV
// heads of 64, bfloat16) at contexts from 64 to 2048 positions: loramux's kernel straight from the
// paged cache (model/decode_attention.h; each sequence's slots contiguous, as blocks hand them
// out, or scattered through the cache), against LibTorch's eager attention on contiguous per-
// sequence K/V (matmul, softmax, matmul: what HF transformers runs without a fused kernel), side by
// side in one run, next to the memory read rate (the kernel's floor: every key and value is read
// once a step).
//
//   ./build/bench/decode_attention_bench [dtype=bfloat16|float32] [reps=10]
#include <algorithm>
#include <cstdlib>

#include "absl/strings/str_cat.h"

#include "bench/bench_util.h"
#include "model/decode_attention.h"

using namespace loramux;
using namespace loramux::bench;

namespace {

constexpr int64_t kRows = 32, kLayers = 8, kHeads = 16, kKvHeads = 4, kHeadDim = 64;

double Median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

// Median seconds of `reps` calls of `step` (one untimed first).
template <typename Step>
double Time(int64_t reps, Step step) {
  step();
  std::vector<double> t;
  for (int64_t i = 0; i < reps; ++i) {
    const auto start = std::chrono::steady_clock::now();
    step();
    t.push_back(Seconds(start));
  }
  return Median(t);
}

}  // namespace

int main(int argc, char** argv) {
  const torch::ScalarType dtype = ParseScalarType(argc > 1 ? argv[1] : "bfloat16").value();
  const int64_t reps = argc > 2 ? std::atoi(argv[2]) : 10;
  PrintHeader(absl::StrCat("loramux decode_attention_bench: batch-32 decode attention, 8 layers (",
                           c10::toString(dtype), ", CPU)")
                  .c_str());
  torch::NoGradGuard guard;
  const double read_gbs = MemoryReadGBs();
  std::printf("# memory read rate now: %.1f GB/s\n\n", read_gbs);
  std::printf(
      "| context | KV read a step | floor at that rate | paged kernel, contiguous slots | "
      "paged kernel, scattered slots | LibTorch eager | eager / kernel |\n"
      "|--:|--:|--:|--:|--:|--:|--:|\n");
  const double scale = 1.0 / 8;
  for (const int64_t context : {64, 256, 1024, 2048}) {
    const int64_t slots = kRows * context;
    // One layer's cache, used by every layer (the bytes a step reads are the same; 8 layers'
    // caches at 2048 positions would be 1 GiB).
    const torch::Tensor keys = torch::randn({slots, kKvHeads, kHeadDim}).to(dtype);
    const torch::Tensor values = torch::randn({slots, kKvHeads, kHeadDim}).to(dtype);
    const torch::Tensor q = torch::randn({kRows, kHeads, kHeadDim}).to(dtype);
    torch::Tensor out = torch::zeros_like(q);
    const torch::Tensor contiguous = torch::arange(slots), scattered = torch::randperm(slots);
    auto kernel = [&](const torch::Tensor& order) {
      std::vector<DecodeContext> contexts;
      for (int64_t r = 0; r < kRows; ++r) {
        contexts.push_back({r, order.data_ptr<int64_t>() + r * context, 0, context});
      }
      return Time(reps, [&] {
        for (int64_t l = 0; l < kLayers; ++l)
          DecodeAttention(q, keys, values, contexts, scale, out);
      });
    };
    const double in_blocks = kernel(contiguous), scattered_s = kernel(scattered);
    // q [B, kv, group, hd]; k^T [B, kv, hd, ctx]; v [B, kv, ctx, hd], each sequence's own.
    const torch::Tensor qe = q.view({kRows, kKvHeads, kHeads / kKvHeads, kHeadDim});
    const torch::Tensor ke = keys.view({kRows, context, kKvHeads, kHeadDim}).permute({0, 2, 3, 1});
    const torch::Tensor ve =
        values.view({kRows, context, kKvHeads, kHeadDim}).permute({0, 2, 1, 3});
    const torch::Tensor kc = ke.contiguous(), vc = ve.contiguous();
    const double eager = Time(reps, [&] {
      for (int64_t l = 0; l < kLayers; ++l) {
        torch::matmul(torch::softmax(torch::matmul(qe, kc) * scale, -1), vc);
      }
    });
    const double bytes = 2.0 * kLayers * keys.nbytes();
    std::printf("| %lld | %.0f MB | %.1f ms | %.1f ms (%.1f GB/s) | %.1f ms | %.1f ms | %.1fx |\n",
                static_cast<long long>(context), bytes / 1e6, bytes / (read_gbs * 1e9) * 1e3,
                in_blocks * 1e3, bytes / in_blocks / 1e9, scattered_s * 1e3, eager * 1e3,
                eager / in_blocks);
  }
  return 0;
}
