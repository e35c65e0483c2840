#include "text/pre_tokenizer.h"

#include <utf8proc.h>

#include <array>
#include <utility>

#include "common/status_macros.h"
#include "text/json_fields.h"
#include "text/regex.h"
#include "text/str_cat.h"
#include "text/utf8.h"

namespace loramux::text {
namespace {

// GPT-2's pattern, as HuggingFace's ByteLevel uses it.
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

absl::StatusOr<Behavior> ParseBehavior(std::string_view name, std::string_view where) {
  if (name == "Removed") return Behavior::kRemoved;
  if (name == "Isolated") return Behavior::kIsolated;
  if (name == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return Behavior::kMergedWithNext;
  if (name == "Contiguous") return Behavior::kContiguous;
  return JsonError(where, Cat("unknown behavior \"", name, "\""));
}

struct Span {
  size_t begin, end;
  bool is_match;
};

// Covers `size` bytes with alternating non-match/match spans, as HuggingFace's Pattern does.
std::vector<Span> SpansFromMatches(size_t size, const std::vector<std::pair<size_t, size_t>>& m) {
  std::vector<Span> spans;
  if (size == 0) return {{0, 0, false}};
  size_t prev = 0;
  for (const auto& [begin, end] : m) {
    if (prev != begin) spans.push_back({prev, begin, false});
    spans.push_back({begin, end, true});
    prev = end;
  }
  if (prev != size) spans.push_back({prev, size, false});
  return spans;
}

// Applies `behavior` to the spans and appends the resulting non-empty pieces of `piece` to `out`.
void SplitBySpans(const PreToken& piece, std::vector<Span> spans, Behavior behavior, bool invert,
                  std::vector<PreToken>& out) {
  if (invert) {
    for (Span& s : spans) s.is_match = !s.is_match;
  }
  std::vector<Span> kept;  // is_match here means "remove"
  bool previous_match = false;
  switch (behavior) {
    case Behavior::kRemoved: kept = std::move(spans); break;
    case Behavior::kIsolated:
      for (Span s : spans) kept.push_back({s.begin, s.end, false});
      break;
    case Behavior::kContiguous:
      for (const Span& s : spans) {
        if (s.is_match == previous_match && !kept.empty()) {
          kept.back().end = s.end;
        } else {
          kept.push_back({s.begin, s.end, false});
        }
        previous_match = s.is_match;
      }
      break;
    case Behavior::kMergedWithPrevious:
      for (const Span& s : spans) {
        if (s.is_match && !previous_match && !kept.empty()) {
          kept.back().end = s.end;
        } else {
          kept.push_back({s.begin, s.end, false});
        }
        previous_match = s.is_match;
      }
      break;
    case Behavior::kMergedWithNext:
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous_match && !kept.empty()) {
          kept.back().begin = it->begin;
        } else {
          kept.push_back({it->begin, it->end, false});
        }
        previous_match = it->is_match;
      }
      std::reverse(kept.begin(), kept.end());
      break;
  }
  for (const Span& s : kept) {
    if (s.is_match || s.end == s.begin) continue;
    const size_t from_start = s.begin < piece.input_start_bytes
                                  ? std::min(piece.input_start_bytes - s.begin, s.end - s.begin)
                                  : 0;
    out.push_back({piece.text.substr(s.begin, s.end - s.begin), from_start});
  }
}

// split_one(piece, out) appends the sub-pieces of `piece` to `out` and returns a Status.
template <typename SplitOne>
absl::Status SplitEach(std::vector<PreToken>& pieces, SplitOne split_one) {
  std::vector<PreToken> out;
  out.reserve(pieces.size());
  for (const PreToken& piece : pieces) RETURN_IF_ERROR(split_one(piece, out));
  pieces = std::move(out);
  return absl::OkStatus();
}

class SplitPreTokenizer final : public PreTokenizer {
 public:
  SplitPreTokenizer(std::unique_ptr<Regex> pattern, Behavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  absl::Status PreTokenize(std::vector<PreToken>& pieces) const override {
    return SplitEach(pieces, [&](const PreToken& piece, std::vector<PreToken>& out) {
      ASSIGN_OR_RETURN(const auto matches, pattern_->FindAll(piece.text));
      SplitBySpans(piece, SpansFromMatches(piece.text.size(), matches), behavior_, invert_, out);
      return absl::OkStatus();
    });
  }

 private:
  std::unique_ptr<Regex> pattern_;
  Behavior behavior_;
  bool invert_;
};

class DigitsPreTokenizer final : public PreTokenizer {
 public:
  explicit DigitsPreTokenizer(bool individual) : individual_(individual) {}
  absl::Status PreTokenize(std::vector<PreToken>& pieces) const override {
    return SplitEach(pieces, [&](const PreToken& piece, std::vector<PreToken>& out) {
      std::vector<std::pair<size_t, size_t>> digits;  // one match per numeric character
      for (size_t pos = 0; pos < piece.text.size();) {
        const size_t start = pos;
        if (IsNumeric(NextCodePoint(piece.text, pos))) digits.emplace_back(start, pos);
      }
      SplitBySpans(piece, SpansFromMatches(piece.text.size(), digits),
                   individual_ ? Behavior::kIsolated : Behavior::kContiguous, false, out);
      return absl::OkStatus();
    });
  }

