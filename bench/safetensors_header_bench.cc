// What reading a .safetensors header costs: SafetensorsFile::FromBytes (the JSON header parsed,
// every tensor entry validated, the tensor table built) on the real adapters under
// tests/data/adapters and on synthetic headers the size of a large model's, next to
// nlohmann::json::parse of the same header text alone (the DOM reading it replaced).
// Usage: safetensors_header_bench
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "formats/safetensors.h"

namespace {

using loramux::DType;
using loramux::SafetensorsFile;
using loramux::TensorView;

double Micros(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
      .count();
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

uint64_t HeaderLength(const std::string& bytes) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(bytes[i]);
  return v;
}

// Median and minimum of `times`.
struct Stats {
  double median = 0;
  double min = 0;
};
Stats Summarize(std::vector<double> times) {
  std::sort(times.begin(), times.end());
  return {times[times.size() / 2], times.front()};
}

// Times `run` until ~0.3 s have passed (at least 20, at most 2000 runs).
template <typename Run>
Stats Time(Run&& run) {
  std::vector<double> times;
  double total = 0;
  while (times.size() < 2000 && (times.size() < 20 || total < 3e5)) {
    times.push_back(run());
    total += times.back();
  }
  return Summarize(std::move(times));
}

void Bench(const std::string& name, const std::string& bytes) {
  const std::string header = bytes.substr(8, HeaderLength(bytes));
  size_t tensors = 0;
  const Stats load = Time([&] {
    std::string copy = bytes;  // FromBytes takes ownership; the copy is not timed
    const auto start = std::chrono::steady_clock::now();
    auto file = SafetensorsFile::FromBytes(std::move(copy), name);
    const double us = Micros(start);
    if (!file.ok()) {
      std::fprintf(stderr, "%s: %s\n", name.c_str(), file.status().ToString().c_str());
      std::exit(1);
    }
    tensors = (*file)->tensors().size();
    return us;
  });
  const Stats dom = Time([&] {
    const auto start = std::chrono::steady_clock::now();
    const nlohmann::json json = nlohmann::json::parse(header);
    const double us = Micros(start);
    if (json.size() == 0) std::exit(1);
    return us;
  });
  std::printf("%-30s %8zu %9zu %12.1f %10.1f %14.1f\n", name.c_str(), tensors, header.size(),
              load.median, load.min, dom.median);
}

// `count` tensors named like a large Llama checkpoint's, 2-D BF16 of 16 bytes each (the data is
// small so that copies and frees stay cheap; the header text is what is measured).
std::string SyntheticModel(int count) {
  static const char* const kProjections[] = {
      "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
      "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
      "mlp.down_proj",    "input_layernorm",  "post_attention_layernorm"};
  std::vector<TensorView> views;
  for (int i = 0; i < count; ++i) {
    TensorView v;
    v.name = absl::StrCat("model.layers.", i / 9, ".", kProjections[i % 9], ".weight");
    v.dtype = DType::kBF16;
    v.shape = {2, 4};
    v.nbytes = 16;
    views.push_back(std::move(v));
  }
  return loramux::SerializeSafetensors(views, {{"format", "pt"}});
}

}  // namespace

int main() {
  const std::string root = LORAMUX_SOURCE_DIR "/tests/data/adapters/";
  std::printf(
      "SafetensorsFile::FromBytes: header parse + validation (us; median and min of up to "
      "2000 runs)\n");
  std::printf("%-30s %8s %9s %12s %10s %14s\n", "file", "tensors", "hdr bytes", "load median",
              "load min", "nlohmann DOM");
  for (const char* name : {"lora-qv-r8", "lora-pattern", "lora-all-r4-rslora", "dora-mlp-r4",
                           "dora-qkvo-r8", "qwen-lora-r8", "qwen-dora-r4"}) {
    Bench(name, ReadFile(root + name + "/adapter_model.safetensors"));
  }
  Bench("synthetic 500 tensors", SyntheticModel(500));
  Bench("synthetic 2000 tensors", SyntheticModel(2000));
  Bench("synthetic 10000 tensors", SyntheticModel(10000));
  return 0;
}
