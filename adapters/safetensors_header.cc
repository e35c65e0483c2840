#include "adapters/safetensors_header.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace loramux {
namespace safetensors_header {
namespace {

bool IsWhitespace(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Bytes that stand for themselves inside a string: printable ASCII other than '"' and '\\'.
struct PlainStringBytes {
  bool plain[256] = {};
  constexpr PlainStringBytes() {
    for (int c = 0x20; c < 0x80; ++c) plain[c] = c != '"' && c != '\\';
  }
};
constexpr PlainStringBytes kPlain;
bool IsPlainStringByte(char c) { return kPlain.plain[static_cast<unsigned char>(c)]; }

// The first byte in [p, end) that is not plain. Eight bytes at a time where it can: names are
// most of a header's bytes.
const char* SkipPlainStringBytes(const char* p, const char* end) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  constexpr uint64_t kOnes = 0x0101010101010101u;
  constexpr uint64_t kHigh = 0x8080808080808080u;
  // (x - kOnes * n) & ~x & kHigh flags bytes of x below n (n <= 0x80); the lowest flag is exact.
  auto below = [](uint64_t x, uint64_t n) { return (x - kOnes * n) & ~x & kHigh; };
  while (end - p >= 8) {
    uint64_t w;
    std::memcpy(&w, p, sizeof w);
    const uint64_t special =
        below(w, 0x20) | below(w ^ (kOnes * '"'), 1) | below(w ^ (kOnes * '\\'), 1) | (w & kHigh);
    if (special != 0) return p + (__builtin_ctzll(special) >> 3);
    p += 8;
  }
#endif
  while (p != end && IsPlainStringByte(*p)) ++p;
  return p;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Length of the well-formed UTF-8 sequence (RFC 3629) of 2..4 bytes at [p, end), or 0.
size_t Utf8SequenceLength(const unsigned char* p, const unsigned char* end) {
  const unsigned char c = p[0];
  size_t len;
  unsigned char lo = 0x80, hi = 0xBF;  // range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;  // no overlong forms
    if (c == 0xED) hi = 0x9F;  // no UTF-16 surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;  // no overlong forms
    if (c == 0xF4) hi = 0x8F;  // nothing beyond U+10FFFF
  } else {
    return 0;  // a continuation byte, an overlong lead (C0, C1) or F5..FF
  }
  if (static_cast<size_t>(end - p) < len || p[1] < lo || p[1] > hi) return 0;
  for (size_t i = 2; i < len; ++i) {
    if (p[i] < 0x80 || p[i] > 0xBF) return 0;
  }
  return len;
}

// The element value recorded in ScannedHeader::ints: digits only (no sign, fraction or exponent;
// the grammar already excludes leading zeros) and at most INT64_MAX; -1 otherwise.
int64_t NonNegativeIntOrMinusOne(const JsonSpan& v) {
  if (v.type != JsonType::kNumber) return -1;
  constexpr uint64_t kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  uint64_t n = 0;
  for (char c : v.text) {
    if (!IsDigit(c)) return -1;
    const uint64_t digit = static_cast<uint64_t>(c - '0');
    if (n > (kMax - digit) / 10) return -1;
    n = n * 10 + digit;
  }
  return static_cast<int64_t>(n);
}

class Scanner {
 public:
  Scanner(std::string_view text, int max_depth, ScannedHeader* out)
      : begin_(text.data()),
        p_(text.data()),
        end_(text.data() + text.size()),
        max_depth_(max_depth),
        out_(out) {}

