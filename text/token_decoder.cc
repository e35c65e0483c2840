#include "text/token_decoder.h"

#include "text/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "text/pre_tokenizer.h"
#include "text/regex.h"
#include "text/utf8.h"

namespace loramux::text {
namespace {

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// Each token's characters map back to bytes (a token with a character outside the alphabet
// keeps its own UTF-8 bytes); all bytes are then read as UTF-8, lossily, into one string.
class ByteLevelDecoder final : public TokenDecoder {
 public:
  absl::Status DecodeChain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const std::string& token : tokens) {
      const size_t mark = bytes.size();
      bool all_mapped = true;
      for (size_t pos = 0; pos < token.size();) {
        const int b = ByteLevelByte(NextCodePoint(token, pos));
        if (b < 0) {
          all_mapped = false;
          break;
        }
        bytes.push_back(static_cast<char>(b));
      }
      if (!all_mapped) {
        bytes.resize(mark);
        bytes += token;
      }
    }
    std::string text;
    AppendUtf8Lossy(bytes, text);
    tokens.assign(1, std::move(text));
    return absl::OkStatus();
  }
};

// Runs of "<0xNN>" tokens become their bytes as UTF-8, or one U+FFFD per byte if invalid.
class ByteFallbackDecoder final : public TokenDecoder {
 public:
  absl::Status DecodeChain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string run;
    size_t run_length = 0;
    const auto flush = [&] {
      if (run_length == 0) return;
      if (IsValidUtf8(run)) {
        out.push_back(run);
      } else {
        for (size_t i = 0; i < run_length; ++i) out.emplace_back(kReplacementChar);
      }
      run.clear();
      run_length = 0;
    };
    for (std::string& token : tokens) {
      const int b = ByteFallbackValue(token);
      if (b >= 0) {
        run.push_back(static_cast<char>(b));
        ++run_length;
      } else {
        flush();
        out.push_back(std::move(token));
      }
    }
    flush();
    tokens = std::move(out);
    return absl::OkStatus();
  }
  bool HasByteFallback() const override { return true; }
};

class FuseDecoder final : public TokenDecoder {
 public:
  absl::Status DecodeChain(std::vector<std::string>& tokens) const override {
    tokens.assign(1, absl::StrJoin(tokens, ""));
    return absl::OkStatus();
  }
};

// Removes up to `start` leading and `stop` trailing `content` characters from every token.
class StripDecoder final : public TokenDecoder {
 public:
  StripDecoder(std::string content, size_t start, size_t stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  absl::Status DecodeChain(std::vector<std::string>& tokens) const override {
    for (std::string& token : tokens) {
      size_t begin = 0, end = token.size();
      for (size_t i = 0; i < start_ && token.compare(begin, content_.size(), content_) == 0 &&
                         begin < end;
           ++i) {
        begin += content_.size();
      }
      for (size_t i = 0; i < stop_ && end >= begin + content_.size() &&
                         token.compare(end - content_.size(), content_.size(), content_) == 0;
           ++i) {
        end -= content_.size();
      }
      token = token.substr(begin, end - begin);
    }
    return absl::OkStatus();
  }

 private:
  std::string content_;  // one character
  size_t start_, stop_;
};

class ReplaceDecoder final : public TokenDecoder {
 public:
  ReplaceDecoder(std::unique_ptr<Regex> pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  absl::Status DecodeChain(std::vector<std::string>& tokens) const override {
    for (std::string& token : tokens) {
      ASSIGN_OR_RETURN(const auto matches, pattern_->FindAll(token));
      if (matches.empty()) continue;
      std::string out;
      size_t last = 0;
      for (const auto& [begin, end] : matches) {
        out.append(token, last, begin - last);
        out += content_;
        last = end;
      }
      out.append(token, last, std::string::npos);
      token = std::move(out);
    }
    return absl::OkStatus();
  }

 private:
  std::unique_ptr<Regex> pattern_;
  std::string content_;
};

// The replacement character becomes a space, except in the first token (all of them removed
// there) unless prepend_scheme is "never".
class MetaspaceDecoder final : public TokenDecoder {
 public:
  MetaspaceDecoder(std::string replacement, bool strip_first)
      : replacement_(std::move(replacement)), strip_first_(strip_first) {}
  absl::Status DecodeChain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string& token = tokens[i];
      if (token.find(replacement_) == std::string::npos) continue;
      std::string out;
      for (size_t pos = 0; pos < token.size();) {
        if (token.compare(pos, replacement_.size(), replacement_) == 0) {
          if (i != 0 || !strip_first_) out.push_back(' ');
          pos += replacement_.size();
        } else {
          out.push_back(token[pos++]);
        }
      }
      token = std::move(out);
    }
    return absl::OkStatus();
  }

