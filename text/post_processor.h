// tokenizer.json "post_processor": the special tokens added around one sequence when
// add_special_tokens is true. Supported: TemplateProcessing (its "single" template),
// RobertaProcessing and BertProcessing (cls + ids + sep), ByteLevel (ids unchanged), Sequence.
//
// Thread-safety: immutable after construction.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "text/json_fields.h"

namespace loramux::text {

class PostProcessor {
 public:
  // The ids of one sequence become: prefix + ids + suffix.
  void Apply(std::vector<int32_t>& ids) const;

  // `json` is the "post_processor" value (not null).
  static absl::StatusOr<PostProcessor> FromJson(JsonElement json);

 private:
  std::vector<int32_t> prefix_;
  std::vector<int32_t> suffix_;
};

}  // namespace loramux::text