 private:
  // Rust's char::is_numeric: general categories Nd, Nl, No.
  static bool IsNumeric(char32_t c) {
    if (c < 0x80) return c >= '0' && c <= '9';
    const auto cat = utf8proc_category(c);
    return cat == UTF8PROC_CATEGORY_ND || cat == UTF8PROC_CATEGORY_NL ||
           cat == UTF8PROC_CATEGORY_NO;
  }
  bool individual_;
};

class ByteLevelPreTokenizer final : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::unique_ptr<Regex> regex)
      : add_prefix_space_(add_prefix_space), regex_(std::move(regex)) {}
  absl::Status PreTokenize(std::vector<PreToken>& pieces) const override {
    if (add_prefix_space_ || regex_ != nullptr) {
      RETURN_IF_ERROR(SplitEach(pieces, [&](const PreToken& piece, std::vector<PreToken>& out) {
        PreToken prefixed = piece;
        if (add_prefix_space_ && (piece.text.empty() || piece.text[0] != ' ')) {
          prefixed.text.insert(0, " ");
          if (prefixed.input_start_bytes > 0) ++prefixed.input_start_bytes;
        }
        if (regex_ == nullptr) {
          if (!prefixed.text.empty()) out.push_back(std::move(prefixed));
          return absl::OkStatus();
        }
        ASSIGN_OR_RETURN(const auto matches, regex_->FindAll(prefixed.text));
        SplitBySpans(prefixed, SpansFromMatches(prefixed.text.size(), matches), Behavior::kIsolated,
                     false, out);
        return absl::OkStatus();
      }));
    }
    for (PreToken& piece : pieces) {
      std::string mapped;
      mapped.reserve(piece.text.size() * 2);
      for (size_t i = 0; i < piece.text.size(); ++i) {
        mapped += ByteLevelChar(static_cast<unsigned char>(piece.text[i]));
        if (i + 1 == piece.input_start_bytes) piece.input_start_bytes = mapped.size();
      }
      piece.text = std::move(mapped);
    }
    return absl::OkStatus();
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> regex_;  // null when use_regex is false
};

class MetaspacePreTokenizer final : public PreTokenizer {
 public:
  enum class Prepend { kAlways, kFirst, kNever };
  MetaspacePreTokenizer(std::string replacement, Prepend prepend, bool split)
      : replacement_(std::move(replacement)), prepend_(prepend), split_(split) {
    splitter_ = *Regex::Literal(replacement_);
  }
  absl::Status PreTokenize(std::vector<PreToken>& pieces) const override {
    return SplitEach(pieces, [&](const PreToken& piece, std::vector<PreToken>& out) {
      PreToken replaced{"", 0};
      for (size_t i = 0; i < piece.text.size(); ++i) {
        if (piece.text[i] == ' ') {
          replaced.text += replacement_;
        } else {
          replaced.text.push_back(piece.text[i]);
        }
        if (i + 1 == piece.input_start_bytes) replaced.input_start_bytes = replaced.text.size();
      }
      const bool starts_with_replacement = replaced.text.rfind(replacement_, 0) == 0;
      if (!starts_with_replacement &&
          (prepend_ == Prepend::kAlways ||
           (prepend_ == Prepend::kFirst && piece.input_start_bytes > 0))) {
        replaced.text.insert(0, replacement_);
        if (replaced.input_start_bytes > 0) replaced.input_start_bytes += replacement_.size();
      }
      if (!split_) {
        if (!replaced.text.empty()) out.push_back(std::move(replaced));
        return absl::OkStatus();
      }
      ASSIGN_OR_RETURN(const auto matches, splitter_->FindAll(replaced.text));
      SplitBySpans(replaced, SpansFromMatches(replaced.text.size(), matches),
                   Behavior::kMergedWithNext, false, out);
      return absl::OkStatus();
    });
  }