 private:
  std::string replacement_;
  bool strip_first_;
};

// BPEDecoder: the end-of-word suffix becomes a space (none after the last token).
class BpeSuffixDecoder final : public TokenDecoder {
 public:
  explicit BpeSuffixDecoder(std::string suffix) : suffix_(std::move(suffix)) {}
  absl::Status DecodeChain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string& token = tokens[i];
      const std::string replacement = i + 1 == tokens.size() ? "" : " ";
      std::string out;
      size_t last = 0;
      for (size_t pos = token.find(suffix_); !suffix_.empty() && pos != std::string::npos;
           pos = token.find(suffix_, last)) {
        out.append(token, last, pos - last);
        out += replacement;
        last = pos + suffix_.size();
      }
      out.append(token, last, std::string::npos);
      token = std::move(out);
    }
    return absl::OkStatus();
  }

 private:
  std::string suffix_;
};

class SequenceDecoder final : public TokenDecoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<TokenDecoder>> steps)
      : steps_(std::move(steps)) {}
  absl::Status DecodeChain(std::vector<std::string>& tokens) const override {
    for (const auto& step : steps_) RETURN_IF_ERROR(step->DecodeChain(tokens));
    return absl::OkStatus();
  }
  bool HasByteFallback() const override {
    for (const auto& step : steps_) {
      if (step->HasByteFallback()) return true;
    }
    return false;
  }

 private:
  std::vector<std::unique_ptr<TokenDecoder>> steps_;
};

}  // namespace

int ByteFallbackValue(std::string_view token) {
  if (token.size() != 6 || token.substr(0, 3) != "<0x" || token[5] != '>') return -1;
  const int hi = HexDigit(token[3]), lo = HexDigit(token[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

absl::StatusOr<std::unique_ptr<TokenDecoder>> TokenDecoderFromJson(JsonElement json) {
  ASSIGN_OR_RETURN(std::string_view type, ComponentType(json, "decoder"));
  const std::string where = Cat("decoder ", type);
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    ASSIGN_OR_RETURN(std::string_view content, StringField(json, "content", where));
    ASSIGN_OR_RETURN(int64_t start, IntField(json, "start", where, 0));
    ASSIGN_OR_RETURN(int64_t stop, IntField(json, "stop", where, 0));
    if (CountCodePoints(content) != 1 || start < 0 || stop < 0) {
      return JsonError(where, "needs one \"content\" character and non-negative start/stop");
    }
    return std::make_unique<StripDecoder>(std::string(content), start, stop);
  }
  if (type == "Replace") {
    ASSIGN_OR_RETURN(PatternSpec pattern, PatternField(json, where));
    ASSIGN_OR_RETURN(std::string_view content, StringField(json, "content", where));
    auto regex = pattern.is_regex ? Regex::Compile(pattern.text) : Regex::Literal(pattern.text);
    if (!regex.ok()) return JsonError(where, std::string(regex.status().message()));
    return std::make_unique<ReplaceDecoder>(*std::move(regex), std::string(content));
  }
  if (type == "Metaspace") {
    ASSIGN_OR_RETURN(std::string_view replacement, StringField(json, "replacement", where));
    ASSIGN_OR_RETURN(std::optional<std::string_view> scheme,
                     OptionalStringField(json, "prepend_scheme", where));
    bool strip_first = true;
    if (scheme) {
      strip_first = *scheme != "never";
    } else {
      ASSIGN_OR_RETURN(strip_first, BoolField(json, "add_prefix_space", where, true));
    }
    return std::make_unique<MetaspaceDecoder>(std::string(replacement), strip_first);
  }
  if (type == "BPEDecoder") {
    ASSIGN_OR_RETURN(std::optional<std::string_view> suffix,
                     OptionalStringField(json, "suffix", where));
    return std::make_unique<BpeSuffixDecoder>(std::string(suffix.value_or("</w>")));
  }
  if (type == "Sequence") {
    ASSIGN_OR_RETURN(simdjson::dom::array items, ArrayField(json, "decoders", where));
    std::vector<std::unique_ptr<TokenDecoder>> steps;
    for (JsonElement item : items) {
      ASSIGN_OR_RETURN(std::unique_ptr<TokenDecoder> step, TokenDecoderFromJson(item));
      steps.push_back(std::move(step));
    }
    return std::make_unique<SequenceDecoder>(std::move(steps));
  }
  return Unsupported(Cat("decoder type \"", type, "\""),
                     "supported: ByteLevel, ByteFallback, Metaspace, Fuse, Strip, Replace, "
                     "BPEDecoder, Sequence");
}

}  // namespace loramux::text