  absl::Status Run() {
    // A typical entry takes over 100 bytes; reserving for that avoids most regrowth in adapter-
    // sized headers (capped: a huge header may be mostly metadata).
    const size_t size = static_cast<size_t>(end_ - begin_);
    out_->tensors.reserve(std::min<size_t>(size / 96, 4096));
    out_->ints.reserve(std::min<size_t>(size / 32, 16384));
    SkipWhitespace();
    if (AtEnd() || *p_ != '{') {
      RETURN_IF_ERROR(ScanValue(&out_->top, nullptr));  // the caller rejects a non-object
    } else {
      const char* start = p_;
      RETURN_IF_ERROR(ScanObject([this](std::string_view key) { return ScanTopMember(key); }));
      out_->top = {JsonType::kObject, Span(start)};
    }
    SkipWhitespace();
    if (!AtEnd()) return Fail(p_, "unexpected data after the top-level value");
    return absl::OkStatus();
  }

 private:
  bool AtEnd() const { return p_ == end_; }
  std::string_view Span(const char* start) const {
    return std::string_view(start, static_cast<size_t>(p_ - start));
  }
  // The scanning loops below work on a local copy of p_, which the compiler can keep in a register.
  void SkipWhitespace() {
    const char* p = p_;
    while (p != end_ && IsWhitespace(*p)) ++p;
    p_ = p;
  }
  void SkipDigits() {
    const char* p = p_;
    while (p != end_ && IsDigit(*p)) ++p;
    p_ = p;
  }

  absl::Status Fail(const char* at, absl::string_view what) const {
    if (at == end_) {
      return absl::InvalidArgumentError(
          absl::StrCat("header is not well-formed JSON (", what, ": unexpected end of header)"));
    }
    return absl::InvalidArgumentError(absl::StrCat("header is not well-formed JSON (", what,
                                                   " at header offset ", at - begin_, ")"));
  }
  // "expected X, found 'c'" at p_.
  absl::Status Expected(absl::string_view what) const {
    if (AtEnd()) return Fail(p_, absl::StrCat("expected ", what));
    const unsigned char c = static_cast<unsigned char>(*p_);
    std::string found = c >= 0x20 && c < 0x7F
                            ? absl::StrCat("'", std::string(1, *p_), "'")
                            : absl::StrCat("byte 0x", absl::Hex(c, absl::kZeroPad2));
    return Fail(p_, absl::StrCat("expected ", what, ", found ", found));
  }

  absl::Status Enter() {
    if (++depth_ > max_depth_) {
      return absl::InvalidArgumentError(
          absl::StrCat("header JSON nests deeper than ", max_depth_, " levels"));
    }
    return absl::OkStatus();
  }

  // p_ at '{'. Calls on_member(key) with p_ at the member's value, which it must scan; `key` (the
  // decoded key) is valid during the call.
  template <typename OnMember>
  absl::Status ScanObject(OnMember&& on_member) {
    RETURN_IF_ERROR(Enter());
    ++p_;
    SkipWhitespace();
    if (!AtEnd() && *p_ == '}') {
      ++p_;
      --depth_;
      return absl::OkStatus();
    }
    std::string key_buffer;
    for (;;) {
      if (AtEnd() || *p_ != '"') return Expected("a string key");
      std::string_view key;
      RETURN_IF_ERROR(ScanKey(&key_buffer, &key));
      SkipWhitespace();
      if (AtEnd() || *p_ != ':') return Expected("':'");
      ++p_;
      SkipWhitespace();
      RETURN_IF_ERROR(on_member(key));
      SkipWhitespace();
      if (AtEnd()) return Expected("',' or '}'");
      if (*p_ == '}') break;
      if (*p_ != ',') return Expected("',' or '}'");
      ++p_;
      SkipWhitespace();
    }
    ++p_;
    --depth_;
    return absl::OkStatus();
  }

  // p_ at '['. Calls on_element() with p_ at each element, which it must scan.
  template <typename OnElement>
  absl::Status ScanArray(OnElement&& on_element) {
    RETURN_IF_ERROR(Enter());
    ++p_;
    SkipWhitespace();
    if (!AtEnd() && *p_ == ']') {
      ++p_;
      --depth_;
      return absl::OkStatus();
    }
    for (;;) {
      RETURN_IF_ERROR(on_element());
      SkipWhitespace();
      if (AtEnd()) return Expected("',' or ']'");
      if (*p_ == ']') break;
      if (*p_ != ',') return Expected("',' or ']'");
      ++p_;
      SkipWhitespace();
    }
    ++p_;
    --depth_;
    return absl::OkStatus();
  }

