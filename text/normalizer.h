// tokenizer.json "normalizer": rewrites the text of each piece between added tokens before
// pre-tokenization. Supported: NFC, NFD, NFKC, NFKD (utf8proc), Lowercase, Strip, StripAccents,
// Prepend, Replace (String or Regex pattern), Sequence. Anything else fails to load.
//
// Thread-safety: immutable after construction; Normalize may run concurrently.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "text/json_fields.h"

namespace loramux::text {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // `text` is valid UTF-8 on entry and on return. Fails only if a Replace regex gives up.
  virtual absl::Status Normalize(std::string& text) const = 0;
};

// `json` is the "normalizer" value (not null). UNIMPLEMENTED names an unsupported type.
absl::StatusOr<std::unique_ptr<Normalizer>> NormalizerFromJson(JsonElement json);

}  // namespace loramux::text
