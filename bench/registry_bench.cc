// Adapter store + registry: (1) time from request to resident-and-ready for PEFT adapters of about
// 1, 10 and 100 MB, next to merely reading the same bytes from disk; (2) the per-request resolve +
// acquire + release latency with few adapters vs 1,000 resident and 10,000 stored.
//
//   ./build/bench/registry_bench [stored=10000]
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "absl/synchronization/notification.h"
#include "adapters/adapter_registry.h"
#include "adapters/adapter_store.h"
#include "bench/bench_util.h"
#include "common/sha256.h"
#include "formats/safetensors.h"

using namespace loramux;
using namespace loramux::bench;

namespace {

// A PEFT adapter of `rank` on the first `projections` of q,v,k,o,gate,up,down in each of `layers`
// layers; returns (config, weights).
std::pair<std::string, std::string> MakePeft(const LlamaModel& model, int64_t rank, int64_t layers,
                                             int64_t projections, int seed) {
  static constexpr Projection kOrder[] = {kQProj,    kVProj,  kKProj,   kOProj,
                                          kGateProj, kUpProj, kDownProj};
  torch::manual_seed(seed);
  std::vector<torch::Tensor> keep;
  std::vector<TensorView> views;
  auto add = [&](const std::string& name, torch::Tensor t) {
    keep.push_back(t.contiguous());
    TensorView v;
    v.name = name;
    v.shape = keep.back().sizes().vec();
    v.data = static_cast<const uint8_t*>(keep.back().data_ptr());
    v.nbytes = keep.back().numel() * 4;
    views.push_back(v);
  };
  for (int64_t l = 0; l < layers; ++l) {
    for (int64_t i = 0; i < projections; ++i) {
      const Projection p = kOrder[i];
      const torch::Tensor& w = model.linear(l, p).weight;
      const std::string path = "base_model.model." + ModulePath(l, p);
      add(path + ".lora_A.weight", torch::randn({rank, w.size(1)}) * 0.01);
      add(path + ".lora_B.weight", torch::randn({w.size(0), rank}) * 0.01);
    }
  }
  std::string layer_list, targets;
  for (int64_t l = 0; l < layers; ++l) layer_list += (l ? "," : "") + std::to_string(l);
  for (int64_t i = 0; i < projections; ++i) {
    targets += std::string(i ? ", " : "") + "\"" + kProjectionNames[kOrder[i]] + "\"";
  }
  const std::string config = "{\"peft_type\": \"LORA\", \"r\": " + std::to_string(rank) +
                             ", \"lora_alpha\": 16, \"target_modules\": [" + targets +
                             "], "
                             "\"layers_to_transform\": [" +
                             layer_list + "]}";
  return {config, SerializeSafetensors(views)};
}

StoredAdapter Put(AdapterStore& store, const std::string& name,
                  const std::pair<std::string, std::string>& adapter) {
  AdapterManifest m;
  m.name = name;
  m.config_json = adapter.first;
  m.size_bytes = adapter.second.size();
  m.sha256 = Sha256Hex(adapter.second);
  return store.Put(m, adapter.second).value();
}

// Drops the file's pages from the page cache, so the next read comes from the disk.
void EvictFromPageCache(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

double ReadFileSeconds(const std::string& path) {
  const auto start = std::chrono::steady_clock::now();
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  std::string bytes(static_cast<size_t>(in.tellg()), '\0');
  in.seekg(0);
  in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return Seconds(start);
}

double AcquireSeconds(AdapterRegistry& registry, const StoredAdapter& stored) {
  const auto start = std::chrono::steady_clock::now();
  absl::Notification ready;
  auto lease = registry.Acquire(stored, [&] { ready.Notify(); });
  if (!lease.weights) {
    ready.WaitForNotification();
    lease = registry.Acquire(stored, nullptr);
    registry.Release({stored.name, stored.version});
  }
  const double s = Seconds(start);
  registry.Release({stored.name, stored.version});
  return s;
}

// Mean microseconds of resolve("name") + acquire + release of resident adapters, random order.
double HotPathMicros(AdapterRegistry& registry, int64_t resident, int iterations) {
  std::mt19937 rng(7);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iterations; ++i) {
    const StoredAdapter stored =
        registry.Resolve("tiny-" + std::to_string(rng() % resident)).value();
    auto lease = registry.Acquire(stored, nullptr);
    if (!lease.weights) std::abort();
    registry.Release({stored.name, stored.version});
  }
  return Seconds(start) / iterations * 1e6;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t stored_count = argc > 1 ? std::atoi(argv[1]) : 10000;
  PrintHeader("loramux registry_bench: adapter residency and resolve latency (float32, CPU)");
  auto model = LlamaModel::Random(BenchConfig(8), torch::kCPU, torch::kFloat32, 1);
  const std::string root = std::filesystem::temp_directory_path() /
                           ("loramux_registry_bench_" + std::to_string(::getpid()));
  std::filesystem::remove_all(root);
  auto store = AdapterStore::Open(root).value();
  AdapterRegistryOptions options;
  options.max_host_bytes = 4ll << 30;
  options.max_device_bytes = 4ll << 30;
  AdapterRegistry registry(*store, *model, options);
  options.verify_on_load = true;
  AdapterRegistry verifying(*store, *model, options);

  std::printf(
      "\n| adapter | file MB | cache | read file ms | request -> resident ms | ratio | with "
      "verify_on_load ms | ratio |\n|---|---:|---|---:|---:|---:|---:|---:|\n");
  struct Size {
    const char* label;
    int64_t rank, layers, projections;
  };
  for (const Size& size :
       {Size{"~1 MB, q,v (PEFT default)", 8, 8, 2}, Size{"~1 MB, all 7", 2, 7, 7},
        Size{"~10 MB, all 7", 16, 8, 7}, Size{"~100 MB, all 7", 168, 8, 7}}) {
    const StoredAdapter stored =
        Put(*store, "size-" + std::to_string(size.rank) + "-" + std::to_string(size.projections),
            MakePeft(*model, size.rank, size.layers, size.projections, 1));
    // Warm: the file in the page cache for both; cold: evicted before every read and every load
    // (neither registry may map it then, or the kernel keeps its pages).
    for (const bool cold : {false, true}) {
      auto prepare = [&] {
        registry.Unload(stored.name).value();
        verifying.Unload(stored.name).value();
        if (cold)
          EvictFromPageCache(stored.weights_path);
        else
          ReadFileSeconds(stored.weights_path);
      };
      double read = 1e9, ready = 1e9, verified = 1e9;
      for (int i = 0; i < 5; ++i) {
        prepare();
        read = std::min(read, ReadFileSeconds(stored.weights_path));
        prepare();
        ready = std::min(ready, AcquireSeconds(registry, stored));
        prepare();
        verified = std::min(verified, AcquireSeconds(verifying, stored));
      }
      std::printf("| %s, rank %lld | %.1f | %s | %.2f | %.2f | %.2fx | %.2f | %.2fx |\n",
                  size.label, static_cast<long long>(size.rank), stored.size_bytes / 1e6,
                  cold ? "cold" : "warm", read * 1e3, ready * 1e3, ready / read, verified * 1e3,
                  verified / read);
    }
    registry.Unload(stored.name).value();
    verifying.Unload(stored.name).value();
  }

  // Tiny adapters (rank 1 on one projection of layer 0) for the scale test.
  const auto tiny = MakePeft(*model, 1, 1, 1, 2);
  auto stored_start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < stored_count; ++i) {
    auto variant = tiny;
    // Distinct digests, same shape: flip low mantissa bits of the last float (stays finite).
    variant.second[variant.second.size() - 4] ^= static_cast<char>(i & 0xff);
    variant.second[variant.second.size() - 3] ^= static_cast<char>((i >> 8) & 0xff);
    Put(*store, "tiny-" + std::to_string(i), variant);
  }
  const double put_s = Seconds(stored_start);
  std::printf("\n# stored %lld tiny adapters in %.1f s (%.2f ms per durable upload)\n",
              static_cast<long long>(stored_count), put_s, put_s / stored_count * 1e3);
  std::printf("\n| resident | stored | resolve+acquire+release us |\n|---:|---:|---:|\n");
  for (int64_t resident : {10, 1000}) {
    resident = std::min(resident, stored_count);
    for (int64_t i = 0; i < resident; ++i) {
      AcquireSeconds(registry, registry.Resolve("tiny-" + std::to_string(i)).value());
    }
    HotPathMicros(registry, resident, 1000);  // warm
    std::printf("| %lld | %lld | %.2f |\n", static_cast<long long>(resident),
                static_cast<long long>(stored_count), HotPathMicros(registry, resident, 20000));
  }
  const RegistryStats stats = registry.stats();
  std::printf("# registry: %lld device-resident, %.1f MB device, %lld loads, %lld evictions\n",
              static_cast<long long>(stats.device_count), stats.device_bytes / 1e6,
              static_cast<long long>(stats.loads), static_cast<long long>(stats.evictions));
  std::filesystem::remove_all(root);
  return 0;
}