  // Any value at p_. `decoded` receives a string's content (nullptr: discard it).
  absl::Status ScanValue(JsonSpan* out, std::string* decoded) {
    const char* start = p_;
    if (AtEnd()) return Expected("a value");
    switch (*p_) {
      case '{':
        out->type = JsonType::kObject;
        RETURN_IF_ERROR(ScanObject([this](std::string_view) { return SkipValue(); }));
        break;
      case '[':
        out->type = JsonType::kArray;
        RETURN_IF_ERROR(ScanArray([this] { return SkipValue(); }));
        break;
      case '"':
        out->type = JsonType::kString;
        RETURN_IF_ERROR(ScanString(decoded != nullptr ? decoded : &scratch_));
        break;
      case 't':
        out->type = JsonType::kBoolean;
        RETURN_IF_ERROR(ScanLiteral("true"));
        break;
      case 'f':
        out->type = JsonType::kBoolean;
        RETURN_IF_ERROR(ScanLiteral("false"));
        break;
      case 'n':
        out->type = JsonType::kNull;
        RETURN_IF_ERROR(ScanLiteral("null"));
        break;
      default:
        if (*p_ != '-' && !IsDigit(*p_)) return Expected("a value");
        out->type = JsonType::kNumber;
        RETURN_IF_ERROR(ScanNumber());
        break;
    }
    out->text = Span(start);
    return absl::OkStatus();
  }

  absl::Status SkipValue() {
    JsonSpan ignored;
    return ScanValue(&ignored, nullptr);
  }

  absl::Status ScanLiteral(std::string_view word) {
    if (static_cast<size_t>(end_ - p_) < word.size() ||
        std::memcmp(p_, word.data(), word.size()) != 0) {
      return Fail(p_, "invalid literal (expected true, false or null)");
    }
    p_ += word.size();
    return absl::OkStatus();
  }

  // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
  absl::Status ScanNumber() {
    const char* start = p_;
    if (*p_ == '-') ++p_;
    if (!AtEnd() && *p_ == '0') {
      ++p_;
    } else if (!AtEnd() && IsDigit(*p_)) {
      SkipDigits();
    } else {
      return Fail(start, "invalid number");
    }
    if (!AtEnd() && *p_ == '.') {
      ++p_;
      if (AtEnd() || !IsDigit(*p_)) return Fail(start, "invalid number (digit expected after '.')");
      SkipDigits();
    }
    if (!AtEnd() && (*p_ == 'e' || *p_ == 'E')) {
      ++p_;
      if (!AtEnd() && (*p_ == '+' || *p_ == '-')) ++p_;
      if (AtEnd() || !IsDigit(*p_)) {
        return Fail(start, "invalid number (digit expected in the exponent)");
      }
      SkipDigits();
    }
    return absl::OkStatus();
  }

  // p_ at the opening '"'. `*key` is the decoded string: in the header itself when it has no
  // escapes or non-ASCII bytes (the usual case), else in `*buffer`.
  absl::Status ScanKey(std::string* buffer, std::string_view* key) {
    const char* run_end = SkipPlainStringBytes(p_ + 1, end_);
    if (run_end != end_ && *run_end == '"') {
      *key = std::string_view(p_ + 1, static_cast<size_t>(run_end - p_ - 1));
      p_ = run_end + 1;
      return absl::OkStatus();
    }
    RETURN_IF_ERROR(ScanString(buffer));
    *key = *buffer;
    return absl::OkStatus();
  }

