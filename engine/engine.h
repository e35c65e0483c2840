// Everything behind the API, wired together: the base model, the adapter store and registry, and
// the scheduler that owns the model. Torch-free header, so gRPC code can hold an Engine.
//
// Thread-safety: the accessors return thread-safe components; Engine itself is immutable.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "adapters/adapter_registry.h"
#include "adapters/adapter_store.h"
#include "engine/scheduler.h"
#include "engine/text_codec.h"

namespace loramux {

struct EngineOptions {
  std::string model_dir;
  std::string device = "cpu";     // "cpu", "cuda", "cuda:N"
  std::string dtype = "float32";  // "float32", "bfloat16", "float16", or "auto" (ChooseAutoDtype)
  bool pack_weights = true;       // LlamaModel::PackWeights on the CPU
  std::string adapter_store;      // store root directory
  uint64_t max_upload_bytes = 1ull << 30;
  int threads = 0;  // LibTorch intra-op threads; 0 = OMP_NUM_THREADS or all CPUs
  AdapterRegistryOptions registry;
  SchedulerOptions scheduler;
};

class Engine {
 public:
  // Loads the model, opens the store, starts the loader and scheduler threads. Errors name the
  // flag or file at fault.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const EngineOptions& options);
  ~Engine();

  Scheduler& scheduler() { return *scheduler_; }
  AdapterRegistry& registry() { return *registry_; }
  AdapterStore& store() { return *store_; }
  // The model's tokenizer and chat template (text calls fail without tokenizer.json).
  const TextCodec& text() const { return *text_; }
  // One line for logs: architecture, sizes, device, dtype, BLAS library.
  const std::string& description() const { return description_; }

 private:
  Engine() = default;
  std::unique_ptr<LlamaModel> model_;
  std::unique_ptr<AdapterStore> store_;
  std::unique_ptr<AdapterRegistry> registry_;
  std::unique_ptr<TextCodec> text_;
  std::unique_ptr<Scheduler> scheduler_;
  std::string description_;
};

// The BLAS shared library LibTorch multiplies through (resolved path of libblas.so.3), for logs
// and benchmark headers.
std::string BlasLibrary();

}  // namespace loramux
