// tokenizer.json "decoder": turns the token strings of a sequence of ids back into text.
// Supported: ByteLevel, ByteFallback, Metaspace, Fuse, Strip, Replace (String or Regex), BPEDecoder
// (suffix), Sequence. Each step maps a list of strings to a list of strings, as HuggingFace's
// decode_chain does; the final text is their concatenation. Without a decoder, tokens are joined
// with spaces (HuggingFace's behaviour).
//
// Thread-safety: immutable after construction; Decode may run concurrently.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "text/json_fields.h"

namespace loramux::text {

class TokenDecoder {
 public:
  virtual ~TokenDecoder() = default;
  // Fails only if a Replace regex gives up (Regex::FindAll).
  virtual absl::Status DecodeChain(std::vector<std::string>& tokens) const = 0;
  // True when a token of the form "<0xNN>" is held back as a byte and combined with the
  // following byte tokens (the text of a run of byte tokens is known only when the run ends).
  virtual bool HasByteFallback() const { return false; }
};

// `json` is the "decoder" value (not null). UNIMPLEMENTED names an unsupported type.
absl::StatusOr<std::unique_ptr<TokenDecoder>> TokenDecoderFromJson(JsonElement json);

// "<0xNN>" -> NN, else -1.
int ByteFallbackValue(std::string_view token);

}  // namespace loramux::text