  // p_ at the opening '"'; decodes the content into `out`.
  absl::Status ScanString(std::string* out) {
    const char* open = p_++;
    out->clear();
    for (;;) {
      const char* run_end = SkipPlainStringBytes(p_, end_);
      out->append(p_, static_cast<size_t>(run_end - p_));
      p_ = run_end;
      if (AtEnd()) return Fail(open, "unterminated string");
      const unsigned char c = static_cast<unsigned char>(*p_);
      if (c == '"') {
        ++p_;
        return absl::OkStatus();
      }
      if (c == '\\') {
        RETURN_IF_ERROR(ScanEscape(out));
      } else if (c < 0x20) {
        return Fail(p_, absl::StrCat("raw control character 0x", absl::Hex(c, absl::kZeroPad2),
                                     " in string"));
      } else {
        const size_t len = Utf8SequenceLength(reinterpret_cast<const unsigned char*>(p_),
                                              reinterpret_cast<const unsigned char*>(end_));
        if (len == 0) return Fail(p_, "invalid UTF-8 in string");
        out->append(p_, len);
        p_ += len;
      }
    }
  }

  // p_ at '\\'.
  absl::Status ScanEscape(std::string* out) {
    const char* start = p_++;
    if (AtEnd()) return Fail(start, "unterminated escape");
    const char c = *p_++;
    if (c != 'u') {
      constexpr std::string_view kEscaped = "\"\\/bfnrt";
      constexpr std::string_view kDecoded = "\"\\/\b\f\n\r\t";
      const size_t i = kEscaped.find(c);
      if (i == std::string_view::npos) return Fail(start, "invalid escape");
      out->push_back(kDecoded[i]);
      return absl::OkStatus();
    }
    uint32_t cp = 0;
    RETURN_IF_ERROR(ScanHex4(start, &cp));
    if (cp >= 0xDC00 && cp <= 0xDFFF) return Fail(start, "unpaired UTF-16 surrogate escape");
    if (cp >= 0xD800 && cp <= 0xDBFF) {
      uint32_t low = 0;
      if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') {
        return Fail(start, "unpaired UTF-16 surrogate escape");
      }
      p_ += 2;
      RETURN_IF_ERROR(ScanHex4(start, &low));
      if (low < 0xDC00 || low > 0xDFFF) return Fail(start, "unpaired UTF-16 surrogate escape");
      cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
    }
    AppendUtf8(cp, out);
    return absl::OkStatus();
  }

  // The 4 hex digits of a \u escape (which starts at `escape`) at p_.
  absl::Status ScanHex4(const char* escape, uint32_t* cp) {
    if (end_ - p_ < 4) return Fail(escape, "invalid \\u escape");
    for (int i = 0; i < 4; ++i) {
      const int v = HexValue(p_[i]);
      if (v < 0) return Fail(escape, "invalid \\u escape");
      *cp = (*cp << 4) | static_cast<uint32_t>(v);
    }
    p_ += 4;
    return absl::OkStatus();
  }

  // --- the safetensors layout ----------------------------------------------------------------

  absl::Status ScanTopMember(std::string_view key) {
    if (key == "__metadata__") return ScanMetadata();
    ScannedTensor& tensor = out_->tensors.emplace_back();
    tensor.name.assign(key.data(), key.size());
    return ScanEntry(&tensor);
  }

  absl::Status ScanEntry(ScannedTensor* t) {
    if (AtEnd() || *p_ != '{') return ScanValue(&t->entry, nullptr);
    const char* start = p_;
    RETURN_IF_ERROR(ScanObject([this, t](std::string_view key) -> absl::Status {
      if (key == "dtype") {
        NoteRepeat(t, t->dtype.present(), "dtype");
        return ScanValue(&t->dtype, &t->dtype_name);
      }
      if (key == "shape") {
        NoteRepeat(t, t->shape.value.present(), "shape");
        return ScanInts(&t->shape);
      }
      if (key == "data_offsets") {
        NoteRepeat(t, t->data_offsets.value.present(), "data_offsets");
        return ScanInts(&t->data_offsets);
      }
      return SkipValue();  // unknown keys are ignored
    }));
    t->entry = {JsonType::kObject, Span(start)};
    return absl::OkStatus();
  }

