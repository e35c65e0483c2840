// Adapter serving cost at batch-32 decode on random Llamas of hidden 1024 and 2048: step time with
//   (a) base only, (b) one adapter for all rows, (c) 32 different rank-16 LoRA adapters on all 7
//   projections, (d) 32 different rank-16 DoRA adapters, (e) 32 adapters of ranks 4..64, and
//   (c), (d) again with adapters saved in bfloat16 (kept in 16 bits, served exactly),
// as throughput ratios against (a), measured side by side in one run; then what switching adapters
// costs a merge-based server (merge W += sBA into every layer, unmerge) against ours (nothing).
//
// The adapters' share of the bytes a step reads shrinks as 2r/hidden, so the ratios depend on the
// model size: both sizes are printed.
//
// With dtype bfloat16 the model, activations and factors are bfloat16, and (c), (d) run once more
// with the side path forced to two GEMMs per segment: bfloat16's path before the fused kernel
// took 16-bit activations.
//
//   ./build/bench/adapter_bench [layers=8] [steps=20] [context=64] [dtype=float32|bfloat16]
#include <algorithm>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "bench/bench_util.h"

using namespace loramux;
using namespace loramux::bench;

namespace {

constexpr int64_t kBatch = 32;

// Decode steps for kBatch rows, row i served by adapters[i] (null = base), rows sorted by adapter
// as the scheduler packs them, each step one token further into the context.
class DecodeRunner {
 public:
  DecodeRunner(const LlamaModel& model, std::vector<const AdapterWeights*> adapters,
               int64_t context, int64_t max_steps, DeltaPath path)
      : model_(model),
        adapters_(std::move(adapters)),
        path_(path),
        cache_(model.config(),
               kBatch * (context + max_steps + 16) *
                   KvCache::BytesPerToken(model.config(), model.dtype()),
               model.device(), model.dtype()),
        pos_(context - 1) {
    for (int64_t i = 0; i < kBatch; ++i) cache_.Reserve(i, context + max_steps + 1);
    for (int64_t i = 0; i < kBatch; ++i) order_.push_back(i);
    std::stable_sort(order_.begin(), order_.end(),
                     [&](int64_t x, int64_t y) { return adapters_[x] < adapters_[y]; });
    Step();  // warm-up at the target context
  }

  // Runs one step; returns its seconds.
  double Step() {
    ForwardBatch batch;
    batch.delta_path = path_;
    for (int64_t k = 0; k < kBatch; ++k) {
      const int64_t i = order_[k];
      batch.chunks.push_back({i, pos_, k, 1, false});
      batch.token_ids.push_back((i * 13 + pos_) % 32000);
      if (adapters_[i]) {
        if (!batch.adapters.empty() && batch.adapters.back().adapter == adapters_[i]) {
          batch.adapters.back().end = k + 1;
        } else {
          batch.adapters.push_back({adapters_[i], 1.0, k, k + 1});
        }
      }
    }
    const auto start = std::chrono::steady_clock::now();
    model_.Forward(batch, cache_).value();
    ++pos_;
    return Seconds(start);
  }

