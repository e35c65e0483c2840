// Imports an adapter directory on the server's own file system into the store, as an upload of
// the same files would (the HTTP front's /v1/load_lora_adapter, vLLM's lora_path).
//
// Thread-safety: as AdapterStore (any thread).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "adapters/adapter_store.h"

namespace loramux {

// Reads DIR/adapter_config.json (PEFT) and streams DIR/adapter_model.safetensors into a new
// version of `name`: hashed in a first pass, appended in 1 MiB chunks in a second, checked by
// `validator` before it is published. NOT_FOUND when a file is missing, INVALID_ARGUMENT for a bad
// name or config, FAILED_PRECONDITION when the weights changed between the passes, and whatever
// the store or validator says (RESOURCE_EXHAUSTED past the size limit, ...).
absl::StatusOr<StoredAdapter> ImportPeftDirectory(AdapterStore& store, const std::string& name,
                                                  const std::string& dir,
                                                  const AdapterValidator& validator);

}  // namespace loramux