 private:
  std::string replacement_;
  Prepend prepend_;
  bool split_;
  std::unique_ptr<Regex> splitter_;
};

class SequencePreTokenizer final : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps)
      : steps_(std::move(steps)) {}
  absl::Status PreTokenize(std::vector<PreToken>& pieces) const override {
    for (const auto& step : steps_) RETURN_IF_ERROR(step->PreTokenize(pieces));
    return absl::OkStatus();
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

struct ByteLevelAlphabet {
  std::array<std::string, 256> chars;
  std::array<int, 512> bytes;  // code point (all below 0x144) -> byte, or -1
  ByteLevelAlphabet() {
    bytes.fill(-1);
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      const char32_t cp = printable ? b : 256 + extra++;
      AppendUtf8(cp, chars[b]);
      bytes[cp] = b;
    }
  }
};

const ByteLevelAlphabet& Alphabet() {
  static const ByteLevelAlphabet* alphabet = new ByteLevelAlphabet();
  return *alphabet;
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> ByteLevelFromJson(JsonElement json,
                                                                std::string_view where) {
  ASSIGN_OR_RETURN(bool add_prefix_space, BoolField(json, "add_prefix_space", where, true));
  ASSIGN_OR_RETURN(bool use_regex, BoolField(json, "use_regex", where, true));
  std::unique_ptr<Regex> regex;
  if (use_regex) {
    ASSIGN_OR_RETURN(regex, Regex::Compile(kGpt2Pattern));
  }
  return std::make_unique<ByteLevelPreTokenizer>(add_prefix_space, std::move(regex));
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> MetaspaceFromJson(JsonElement json,
                                                                std::string_view where) {
  ASSIGN_OR_RETURN(std::string_view replacement, StringField(json, "replacement", where));
  if (CountCodePoints(replacement) != 1) {
    return JsonError(where, "\"replacement\" must be exactly one character");
  }
  ASSIGN_OR_RETURN(std::optional<std::string_view> scheme,
                   OptionalStringField(json, "prepend_scheme", where));
  MetaspacePreTokenizer::Prepend prepend = MetaspacePreTokenizer::Prepend::kAlways;
  if (scheme) {
    if (*scheme == "first") {
      prepend = MetaspacePreTokenizer::Prepend::kFirst;
    } else if (*scheme == "never") {
      prepend = MetaspacePreTokenizer::Prepend::kNever;
    } else if (*scheme != "always") {
      return JsonError(where, Cat("unknown prepend_scheme \"", *scheme, "\""));
    }
  } else {  // older files: add_prefix_space
    ASSIGN_OR_RETURN(bool add_prefix_space, BoolField(json, "add_prefix_space", where, true));
    if (!add_prefix_space) prepend = MetaspacePreTokenizer::Prepend::kNever;
  }
  ASSIGN_OR_RETURN(bool split, BoolField(json, "split", where, true));
  return std::make_unique<MetaspacePreTokenizer>(std::string(replacement), prepend, split);
}

}  // namespace

const std::string& ByteLevelChar(unsigned char byte) { return Alphabet().chars[byte]; }

int ByteLevelByte(char32_t cp) { return cp < 512 ? Alphabet().bytes[cp] : -1; }

absl::StatusOr<std::unique_ptr<PreTokenizer>> PreTokenizerFromJson(JsonElement json) {
  ASSIGN_OR_RETURN(std::string_view type, ComponentType(json, "pre_tokenizer"));
  const std::string where = Cat("pre_tokenizer ", type);
  if (type == "ByteLevel") return ByteLevelFromJson(json, where);
  if (type == "Metaspace") return MetaspaceFromJson(json, where);
  if (type == "Digits") {
    ASSIGN_OR_RETURN(bool individual, BoolField(json, "individual_digits", where, false));
    return std::make_unique<DigitsPreTokenizer>(individual);
  }
  if (type == "Split") {
    ASSIGN_OR_RETURN(PatternSpec pattern, PatternField(json, where));
    ASSIGN_OR_RETURN(std::string_view behavior_name, StringField(json, "behavior", where));
    ASSIGN_OR_RETURN(Behavior behavior, ParseBehavior(behavior_name, where));
    ASSIGN_OR_RETURN(bool invert, BoolField(json, "invert", where, false));
    auto regex = pattern.is_regex ? Regex::Compile(pattern.text) : Regex::Literal(pattern.text);
    if (!regex.ok()) return JsonError(where, std::string(regex.status().message()));
    return std::make_unique<SplitPreTokenizer>(*std::move(regex), behavior, invert);
  }
  if (type == "Sequence") {
    ASSIGN_OR_RETURN(simdjson::dom::array items, ArrayField(json, "pretokenizers", where));
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (JsonElement item : items) {
      ASSIGN_OR_RETURN(std::unique_ptr<PreTokenizer> step, PreTokenizerFromJson(item));
      steps.push_back(std::move(step));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(steps));
  }
  return Unsupported(Cat("pre_tokenizer type \"", type, "\""),
                     "supported: ByteLevel, Split, Metaspace, Digits, Sequence");
}

}  // namespace loramux::text
