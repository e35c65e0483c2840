#include "text/normalizer.h"

#include <utf8proc.h>

#include <cstdlib>
#include <vector>

#include "text/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/status_macros.h"
#include "text/regex.h"
#include "text/utf8.h"

namespace loramux::text {
namespace {

bool IsAscii(std::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return true;
}

// Unicode White_Space, as Rust's char::is_whitespace.
bool IsWhitespace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

class UnicodeNormalizer final : public Normalizer {
 public:
  explicit UnicodeNormalizer(int options) : options_(options) {}
  absl::Status Normalize(std::string& text) const override {
    if (IsAscii(text)) return absl::OkStatus();  // every form leaves ASCII unchanged
    utf8proc_uint8_t* out = nullptr;
    const utf8proc_ssize_t n =
        utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()), text.size(), &out,
                     static_cast<utf8proc_option_t>(options_));
    if (n >= 0) text.assign(reinterpret_cast<const char*>(out), n);
    std::free(out);  // input is valid UTF-8, so utf8proc_map cannot fail
    return absl::OkStatus();
  }

 private:
  int options_;
};

// HuggingFace lowercases character by character (Rust's char::to_lowercase): full mappings
// (U+0130 becomes "i̇") but no context, so a final capital sigma becomes σ, never ς.
class LowercaseNormalizer final : public Normalizer {
 public:
  absl::Status Normalize(std::string& text) const override {
    std::string out;
    out.reserve(text.size());
    for (size_t pos = 0; pos < text.size();) {
      const char32_t c = NextCodePoint(text, pos);
      if (c < 0x80) {
        out.push_back(static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c));
      } else if (c == 0x130) {  // the one unconditional multi-character lowercase mapping
        out.append("i\xCC\x87");
      } else {
        AppendUtf8(utf8proc_tolower(c), out);
      }
    }
    text = std::move(out);
    return absl::OkStatus();
  }
};

class StripNormalizer final : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  absl::Status Normalize(std::string& text) const override {
    size_t begin = 0, end = text.size();
    if (left_) {
      while (begin < end) {
        size_t pos = begin;
        if (!IsWhitespace(NextCodePoint(text, pos))) break;
        begin = pos;
      }
    }
    if (right_) {
      while (end > begin) {
        size_t start = end - 1;
        while (start > begin && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
        size_t pos = start;
        if (!IsWhitespace(NextCodePoint(text, pos))) break;
        end = start;
      }
    }
    text = text.substr(begin, end - begin);
    return absl::OkStatus();
  }

 private:
  bool left_, right_;
};

// Removes every combining mark (general category M), as unicode-normalization's is_combining_mark.
class StripAccentsNormalizer final : public Normalizer {
 public:
  absl::Status Normalize(std::string& text) const override {
    std::string out;
    for (size_t pos = 0; pos < text.size();) {
      const size_t start = pos;
      const char32_t c = NextCodePoint(text, pos);
      const auto category = utf8proc_category(c);
      const bool is_mark = category == UTF8PROC_CATEGORY_MN || category == UTF8PROC_CATEGORY_MC ||
                           category == UTF8PROC_CATEGORY_ME;
      if (!is_mark) out.append(text, start, pos - start);
    }
    text = std::move(out);
    return absl::OkStatus();
  }
};

class PrependNormalizer final : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  absl::Status Normalize(std::string& text) const override {
    if (!text.empty()) text.insert(0, prefix_);
    return absl::OkStatus();
  }

 private:
  std::string prefix_;
};

class ReplaceNormalizer final : public Normalizer {
 public:
  ReplaceNormalizer(std::unique_ptr<Regex> pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  absl::Status Normalize(std::string& text) const override {
    ASSIGN_OR_RETURN(const auto matches, pattern_->FindAll(text));
    if (matches.empty()) return absl::OkStatus();
    std::string out;
    size_t last = 0;
    for (const auto& [begin, end] : matches) {
      out.append(text, last, begin - last);
      out.append(content_);
      last = end;
    }
    out.append(text, last, std::string::npos);
    text = std::move(out);
    return absl::OkStatus();
  }

 private:
  std::unique_ptr<Regex> pattern_;
  std::string content_;
};

class SequenceNormalizer final : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps)
      : steps_(std::move(steps)) {}
  absl::Status Normalize(std::string& text) const override {
    for (const auto& step : steps_) RETURN_IF_ERROR(step->Normalize(text));
    return absl::OkStatus();
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Normalizer>> NormalizerFromJson(JsonElement json) {
  ASSIGN_OR_RETURN(std::string_view type, ComponentType(json, "normalizer"));
  const std::string where = Cat("normalizer ", type);
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(UTF8PROC_STABLE | UTF8PROC_COMPOSE);
  if (type == "NFD") {
    return std::make_unique<UnicodeNormalizer>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE);
  }
  if (type == "NFKC") {
    return std::make_unique<UnicodeNormalizer>(UTF8PROC_STABLE | UTF8PROC_COMPOSE |
                                               UTF8PROC_COMPAT);
  }
  if (type == "NFKD") {
    return std::make_unique<UnicodeNormalizer>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE |
                                               UTF8PROC_COMPAT);
  }
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "StripAccents") return std::make_unique<StripAccentsNormalizer>();
  if (type == "Strip") {
    ASSIGN_OR_RETURN(bool left, BoolField(json, "strip_left", where, true));
    ASSIGN_OR_RETURN(bool right, BoolField(json, "strip_right", where, true));
    return std::make_unique<StripNormalizer>(left, right);
  }
  if (type == "Prepend") {
    ASSIGN_OR_RETURN(std::string_view prefix, StringField(json, "prepend", where));
    return std::make_unique<PrependNormalizer>(std::string(prefix));
  }
  if (type == "Replace") {
    ASSIGN_OR_RETURN(PatternSpec pattern, PatternField(json, where));
    ASSIGN_OR_RETURN(std::string_view content, StringField(json, "content", where));
    auto regex = pattern.is_regex ? Regex::Compile(pattern.text) : Regex::Literal(pattern.text);
    if (!regex.ok()) return JsonError(where, std::string(regex.status().message()));
    return std::make_unique<ReplaceNormalizer>(*std::move(regex), std::string(content));
  }
  if (type == "Sequence") {
    ASSIGN_OR_RETURN(simdjson::dom::array items, ArrayField(json, "normalizers", where));
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (JsonElement item : items) {
      ASSIGN_OR_RETURN(std::unique_ptr<Normalizer> step, NormalizerFromJson(item));
      steps.push_back(std::move(step));
    }
    return std::make_unique<SequenceNormalizer>(std::move(steps));
  }
  return Unsupported(Cat("normalizer type \"", type, "\""),
                     "supported: NFC, NFD, NFKC, NFKD, Lowercase, Strip, StripAccents, Prepend, "
                     "Replace, Sequence");
}

}  // namespace loramux::text
