// Base-model throughput: prefill and decode tokens/s at batch 1, 8 and 32 on a random Llama of
// ~200M parameters, next to this machine's own matmul rate measured in the same run.
//
//   ./build/bench/model_bench [layers=12] [prompt=64] [decode_steps=8] [dtype=float32]
//
// `layers=8` is issue 17's peer model (hidden 1024, intermediate 2816, 16/4 heads, vocab 32000).
#include <cstdlib>

#include "bench/bench_util.h"

using namespace loramux;
using namespace loramux::bench;

namespace {

struct Result {
  double prefill_tps, decode_tps;
};

Result Measure(const LlamaModel& model, int64_t batch, int64_t prompt, int64_t steps) {
  KvCache cache(
      model.config(),
      batch * (prompt + steps + 16) * KvCache::BytesPerToken(model.config(), model.dtype()),
      model.device(), model.dtype());
  ForwardBatch prefill;
  for (int64_t i = 0; i < batch; ++i) {
    cache.Reserve(i, prompt + steps + 1);
    SequenceChunk c;
    c.cache_id = i;
    c.offset = i * prompt;
    c.length = prompt;
    prefill.chunks.push_back(c);
    for (int64_t t = 0; t < prompt; ++t) prefill.token_ids.push_back((i * 31 + t * 7) % 32000);
  }
  auto start = std::chrono::steady_clock::now();
  model.Forward(prefill, cache).value();
  const double prefill_s = Seconds(start);
  start = std::chrono::steady_clock::now();
  for (int64_t s = 0; s < steps; ++s) {
    ForwardBatch decode;
    for (int64_t i = 0; i < batch; ++i) {
      decode.chunks.push_back({i, prompt + s, i, 1, false});
      decode.token_ids.push_back((i + s) % 32000);
    }
    model.Forward(decode, cache).value();
  }
  const double decode_s = Seconds(start);
  return {batch * prompt / prefill_s, batch * steps / decode_s};
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t layers = argc > 1 ? std::atoi(argv[1]) : 12;
  const int64_t prompt = argc > 2 ? std::atoi(argv[2]) : 64;
  const int64_t steps = argc > 3 ? std::atoi(argv[3]) : 8;
  const std::string dtype_name = argc > 4 ? argv[4] : "float32";
  const torch::ScalarType dtype = ParseScalarType(dtype_name).value();
  PrintHeader(("loramux model_bench: base model throughput (" + dtype_name + ", CPU)").c_str());
  ModelConfig config = BenchConfig(layers);
  config.num_kv_heads = config.num_heads / 4;
  auto model = LlamaModel::Random(config, torch::kCPU, dtype, 1);
  model->PackWeights();  // as the server serves it
  const double params = static_cast<double>(ParameterCount(*model));
  const double gflops = MatmulGflops(torch::kCPU, 2048, dtype);
  std::printf(
      "# model: %lld layers, hidden 1024, %.0fM parameters; prompt %lld tokens, %lld decode "
      "steps\n",
      static_cast<long long>(layers), params / 1e6, static_cast<long long>(prompt),
      static_cast<long long>(steps));
  std::printf("# machine matmul rate (2048^3 torch::mm, same dtype): %.1f GFLOP/s\n", gflops);
  std::printf(
      "| batch | prefill tok/s | prefill GFLOP/s | %% of mm | decode tok/s | decode GFLOP/s | %% "
      "of mm |\n");
  std::printf(
      "|------:|--------------:|----------------:|--------:|-------------:|---------------:|-------"
      "-:|\n");
  // FLOPs per token: 2 x the decoder layers' parameters, plus the output head once per logit row
  // (the last prompt token in prefill, every token in decode). The embedding is a lookup.
  const ModelConfig& c = model->config();
  const double head = 2.0 * c.vocab_size * c.hidden_size;
  const double layer_flops = 2.0 * (params - 2.0 * c.vocab_size * c.hidden_size);
  for (int64_t batch : {1, 8, 32}) {
    Measure(*model, batch, 8, 1);  // warm-up
    const Result r = Measure(*model, batch, prompt, steps);
    const double pf = r.prefill_tps * (layer_flops + head / prompt) / 1e9;
    const double df = r.decode_tps * (layer_flops + head) / 1e9;
    std::printf("| %5lld | %13.1f | %15.1f | %6.1f%% | %12.1f | %14.1f | %6.1f%% |\n",
                static_cast<long long>(batch), r.prefill_tps, pf, 100 * pf / gflops, r.decode_tps,
                df, 100 * df / gflops);
  }
  std::printf(
      "# GFLOP/s: 2 x decoder-layer parameters per token + the head per logit row "
      "(attention score FLOPs excluded).\n");
  return 0;
}
