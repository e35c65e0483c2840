// Fuzzes tokenization of a prompt's text (text/tokenizer.h) with real tokenizers from tests/data:
// the first byte picks llama3 (byte-level BPE, no normalizer), qwen3 (NFC) or llama2 (Metaspace,
// byte fallback); the rest is the text a client sends.
//
// Checked beyond "no crash, no UB, no leak": Encode refuses only text that is not valid UTF-8
// (INVALID_ARGUMENT) or a regex that gives up (RESOURCE_EXHAUSTED); every id lies inside the
// vocabulary; Decode accepts what Encode produced, and for llama3 gives the text back byte for
// byte; a StreamDecoder fed the ids one at a time yields pieces that are valid UTF-8 and
// concatenate to Decode's text.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "tests/fuzz/fuzz_check.h"
#include "text/tokenizer.h"
#include "text/utf8.h"

namespace loramux::text {
namespace {

struct Loaded {
  const char* name;
  std::unique_ptr<Tokenizer> tokenizer;
  bool lossless;  // Decode(Encode(text)) == text
};

Loaded loaded[] = {
    {"llama3", nullptr, true}, {"qwen3", nullptr, false}, {"llama2", nullptr, false}};

// Loading takes seconds under the sanitizers: done once, before the first input (and its timeout).
void LoadAll() {
  for (Loaded& l : loaded) {
    auto t = Tokenizer::FromFile(std::string(LORAMUX_TEST_DATA) + "/tokenizers/" + l.name +
                                 "/tokenizer.json");
    FUZZ_CHECK(t.ok(), "cannot load the ", l.name, " tokenizer: ", t.status().ToString());
    l.tokenizer = std::move(*t);
  }
}

void CheckStream(const Tokenizer& tokenizer, const std::vector<int32_t>& ids, bool skip_special,
                 const std::string& decoded) {
  StreamDecoder stream(tokenizer, skip_special);
  std::string joined;
  for (int32_t id : ids) {
    auto piece = stream.Step(id);
    FUZZ_CHECK(piece.ok(), "StreamDecoder::Step(", id, "): ", piece.status().ToString());
    FUZZ_CHECK(IsValidUtf8(*piece), "a streamed piece is not valid UTF-8");
    joined += *piece;
  }
  auto rest = stream.Finish();
  FUZZ_CHECK(rest.ok(), "StreamDecoder::Finish: ", rest.status().ToString());
  joined += *rest;
  FUZZ_CHECK(joined == decoded, "streamed text differs from Decode's");
}

}  // namespace
}  // namespace loramux::text

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  loramux::text::LoadAll();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loramux::text;
  if (size == 0) return 0;
  Loaded& l = loaded[data[0] % 3];
  const Tokenizer& tokenizer = *l.tokenizer;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  const bool valid = IsValidUtf8(text);
  for (bool add_special : {false, true}) {
    auto ids = tokenizer.Encode(text, add_special);
    if (!ids.ok()) {
      const absl::StatusCode code = ids.status().code();
      FUZZ_CHECK((!valid && code == absl::StatusCode::kInvalidArgument) ||
                     code == absl::StatusCode::kResourceExhausted,
                 l.name, ": Encode refused ", valid ? "valid" : "invalid",
                 " UTF-8: ", ids.status().ToString());
      continue;
    }
    FUZZ_CHECK(valid, l.name, ": Encode accepted invalid UTF-8");
    for (int32_t id : *ids) {
      FUZZ_CHECK(id >= 0 && id < tokenizer.vocab_size(), l.name, ": id ", id, " outside [0, ",
                 tokenizer.vocab_size(), ")");
    }
    for (bool skip_special : {false, true}) {
      auto decoded = tokenizer.Decode(*ids, skip_special);
      FUZZ_CHECK(decoded.ok(), l.name, ": Decode of Encode's ids: ", decoded.status().ToString());
      FUZZ_CHECK(IsValidUtf8(*decoded), l.name, ": Decode gave invalid UTF-8");
      if (l.lossless && !add_special && !skip_special) {
        FUZZ_CHECK(*decoded == text, l.name, ": Decode(Encode(text)) != text");
      }
      CheckStream(tokenizer, *ids, skip_special, *decoded);
    }
  }
  return 0;
}
