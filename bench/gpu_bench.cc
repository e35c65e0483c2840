// Issue 13's device benchmark (scripts/gpu_check.sh runs it on the lent H200; --dry-run on the
// CPU): a random Llama (default ~1.1B parameters, TinyLlama's shape) in bfloat16 on --device,
//   1. the device's limits, measured in the same run: a large device-to-device copy (bytes read +
//      written per second) and a large square matmul in the model's dtype;
//   2. decode tokens/s at each batch with 0, 1, 32, 128 distinct rank-16 adapters (LoRA and DoRA
//      on all 7 projections; rows spread evenly over the adapters, packed by adapter as the
//      scheduler does; mixed batches also on the gathered-GEMM path, beside the default one), with
//      each case's weight-and-factor bytes read per step over the step time against the copy rate,
//      and its FLOP rate against the matmul rate;
//   3. prefill tokens/s (base, and with 32 LoRA adapters over the rows);
//   4. adapter cold load: a PEFT safetensors file (bfloat16 factors) to device-resident weights
//      (AdapterWeights::Load: read, validate, copy; DoRA's norms on the device), median of 3.
// Tables are printed as markdown. Times are host clocks around whole steps with the device
// synchronised before and after (every step returns its logits to the host anyway).
//
//   ./build/bench/gpu_bench --device=cuda:0 [--dtype=bfloat16] [--layers=22] [--hidden=2048]
//     [--intermediate=5632] [--heads=32] [--kv_heads=4] [--batches=1,32,128]
//     [--adapters=0,1,32,128] [--rank=16] [--steps=20] [--context=128] [--prompt=512]
//     [--prefill_batch=8] [--matmul=8192] [--copy_mib=2048]
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "adapters/adapter_store.h"
#include "bench/bench_util.h"
#include "formats/safetensors.h"

using namespace loramux;
using namespace loramux::bench;

namespace {

struct Options {
  std::string device = "cpu";
  std::string dtype = "bfloat16";
  int64_t layers = 22, hidden = 2048, intermediate = 5632, heads = 32, kv_heads = 4;
  int64_t vocab = 32000;
  std::vector<int64_t> batches = {1, 32, 128};
  std::vector<int64_t> adapter_counts = {0, 1, 32, 128};
  int64_t rank = 16, steps = 20, context = 128, prompt = 512, prefill_batch = 8;
  int64_t matmul = 8192, copy_mib = 2048;
};

std::vector<int64_t> ParseList(const std::string& text) {
  std::vector<int64_t> out;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    int64_t v = 0;
    if (!absl::SimpleAtoi(part, &v) || v < 0) {
      std::fprintf(stderr, "gpu_bench: bad list element '%s' in '%s'\n", std::string(part).c_str(),
                   text.c_str());
      std::exit(2);
    }
    out.push_back(v);
  }
  return out;
}

Options ParseOptions(int argc, char** argv) {
  Options o;
  std::map<std::string, int64_t*> ints = {{"layers", &o.layers},
                                          {"hidden", &o.hidden},
                                          {"intermediate", &o.intermediate},
                                          {"heads", &o.heads},
                                          {"kv_heads", &o.kv_heads},
                                          {"vocab", &o.vocab},
                                          {"rank", &o.rank},
                                          {"steps", &o.steps},
                                          {"context", &o.context},
                                          {"prompt", &o.prompt},
                                          {"matmul", &o.matmul},
                                          {"copy_mib", &o.copy_mib},
                                          {"prefill_batch", &o.prefill_batch}};
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const size_t eq = arg.find('=');
    if (arg.rfind("--", 0) != 0 || eq == std::string::npos) {
      std::fprintf(stderr, "gpu_bench: arguments are --name=value (got '%s'); see the header\n",
                   arg.c_str());
      std::exit(2);
    }
    const std::string name = arg.substr(2, eq - 2), value = arg.substr(eq + 1);
    if (name == "device") {
      o.device = value;
    } else if (name == "dtype") {
      o.dtype = value;
    } else if (name == "batches") {
      o.batches = ParseList(value);
    } else if (name == "adapters") {
      o.adapter_counts = ParseList(value);
    } else if (auto it = ints.find(name); it != ints.end()) {
      if (!absl::SimpleAtoi(value, it->second) || *it->second < 1) {
        std::fprintf(stderr, "gpu_bench: --%s needs a positive integer, got '%s'\n", name.c_str(),
                     value.c_str());
        std::exit(2);
      }
    } else {
      std::fprintf(stderr, "gpu_bench: unknown flag --%s\n", name.c_str());
      std::exit(2);
    }
  }
  return o;
}