 private:
  const LlamaModel& model_;
  std::vector<const AdapterWeights*> adapters_;
  DeltaPath path_;
  KvCache cache_;
  std::vector<int64_t> order_;
  int64_t pos_;
};

double Median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

// Seconds to merge one adapter into every adapted weight and unmerge it again (a copy of the base
// weights is used so the served model stays untouched).
double MergeSwitch(const LlamaModel& model, const AdapterWeights& adapter) {
  torch::NoGradGuard guard;
  std::vector<torch::Tensor> weights;
  for (int64_t l = 0; l < model.config().num_layers; ++l) {
    for (int64_t p = 0; p < kNumProjections; ++p)
      weights.push_back(model.linear(l, static_cast<Projection>(p)).Plain().clone());
  }
  const auto start = std::chrono::steady_clock::now();
  for (size_t i = 0; i < weights.size(); ++i) {
    const ModuleAdapter* m = adapter.module(static_cast<int64_t>(i));
    weights[i].add_(torch::matmul(m->b_t.t(), m->a) * m->scale);
  }
  for (size_t i = 0; i < weights.size(); ++i) {
    const ModuleAdapter* m = adapter.module(static_cast<int64_t>(i));
    weights[i].sub_(torch::matmul(m->b_t.t(), m->a) * m->scale);
  }
  return Seconds(start);
}

// Bytes of the adapters' factors one decode step reads when each row has its own adapter.
double FactorBytes(const std::vector<const AdapterWeights*>& rows) {
  double bytes = 0;
  for (const AdapterWeights* a : rows) {
    for (int64_t i = 0; i < a->num_modules(); ++i) {
      if (const ModuleAdapter* m = a->module(i)) bytes += m->a.nbytes() + m->b_t.nbytes();
    }
  }
  return bytes;
}

// The adapter side path alone: every module's deltas for kBatch rows with one adapter each, as
// one decode step computes them through `path` (no base GEMMs), and the bytes of factors it reads
// per second. A 1 GiB write between rounds evicts the factors from the caches (this host's L3
// is large enough to keep them, which the base weights streaming through a real step prevent).
std::pair<double, double> DeltaOnly(const LlamaModel& model,
                                    const std::vector<const AdapterWeights*>& rows,
                                    DeltaPath path = DeltaPath::kAuto) {
  torch::NoGradGuard guard;
  std::vector<AdapterSegment> segments;
  for (int64_t i = 0; i < kBatch; ++i) segments.push_back({rows[i], 1.0, i, i + 1});
  std::vector<std::pair<torch::Tensor, LinearWeights>> inputs;
  for (int64_t l = 0; l < model.config().num_layers; ++l) {
    for (int64_t p = 0; p < kNumProjections; ++p) {
      const LinearWeights& base = model.linear(l, static_cast<Projection>(p));
      // Activations in the model's dtype, as a step feeds them (float32 inputs would send bfloat16
      // models' deltas through the widening path instead).
      inputs.push_back(
          {torch::randn({kBatch, model.module_shape(l * kNumProjections + p)[1]}).to(model.dtype()),
           base});
    }
  }
  double best = 1e9;
  torch::Tensor evict = torch::zeros({int64_t{1} << 28});
  for (int round = 0; round < 3; ++round) {
    evict.add_(1.0f);
    const auto start = std::chrono::steady_clock::now();
    for (size_t i = 0; i < inputs.size(); ++i) {
      torch::Tensor y = torch::zeros({kBatch, model.module_shape(static_cast<int64_t>(i))[0]},
                                     torch::dtype(model.dtype()));
      AddAdapterDeltas(inputs[i].first, y, inputs[i].second, static_cast<int64_t>(i), segments,
                       path);
    }
    best = std::min(best, Seconds(start));
  }
  return {best, FactorBytes(rows) / best / 1e9};
}

// The (a)..(e) table for one model size; the switch cost too when `show_switch`.
void RunModel(int64_t layers, int64_t hidden, int64_t steps, int64_t context,
              torch::ScalarType dtype, bool show_switch) {
  auto model = LlamaModel::Random(BenchConfig(layers, hidden), torch::kCPU, dtype, 1);
  model->PackWeights();  // as the server serves it
  std::printf(
      "\n## hidden %lld: %lld layers, %.0fM parameters; context %lld; median of %lld steps, "
      "cases taking turns in blocks of 5\n",
      static_cast<long long>(hidden), static_cast<long long>(layers), ParameterCount(*model) / 1e6,
      static_cast<long long>(context), static_cast<long long>(std::max<int64_t>(1, steps / 5) * 5));
  std::vector<std::shared_ptr<AdapterWeights>> lora, dora, mixed, lora16, dora16;
  const int64_t mixed_ranks[] = {4, 8, 16, 32, 64};
  for (int i = 0; i < kBatch; ++i) {
    lora.push_back(RandomAdapter(*model, 16, false, 100 + i));
    dora.push_back(RandomAdapter(*model, 16, true, 200 + i));
    mixed.push_back(RandomAdapter(*model, mixed_ranks[i % 5], i % 4 == 3, 300 + i));
    // Adapters saved in bfloat16 are kept so (FactorPrecision::kAsStored): exact, half the bytes.
    lora16.push_back(RandomAdapter(*model, 16, false, 400 + i, torch::kBFloat16));
    dora16.push_back(RandomAdapter(*model, 16, true, 500 + i, torch::kBFloat16));
  }
  auto rows = [](const std::vector<std::shared_ptr<AdapterWeights>>& list) {
    std::vector<const AdapterWeights*> out;
    for (const auto& a : list) out.push_back(a.get());
    return out;
  };
  struct Case {
    const char* name;
    std::vector<const AdapterWeights*> rows;
    DeltaPath path = DeltaPath::kAuto;
  };
  std::vector<Case> cases = {
      {"(a) base only", std::vector<const AdapterWeights*>(kBatch, nullptr)},
      {"(b) one rank-16 LoRA, all rows", std::vector<const AdapterWeights*>(kBatch, lora[0].get())},
      {"(c) 32 rank-16 LoRA, 7 projections", rows(lora)},
      {"(d) 32 rank-16 DoRA, 7 projections", rows(dora)},
      {"(e) 32 mixed ranks 4..64 (1/4 DoRA)", rows(mixed)},
  };
  if (dtype == torch::kFloat32) {
    cases.push_back({"(c) saved in bfloat16, kept 16-bit", rows(lora16)});
    cases.push_back({"(d) saved in bfloat16, kept 16-bit", rows(dora16)});
  } else {
    cases.push_back({"(c) two GEMMs per segment (before)", rows(lora), DeltaPath::kSegmentGemms});
    cases.push_back({"(d) two GEMMs per segment (before)", rows(dora), DeltaPath::kSegmentGemms});
  }
  // The cases take turns in blocks of kBlock steps, round after round, so machine noise (this
  // VM's CPU share drifts) falls on all of them alike, while within a block each runs step after
  // step as a server would (caches as they are between that case's own steps; the first step of
  // a block is untimed). Each case reports its median step.
  constexpr int64_t kBlock = 5;
  const int64_t rounds = std::max<int64_t>(1, steps / kBlock);
  std::vector<std::unique_ptr<DecodeRunner>> runners;
  for (const Case& c : cases) {
    runners.push_back(
        std::make_unique<DecodeRunner>(*model, c.rows, context, rounds * (kBlock + 1), c.path));
  }
  std::vector<std::vector<double>> times(cases.size());
  for (int64_t r = 0; r < rounds; ++r) {
    for (size_t i = 0; i < cases.size(); ++i) {
      runners[i]->Step();
      for (int64_t s = 0; s < kBlock; ++s) times[i].push_back(runners[i]->Step());
    }
  }
  std::vector<double> best;
  for (const auto& t : times) best.push_back(Median(t));
  std::printf("| case | step ms | tokens/s | throughput vs (a) |\n|---|---:|---:|---:|\n");
  for (size_t i = 0; i < cases.size(); ++i) {
    std::printf("| %s | %.1f | %.1f | %.1f%% |\n", cases[i].name, best[i] * 1e3, kBatch / best[i],
                100 * best[0] / best[i]);
  }
  const auto [delta_s, delta_gbs] = DeltaOnly(*model, rows(lora));
  const auto [same_s, same_gbs] =
      DeltaOnly(*model, std::vector<const AdapterWeights*>(kBatch, lora[0].get()));
  const double factor_bytes = FactorBytes(rows(lora));
  std::printf(
      "# (c) reads %.0f MB of adapter factors per step, %.0f%% of the base's %.0f MB of weights\n",
      factor_bytes / 1e6, 100 * factor_bytes / model->weight_bytes(), model->weight_bytes() / 1e6);
  // The side path is memory-bound and runs after the base GEMMs it does not overlap: its floor is
  // its bytes at the memory's read rate, which caps (c)'s ratio on this machine.
  const double read_gbs = MemoryReadGBs();
  const double floor_s = factor_bytes / (read_gbs * 1e9);
  std::printf(
      "# the memory's read rate now: %.1f GB/s, so reading them takes at least %.1f ms a step: "
      "(c) can reach at most %.1f%% of (a) on this machine (%.1f ms on top of (a) measured)\n",
      read_gbs, floor_s * 1e3, 100 * best[0] / (best[0] + floor_s), (best[2] - best[0]) * 1e3);
  // (c)'s work with its factors mostly in cache: rows alternate between two adapters, so every row
  // is still its own piece, but each module's factors come from memory for 2 adapters instead of
  // 32: what the side path costs beside its memory traffic (the kernel, its prefetch walk, and
  // the per-module host work of AddAdapterDeltas and of this loop's output tensors).
  std::vector<const AdapterWeights*> alternating;
  for (int64_t i = 0; i < kBatch; ++i) alternating.push_back(lora[i % 2].get());
  const double cached_s = DeltaOnly(*model, alternating).first;
  const double dora_s = DeltaOnly(*model, rows(dora)).first;
  const auto [lora16_s, lora16_gbs] = DeltaOnly(*model, rows(lora16));
  std::printf(
      "# the (c) deltas alone, without base GEMMs: %.1f ms per step (factors at %.1f GB/s); "
      "the same work with its factors mostly in cache (rows alternating between 2 adapters): "
      "%.1f ms; with one adapter for all rows: %.1f ms; the (d) deltas: %.1f ms; (c) in "
      "bfloat16: %.1f ms (%.0f MB at %.1f GB/s)\n",
      delta_s * 1e3, delta_gbs, cached_s * 1e3, same_s * 1e3, dora_s * 1e3, lora16_s * 1e3,
      FactorBytes(rows(lora16)) / 1e6, lora16_gbs);
  if (!show_switch) return;
  std::printf(
      "\n| (c) side path alone, by implementation | ms per step | factors GB/s "
      "|\n|---|---:|---:|\n");
  const std::pair<const char*, DeltaPath> paths[] = {
      {"fused CPU kernel (decode on the CPU)", DeltaPath::kAuto},
      {"gathered batched GEMMs (decode on GPUs)", DeltaPath::kGathered},
      {"two GEMMs per segment (prefill)", DeltaPath::kSegmentGemms}};
  for (const auto& [name, path] : paths) {
    const auto [path_s, path_gbs] = DeltaOnly(*model, rows(lora), path);
    std::printf("| %s | %.1f | %.1f |\n", name, path_s * 1e3, path_gbs);
  }
  const double merge = MergeSwitch(*model, *lora[0]);
  std::printf("\n| adapter switch | ms |\n|---|---:|\n");
  std::printf("| merge-based: merge rank-16 into %lld weights + unmerge | %.1f |\n",
              static_cast<long long>(layers * kNumProjections), merge * 1e3);
  std::printf(
      "| loramux: per-token segments, base untouched | 0.0 (no work: a pointer per segment) |\n");
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t layers = argc > 1 ? std::atoi(argv[1]) : 8;
  const int64_t steps = argc > 2 ? std::atoi(argv[2]) : 20;
  const int64_t context = argc > 3 ? std::atoi(argv[3]) : 64;
  const torch::ScalarType dtype = ParseScalarType(argc > 4 ? argv[4] : "float32").value();
  PrintHeader(absl::StrCat("loramux adapter_bench: batch-32 decode across adapters (",
                           c10::toString(dtype), ", CPU)")
                  .c_str());
  // The side path is memory-bound and the base compute-bound: the ratios shift with how much CPU
  // the machine gives, so its matmul speed is printed next to them.
  std::printf("# torch::mm 2048^3 on this machine now: %.0f GFLOP/s in float32, %.0f in bfloat16\n",
              MatmulGflops(torch::kCPU), MatmulGflops(torch::kCPU, 2048, torch::kBFloat16));
  RunModel(layers, 1024, steps, context, dtype, /*show_switch=*/true);
  RunModel(layers, 2048, steps, context, dtype, /*show_switch=*/false);
  return 0;
}
