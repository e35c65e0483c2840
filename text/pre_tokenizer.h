// tokenizer.json "pre_tokenizer": splits normalized text into pieces the model encodes one by
// one (and may rewrite them: ByteLevel maps bytes to its printable alphabet, Metaspace turns
// spaces into "▁"). Supported: ByteLevel (add_prefix_space, use_regex with the GPT-2 pattern),
// Split (String or Regex pattern, all five behaviors, invert), Metaspace (replacement,
// prepend_scheme always/first/never, split), Digits (individual_digits), Sequence.
//
// Thread-safety: immutable after construction; PreTokenize may run concurrently.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "text/json_fields.h"

namespace loramux::text {

// A piece of normalized text that the model tokenizes on its own.
struct PreToken {
  std::string text;
  // How many leading bytes of `text` stem from the input's first character (HuggingFace's
  // "original offset 0", which Metaspace's prepend_scheme "first" asks for); 0 when none do.
  size_t input_start_bytes = 0;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces each piece by its sub-pieces, in order; empty pieces are dropped. Fails only if a
  // regex gives up (Regex::FindAll).
  virtual absl::Status PreTokenize(std::vector<PreToken>& pieces) const = 0;
};

// `json` is the "pre_tokenizer" value (not null). UNIMPLEMENTED names an unsupported type.
absl::StatusOr<std::unique_ptr<PreTokenizer>> PreTokenizerFromJson(JsonElement json);

// The printable character ByteLevel uses for each byte (GPT-2's bytes_to_unicode), as UTF-8.
const std::string& ByteLevelChar(unsigned char byte);
// The byte a ByteLevel character stands for, or -1 when `cp` is not in the alphabet.
int ByteLevelByte(char32_t cp);

}  // namespace loramux::text