// Waits for the device's queued work (CUDA); the CPU runs synchronously.
void Sync(torch::Device device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

template <typename Fn>
double MedianSeconds(torch::Device device, int repeats, Fn&& fn) {
  std::vector<double> t;
  for (int i = 0; i < repeats; ++i) {
    Sync(device);
    const auto start = std::chrono::steady_clock::now();
    fn();
    Sync(device);
    t.push_back(Seconds(start));
  }
  std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
  return t[t.size() / 2];
}

// GB/s of a device-to-device copy of `mib` MiB, counting bytes read plus bytes written.
double CopyGBps(torch::Device device, int64_t mib) {
  torch::NoGradGuard guard;
  const int64_t n = mib * (int64_t{1} << 20) / 4;
  torch::Tensor src = torch::rand({n}, torch::TensorOptions().device(device));
  torch::Tensor dst = torch::empty_like(src);
  dst.copy_(src);
  const double s = MedianSeconds(device, 10, [&] { dst.copy_(src); });
  return 2.0 * n * 4 / s / 1e9;
}

// TFLOP/s of an n×n×n matmul in `dtype` on random data (zeros would run faster).
double MatmulTflops(torch::Device device, torch::ScalarType dtype, int64_t n) {
  torch::NoGradGuard guard;
  const auto options = torch::TensorOptions().device(device).dtype(dtype);
  const torch::Tensor a = torch::randn({n, n}, options), b = torch::randn({n, n}, options);
  torch::Tensor c = torch::mm(a, b);
  const double s = MedianSeconds(device, 10, [&] { torch::mm_out(c, a, b); });
  return 2.0 * n * n * n / s / 1e12;
}

double FactorBytes(const AdapterWeights& a) {
  double bytes = 0;
  for (int64_t i = 0; i < a.num_modules(); ++i) {
    if (const ModuleAdapter* m = a.module(i)) {
      bytes += m->a.nbytes() + m->b_t.nbytes() + (m->gain.defined() ? m->gain.nbytes() : 0);
    }
  }
  return bytes;
}

// One decode step for rows whose adapters are `rows` (null = base), packed by adapter.
ForwardBatch DecodeBatch(const std::vector<const AdapterWeights*>& rows, int64_t pos,
                         DeltaPath path) {
  ForwardBatch batch;
  batch.delta_path = path;
  for (int64_t k = 0; k < static_cast<int64_t>(rows.size()); ++k) {
    batch.chunks.push_back({k, pos, k, 1, false});
    batch.token_ids.push_back((k * 13 + pos) % 32000);
    if (rows[k] == nullptr) continue;
    if (!batch.adapters.empty() && batch.adapters.back().adapter == rows[k]) {
      batch.adapters.back().end = k + 1;
    } else {
      batch.adapters.push_back({rows[k], 1.0, k, k + 1});
    }
  }
  return batch;
}

// Row k of `batch` rows served by adapter k·n/batch of `pool` (n distinct), or base when n = 0.
std::vector<const AdapterWeights*> SpreadRows(
    const std::vector<std::shared_ptr<AdapterWeights>>& pool, int64_t n, int64_t batch) {
  std::vector<const AdapterWeights*> rows(batch, nullptr);
  if (n == 0) return rows;
  for (int64_t k = 0; k < batch; ++k) rows[k] = pool[k * n / batch].get();
  return rows;
}

struct DecodeResult {
  double step_s, tokens_per_s;
};

DecodeResult Decode(const LlamaModel& model, const std::vector<const AdapterWeights*>& rows,
                    int64_t context, int64_t steps, DeltaPath path = DeltaPath::kAuto) {
  const int64_t batch = static_cast<int64_t>(rows.size());
  KvCache cache(
      model.config(),
      batch * (context + steps + 16) * KvCache::BytesPerToken(model.config(), model.dtype()),
      model.device(), model.dtype());
  for (int64_t i = 0; i < batch; ++i) cache.Reserve(i, context + steps + 4);
  int64_t pos = context - 1;
  for (int i = 0; i < 2; ++i)
    model.Forward(DecodeBatch(rows, pos++, path), cache).value();  // warm-up
  Sync(model.device());
  const auto start = std::chrono::steady_clock::now();
  for (int64_t s = 0; s < steps; ++s) model.Forward(DecodeBatch(rows, pos++, path), cache).value();
  Sync(model.device());
  const double total = Seconds(start);
  return {total / steps, batch * steps / total};
}

double Prefill(const LlamaModel& model, const std::vector<const AdapterWeights*>& rows,
               int64_t prompt) {
  const int64_t batch = static_cast<int64_t>(rows.size());
  KvCache cache(model.config(),
                batch * (prompt + 16) * KvCache::BytesPerToken(model.config(), model.dtype()),
                model.device(), model.dtype());
  ForwardBatch b;
  for (int64_t i = 0; i < batch; ++i) {
    cache.Reserve(i, prompt + 1);
    b.chunks.push_back({i, 0, i * prompt, prompt, false});
    for (int64_t t = 0; t < prompt; ++t) b.token_ids.push_back((i * 31 + t * 7) % 32000);
    if (rows[i]) b.adapters.push_back({rows[i], 1.0, i * prompt, (i + 1) * prompt});
  }
  model.Forward(b, cache).value();  // warm-up; each run rewrites the same positions
  const double s = MedianSeconds(model.device(), 3, [&] { model.Forward(b, cache).value(); });
  return batch * prompt / s;
}

// Writes a PEFT adapter (bfloat16 factors, all 7 projections) for `model` into `dir`; returns
// its StoredAdapter.
StoredAdapter WritePeftAdapter(const LlamaModel& model, int64_t rank, bool dora,
                               const std::string& dir) {
  torch::NoGradGuard guard;
  torch::manual_seed(dora ? 7 : 5);
  std::vector<torch::Tensor> keep;
  std::vector<TensorView> views;
  auto add = [&](const std::string& name, torch::Tensor t) {
    keep.push_back(t.contiguous().cpu());
    TensorView v;
    v.name = name;
    v.dtype = keep.back().scalar_type() == torch::kBFloat16 ? DType::kBF16 : DType::kF32;
    v.shape = keep.back().sizes().vec();
    v.data = static_cast<const uint8_t*>(keep.back().data_ptr());
    v.nbytes = keep.back().nbytes();
    views.push_back(v);
  };
  for (int64_t l = 0; l < model.config().num_layers; ++l) {
    for (int64_t p = 0; p < kNumProjections; ++p) {
      const torch::Tensor& w = model.linear(l, static_cast<Projection>(p)).weight;
      const std::string base =
          "base_model.model." + ModulePath(l, static_cast<Projection>(p)) + ".";
      add(base + "lora_A.weight", (torch::randn({rank, w.size(1)}) * 0.02).to(torch::kBFloat16));
      add(base + "lora_B.weight", (torch::randn({w.size(0), rank}) * 0.02).to(torch::kBFloat16));
      if (dora) add(base + "lora_magnitude_vector", w.to(torch::kFloat32).norm(2, {1}).cpu());
    }
  }
  std::filesystem::create_directories(dir);
  StoredAdapter a;
  a.name = dora ? "cold-dora" : "cold-lora";
  a.version = "bench";
  a.format = AdapterFormat::kPeft;
  std::string targets;
  for (const char* n : kProjectionNames)
    absl::StrAppend(&targets, targets.empty() ? "" : ",", "\"", n, "\"");
  a.config_json = absl::StrCat("{\"peft_type\":\"LORA\",\"r\":", rank, ",\"lora_alpha\":", 2 * rank,
                               ",\"target_modules\":[", targets,
                               "],\"use_dora\":", dora ? "true" : "false", "}");
  a.weights_path = dir + "/adapter_model.safetensors";
  const std::string bytes = SerializeSafetensors(views);
  std::ofstream(a.weights_path, std::ios::binary).write(bytes.data(), bytes.size());
  a.size_bytes = bytes.size();
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = ParseOptions(argc, argv);
  const torch::Device device(o.device);
  if (device.is_cuda() && !torch::cuda::is_available()) {
    std::fprintf(stderr, "gpu_bench: --device=%s but this LibTorch sees no CUDA device\n",
                 o.device.c_str());
    return 2;
  }
  const torch::ScalarType dtype = o.dtype == "float32" ? torch::kFloat32 : torch::kBFloat16;
  if (o.dtype != "float32" && o.dtype != "bfloat16") {
    std::fprintf(stderr, "gpu_bench: --dtype is bfloat16 or float32, got '%s'\n", o.dtype.c_str());
    return 2;
  }
  PrintHeader("loramux gpu_bench (issue 13)");
  ModelConfig c = BenchConfig(o.layers, o.hidden);
  c.intermediate_size = o.intermediate;
  c.num_heads = o.heads;
  c.head_dim = o.hidden / o.heads;
  c.num_kv_heads = o.kv_heads;
  c.vocab_size = o.vocab;
  c.max_position_embeddings = std::max<int64_t>(2048, o.prompt + o.context + o.steps + 64);
  auto model = LlamaModel::Random(c, device, dtype, 1);
  const double params = static_cast<double>(ParameterCount(*model));
  const double weight_bytes = static_cast<double>(model->weight_bytes());
  std::printf(
      "# device %s, dtype %s; model: %lld layers, hidden %lld, intermediate %lld, %lld/%lld "
      "heads, %.0fM parameters (%.2f GB)\n",
      o.device.c_str(), o.dtype.c_str(), static_cast<long long>(c.num_layers),
      static_cast<long long>(c.hidden_size), static_cast<long long>(c.intermediate_size),
      static_cast<long long>(c.num_heads), static_cast<long long>(c.num_kv_heads), params / 1e6,
      weight_bytes / 1e9);

  // 1. The limits.
  const double copy = CopyGBps(device, o.copy_mib);
  const double mm = MatmulTflops(device, dtype, o.matmul);
  std::printf("\n## limits, measured now\n| what | value |\n|---|---:|\n");
  std::printf("| device-to-device copy, %lld MiB (read + write) | %.1f GB/s |\n",
              static_cast<long long>(o.copy_mib), copy);
  std::printf("| %lld^3 matmul, %s, random data | %.3g TFLOP/s |\n",
              static_cast<long long>(o.matmul), o.dtype.c_str(), mm);

  // 2. Decode. The embedding rows read are negligible; the head and every decoder layer are
  // read once per step, plus each distinct adapter's factors.
  const int64_t max_adapters = *std::max_element(o.adapter_counts.begin(), o.adapter_counts.end());
  std::vector<std::shared_ptr<AdapterWeights>> lora, dora;
  const auto make_start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < max_adapters; ++i) {
    lora.push_back(RandomAdapter(*model, o.rank, false, 100 + static_cast<int>(i)));
    dora.push_back(RandomAdapter(*model, o.rank, true, 1000 + static_cast<int>(i)));
  }
  Sync(device);
  std::printf(
      "# %lld LoRA + %lld DoRA rank-%lld adapters made on the device in %.1f s (%.1f MB each)\n",
      static_cast<long long>(max_adapters), static_cast<long long>(max_adapters),
      static_cast<long long>(o.rank), Seconds(make_start),
      lora.empty() ? 0.0 : FactorBytes(*lora[0]) / 1e6);
  const double embed_bytes =
      static_cast<double>(c.vocab_size * c.hidden_size) * c10::elementSize(dtype);
  const double step_weight_bytes = weight_bytes - embed_bytes;  // the head stays: one matvec
  const double flops_per_token = 2.0 * (params - static_cast<double>(c.vocab_size * c.hidden_size));
  std::printf("\n## decode (context %lld, %lld timed steps after 2 warm-up)\n",
              static_cast<long long>(o.context), static_cast<long long>(o.steps));
  std::printf(
      "| batch | adapters | kind | step ms | tokens/s | vs base | bytes/step GB | %% of copy | "
      "TFLOP/s | %% of matmul |\n|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|\n");
  for (int64_t batch : o.batches) {
    double base_tps = 0;
    for (int64_t n : o.adapter_counts) {
      if (n > batch) continue;  // n distinct adapters need n rows
      // Kinds: LoRA, DoRA on the default path (kAuto: on CUDA the fused kernels where built),
      // then for mixed batches both again on LibTorch's gathered batched GEMMs, to compare.
      static const char* kKinds[] = {"LoRA", "DoRA", "LoRA, gathered GEMMs",
                                     "DoRA, gathered GEMMs"};
      for (int kind = 0; kind < (n == 0 ? 1 : n == 1 ? 2 : 4); ++kind) {
        const auto& pool = kind % 2 == 0 ? lora : dora;
        const auto rows = SpreadRows(pool, n, batch);
        const DecodeResult r = Decode(*model, rows, o.context, o.steps,
                                      kind >= 2 ? DeltaPath::kGathered : DeltaPath::kAuto);
        if (n == 0) base_tps = r.tokens_per_s;
        double bytes = step_weight_bytes;
        for (int64_t i = 0; i < n; ++i) bytes += FactorBytes(*pool[i]);
        // Bytes read per step over the step time, against the copy's read + write rate.
        const double gbps = bytes / r.step_s / 1e9;
        const double tflops = flops_per_token * batch / r.step_s / 1e12;
        std::printf("| %lld | %lld | %s | %.3f | %.1f | %.1f%% | %.3f | %.1f%% | %.3g | %.1f%% |\n",
                    static_cast<long long>(batch), static_cast<long long>(n),
                    n == 0 ? "base" : kKinds[kind], r.step_s * 1e3, r.tokens_per_s,
                    base_tps > 0 ? 100 * r.tokens_per_s / base_tps : 0.0, bytes / 1e9,
                    100 * gbps / copy, tflops, 100 * tflops / mm);
        std::fflush(stdout);
      }
    }
  }
  std::printf(
      "# bytes/step: decoder layers + head + the distinct adapters' factors (and DoRA "
      "gains), each read once; TFLOP/s: 2 x non-embedding parameters per token (adapter "
      "and attention FLOPs excluded)\n");

  // 3. Prefill.
  std::printf(
      "\n## prefill (%lld sequences x %lld tokens, median of 3)\n| adapters | tokens/s | "
      "TFLOP/s | %% of matmul |\n|---|---:|---:|---:|\n",
      static_cast<long long>(o.prefill_batch), static_cast<long long>(o.prompt));
  for (int64_t n : {int64_t{0}, std::min<int64_t>(max_adapters, o.prefill_batch)}) {
    const double tps = Prefill(*model, SpreadRows(lora, n, o.prefill_batch), o.prompt);
    const double tflops =
        tps * (flops_per_token - 2.0 * c.vocab_size * c.hidden_size * (1.0 - 1.0 / o.prompt)) /
        1e12;
    std::printf("| %s | %.0f | %.3g | %.1f%% |\n",
                n == 0 ? "base" : absl::StrCat(n, " LoRA").c_str(), tps, tflops, 100 * tflops / mm);
    if (max_adapters == 0) break;
  }

  // 4. Cold load from a PEFT file.
  const std::string dir = (std::filesystem::temp_directory_path() / "loramux_gpu_bench").string();
  std::printf(
      "\n## adapter cold load (PEFT safetensors, bf16 factors, rank %lld, all 7 "
      "projections; median of 3)\n| kind | file MB | ms |\n|---|---:|---:|\n",
      static_cast<long long>(o.rank));
  for (bool is_dora : {false, true}) {
    const StoredAdapter stored =
        WritePeftAdapter(*model, o.rank, is_dora, dir + (is_dora ? "/dora" : "/lora"));
    AdapterLimits limits;
    limits.max_rank = std::max<int64_t>(limits.max_rank, o.rank);
    const double s = MedianSeconds(device, 3, [&] {
      auto loaded = AdapterWeights::Load(stored, *model, limits);
      if (!loaded.ok()) {
        std::fprintf(stderr, "gpu_bench: cold load failed: %s\n",
                     std::string(loaded.status().message()).c_str());
        std::exit(1);
      }
    });
    std::printf("| %s | %.1f | %.1f |\n", is_dora ? "DoRA" : "LoRA", stored.size_bytes / 1e6,
                s * 1e3);
  }
  std::filesystem::remove_all(dir);
  return 0;
}
