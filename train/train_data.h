// A fine-tuning dataset: JSONL, one example per line, as token ids with the loss on the
// completion only. Each line is one of
//   {"prompt": "...", "completion": "..."}       prompt tokenized with the post-processor's
//                                               specials (BOS), completion without, then EOS
//   {"messages": [{"role", "content"}, ...]}     rendered with the model's chat template; the loss
//                                               is on the last message, which must be the
//                                               assistant's (the render of the conversation
//                                               before it with the generation prompt is its prefix)
//   {"prompt_token_ids": [...], "completion_token_ids": [...]}   used exactly as given (models
//                                               without a tokenizer); no EOS is added
// Blank lines are skipped.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/text_codec.h"
#include "formats/model_config.h"

namespace loramux {

struct TrainExample {
  std::vector<int64_t> tokens;  // prompt then completion
  int64_t prompt_length = 0;    // tokens[prompt_length..] are learned (at least one)
};

// Reads `path`. `codec` may lack a tokenizer (then only token-id lines are accepted). Examples
// longer than `max_tokens` lose completion tokens from the end. INVALID_ARGUMENT naming the line
// (1-based) for malformed JSON, a line of none of the three shapes, an empty completion, a token
// id outside [0, vocab), or a prompt that leaves no room for the completion; NOT_FOUND when the
// file cannot be read; INVALID_ARGUMENT for a file without examples.
absl::StatusOr<std::vector<TrainExample>> ReadTrainData(const std::string& path,
                                                        const ModelConfig& config,
                                                        const TextCodec& codec, int64_t max_tokens);

}  // namespace loramux
