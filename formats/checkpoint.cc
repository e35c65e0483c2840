#include "formats/checkpoint.h"

#include <sys/stat.h>

#include <set>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/durable_file.h"
#include "common/status_macros.h"

namespace loramux {
namespace {

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// The shard file names listed by an index, in first-seen order.
absl::StatusOr<std::vector<std::string>> ReadShardNames(const std::string& index_path) {
  ASSIGN_OR_RETURN(const std::string body, ReadSmallFile(index_path, 64 << 20));
  auto j = nlohmann::json::parse(body.begin(), body.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("weight_map") ||
      !j["weight_map"].is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(index_path, ": not a JSON object with a \"weight_map\" object"));
  }
  std::vector<std::string> shards;
  std::set<std::string> seen;
  for (const auto& [tensor, file] : j["weight_map"].items()) {
    if (!file.is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path, ": weight_map entry \"", tensor, "\" is not a file name"));
    }
    const std::string name = file.get<std::string>();
    if (name.empty() || name.find('/') != std::string::npos || name[0] == '.') {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path, ": shard name \"", name, "\" must be a plain file name"));
    }
    if (seen.insert(name).second) shards.push_back(name);
  }
  return shards;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& model_dir) {
  auto checkpoint = std::unique_ptr<Checkpoint>(new Checkpoint());
  checkpoint->dir_ = model_dir;
  std::vector<std::string> files;
  const std::string single = model_dir + "/model.safetensors";
  const std::string index = model_dir + "/model.safetensors.index.json";
  if (FileExists(single)) {
    files.push_back("model.safetensors");
  } else if (FileExists(index)) {
    ASSIGN_OR_RETURN(files, ReadShardNames(index));
  } else {
    return absl::NotFoundError(
        absl::StrCat(model_dir,
                     ": no model.safetensors or model.safetensors.index.json (only safetensors "
                     "checkpoints are supported)"));
  }
  for (const std::string& file : files) {
    ASSIGN_OR_RETURN(auto shard, SafetensorsFile::Open(model_dir + "/" + file));
    for (const TensorView& view : shard->tensors()) {
      if (!checkpoint->tensors_.emplace(view.name, &view).second) {
        return absl::InvalidArgumentError(
            absl::StrCat(model_dir, ": tensor \"", view.name, "\" appears in more than one shard"));
      }
    }
    checkpoint->files_.push_back(std::move(shard));
  }
  return checkpoint;
}

const TensorView* Checkpoint::Find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : it->second;
}

}  // namespace loramux
