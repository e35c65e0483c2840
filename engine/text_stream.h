// The decoded text of one generation, streamed as the tokens come. Each piece is valid UTF-8 and
// the pieces concatenate to the decoding of all tokens at once (special tokens skipped), except
// that with stop strings the text ends just before the first stop string it contains. Text that
// could still be the start of a stop string is held back until it is known not to be one.
//
// Thread-safety: one TextStream per sequence, used by one thread (the scheduler's); the tokenizer
// must outlive it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "text/tokenizer.h"

namespace loramux {

class TextStream {
 public:
  TextStream(const text::Tokenizer& tokenizer, std::vector<std::string> stops);

  struct Piece {
    std::string text;      // final text, maybe empty
    bool stopped = false;  // a stop string was found; `text` ends before it
  };
  // Feeds the next generated id. An id without a token adds no text.
  Piece Append(int32_t id);
  // The held-back rest, when generation ends without a stop string.
  std::string Finish();

 private:
  // Emits the part of pending_ that can no longer begin a stop string.
  Piece Release();

  text::StreamDecoder decoder_;
  std::vector<std::string> stops_;
  std::string pending_;  // decoded, not yet emitted
  bool stopped_ = false;
};

}  // namespace loramux
