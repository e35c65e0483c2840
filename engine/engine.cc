#include "engine/engine.h"

#include <dlfcn.h>
#include <link.h>

#include <climits>
#include <cstdlib>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "model/llama_model.h"
#include "tensor/compute_threads.h"
#include "tensor/tensor_util.h"

namespace loramux {

std::string BlasLibrary() {
  std::string found;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* out) {
        const std::string name = info->dlpi_name ? info->dlpi_name : "";
        if (name.find("libblas.so") != std::string::npos ||
            name.find("openblas") != std::string::npos) {
          char resolved[PATH_MAX];
          *static_cast<std::string*>(out) = realpath(name.c_str(), resolved) ? resolved : name;
          return 1;
        }
        return 0;
      },
      &found);
  return found.empty() ? "unknown (no libblas.so loaded)" : found;
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const EngineOptions& options) {
  ASSIGN_OR_RETURN(torch::Device device, ParseDevice(options.device));
  ConfigureThreads(options.threads);  // before any measurement
  torch::ScalarType dtype = torch::kFloat32;
  if (options.dtype == "auto") {
    const AutoDtype choice = ChooseAutoDtype(device);
    LogInfo("%s", choice.reason);
    dtype = choice.dtype;
  } else {
    ASSIGN_OR_RETURN(dtype, ParseScalarType(options.dtype));
  }
  RETURN_IF_ERROR(CheckMatmulSupport(device, dtype));
  auto engine = std::unique_ptr<Engine>(new Engine());
  ASSIGN_OR_RETURN(engine->model_, LlamaModel::Load(options.model_dir, device, dtype));
  int64_t packed = 0;
  if (options.pack_weights) {
    RETURN_IF_ERROR(
        CatchTorch("packing the weights", [&] { packed = engine->model_->PackWeights(); }));
  }
  AdapterStoreOptions store_options;
  store_options.max_adapter_bytes = options.max_upload_bytes;
  ASSIGN_OR_RETURN(engine->store_, AdapterStore::Open(options.adapter_store, store_options));
  engine->registry_ =
      std::make_unique<AdapterRegistry>(*engine->store_, *engine->model_, options.registry);
  ASSIGN_OR_RETURN(engine->text_, TextCodec::Load(options.model_dir));
  engine->scheduler_ = std::make_unique<Scheduler>(*engine->model_, *engine->registry_,
                                                   options.scheduler, engine->text_->tokenizer());
  // The scheduler thread runs the model from now on: end this thread's OpenMP team, so that the
  // process holds one (tensor/compute_threads.h).
  ReleaseThreadTeam();
  const ModelConfig& c = engine->model_->config();
  engine->description_ = absl::StrFormat(
      "%s from %s: %d layers, hidden %d, heads %d/%d, vocab %d, %.1f MB of weights on %s as %s "
      "(%d linear weights packed); BLAS: %s; threads: %d",
      c.architecture, options.model_dir, c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads,
      c.vocab_size, engine->model_->weight_bytes() / 1e6, device.str(),
      dtype == torch::kBFloat16  ? "bfloat16"
      : dtype == torch::kFloat16 ? "float16"
                                 : "float32",
      packed, BlasLibrary(), at::get_num_threads());
  return engine;
}

Engine::~Engine() {
  if (scheduler_) scheduler_->Stop();
  scheduler_.reset();
  registry_.reset();
}

}  // namespace loramux
