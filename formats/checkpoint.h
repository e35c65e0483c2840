// A HuggingFace checkpoint's weight files: `model.safetensors`, or shards listed in
// `model.safetensors.index.json` ({"weight_map": {tensor: file}}).
// Immutable after Open; thread-safe reads. Views stay valid while the Checkpoint lives.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "formats/safetensors.h"

namespace loramux {

class Checkpoint {
 public:
  // NOT_FOUND when the directory holds neither layout; INVALID_ARGUMENT for a corrupt index or
  // shard (the message names the file and the tensor).
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& model_dir);

  // nullptr when the checkpoint has no such tensor.
  const TensorView* Find(const std::string& name) const;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*> tensors_;
};

}  // namespace loramux