  static void NoteRepeat(ScannedTensor* t, bool seen, std::string_view key) {
    if (seen && t->duplicate_key.empty()) t->duplicate_key = key;
  }

  // Fast path for the usual array element, a plain integer ("0", "4096"): scans it and returns
  // true, or leaves p_ alone and returns false for anything else.
  bool ScanPlainInteger(JsonSpan* out) {
    const char* p = p_;
    while (p != end_ && IsDigit(*p)) ++p;
    const size_t len = static_cast<size_t>(p - p_);
    if (len == 0 || (len > 1 && *p_ == '0')) return false;
    if (p != end_ && (*p == '.' || *p == 'e' || *p == 'E')) return false;
    *out = {JsonType::kNumber, std::string_view(p_, len)};
    p_ = p;
    return true;
  }

  absl::Status ScanInts(ScannedInts* field) {
    field->first = out_->ints.size();
    field->count = 0;
    field->first_bad = {};
    if (AtEnd() || *p_ != '[') return ScanValue(&field->value, nullptr);
    const char* start = p_;
    RETURN_IF_ERROR(ScanArray([this, field]() -> absl::Status {
      JsonSpan element;
      if (!ScanPlainInteger(&element)) RETURN_IF_ERROR(ScanValue(&element, nullptr));
      const int64_t v = NonNegativeIntOrMinusOne(element);
      if (v < 0 && field->first_bad.empty()) field->first_bad = element.text;
      out_->ints.push_back(v);
      ++field->count;
      return absl::OkStatus();
    }));
    field->value = {JsonType::kArray, Span(start)};
    return absl::OkStatus();
  }

  absl::Status ScanMetadata() {
    ++out_->metadata_count;
    out_->metadata_items.clear();
    if (AtEnd() || *p_ != '{') return ScanValue(&out_->metadata, nullptr);
    const char* start = p_;
    RETURN_IF_ERROR(ScanObject([this](std::string_view key) {
      ScannedMetadataItem& item = out_->metadata_items.emplace_back();
      item.key.assign(key.data(), key.size());
      return ScanValue(&item.value, &item.string_value);
    }));
    out_->metadata = {JsonType::kObject, Span(start)};
    return absl::OkStatus();
  }

  const char* const begin_;
  const char* p_;
  const char* const end_;
  const int max_depth_;
  int depth_ = 0;
  ScannedHeader* const out_;
  std::string scratch_;  // decoded strings nobody needs
};

}  // namespace

std::string_view JsonTypeName(JsonType type) {
  switch (type) {
    case JsonType::kNull:
      return "null";
    case JsonType::kBoolean:
      return "boolean";
    case JsonType::kNumber:
      return "number";
    case JsonType::kString:
      return "string";
    case JsonType::kArray:
      return "array";
    case JsonType::kObject:
      return "object";
  }
  return "unknown";
}

absl::Status ScanHeader(std::string_view text, int max_depth, ScannedHeader* out) {
  return Scanner(text, max_depth, out).Run();
}

std::string CompactJson(std::string_view json, size_t max_chars) {
  std::string out;
  bool in_string = false;
  for (size_t i = 0; i < json.size() && out.size() <= max_chars; ++i) {
    const char c = json[i];
    if (in_string) {
      out.push_back(c);
      if (c == '\\' && i + 1 < json.size()) {
        out.push_back(json[++i]);
      } else if (c == '"') {
        in_string = false;
      }
    } else if (!IsWhitespace(c)) {
      out.push_back(c);
      in_string = c == '"';
    }
  }
  return out;
}

}  // namespace safetensors_header
}  // namespace loramux
