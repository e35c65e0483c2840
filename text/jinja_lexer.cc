#include "text/jinja_lexer.h"

#include <cctype>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "text/jinja_error.h"
#include "text/jinja_strings.h"

namespace loramux::jinja {
namespace {

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool IsNameStart(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool IsNameChar(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

class Lexer {
 public:
  explicit Lexer(std::string source) : src_(std::move(source)) {}

  std::vector<Token> Run() {
    while (pos_ < src_.size()) {
      const size_t tag = FindTagStart(pos_);
      std::string text = src_.substr(pos_, tag - pos_);
      const int text_line = line_;
      CountLines(pos_, tag);
      if (tag == src_.size()) {
        Emit(Token::Type::kText, std::move(text), text_line);
        break;
      }
      const char kind = src_[tag + 1];  // '{', '%' or '#'
      const char sign = tag + 2 < src_.size() ? src_[tag + 2] : '\0';
      if (sign == '-') {
        text.erase(text.find_last_not_of(" \t\n\r\f\v") + 1);
      } else if (kind != '{' && sign != '+') {
        LstripBlock(text, tag);
      }
      Emit(Token::Type::kText, std::move(text), text_line);
      pos_ = tag + 2 + ((sign == '-' || sign == '+') ? 1 : 0);
      if (kind == '#') {
        SkipComment();
      } else {
        LexTag(kind == '{');
      }
    }
    tokens_.push_back(Token{Token::Type::kEnd, "", line_});
    return std::move(tokens_);
  }

 private:
  size_t FindTagStart(size_t from) const {
    for (size_t i = from; i + 1 < src_.size(); ++i) {
      if (src_[i] == '{' && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) {
        return i;
      }
    }
    return src_.size();
  }

  // lstrip_blocks: only spaces/tabs between the line's start and the tag are removed.
  void LstripBlock(std::string& text, size_t tag) const {
    const size_t newline = text.rfind('\n');
    const size_t line_start = newline == std::string::npos ? 0 : newline + 1;
    const size_t text_start = tag - text.size();
    const bool at_line_start = line_start > 0 || text_start == 0 || src_[text_start - 1] == '\n';
    if (!at_line_start) return;
    if (text.find_first_not_of(" \t", line_start) == std::string::npos) text.erase(line_start);
  }

  void CountLines(size_t from, size_t to) {
    for (size_t i = from; i < to && i < src_.size(); ++i) line_ += src_[i] == '\n';
  }

  void Emit(Token::Type type, std::string text, int line) {
    if (type == Token::Type::kText && text.empty()) return;
    tokens_.push_back(Token{type, std::move(text), line});
  }

  // After a block tag or comment: `-` strips all following whitespace, else trim_blocks
  // removes one newline (unless `+`).
  void AfterBlockEnd(bool minus, bool plus) {
    if (minus) {
      while (pos_ < src_.size() && IsSpace(src_[pos_])) {
        line_ += src_[pos_] == '\n';
        ++pos_;
      }
    } else if (!plus && pos_ < src_.size() && src_[pos_] == '\n') {
      ++line_;
      ++pos_;
    }
  }

  void SkipComment() {
    const size_t end = src_.find("#}", pos_);
    if (end == std::string::npos)
      FailInvalid(absl::StrCat("line ", line_, ": unterminated comment {# ... #}"));
    const bool minus = end > pos_ && src_[end - 1] == '-';
    CountLines(pos_, end);
    pos_ = end + 2;
    AfterBlockEnd(minus, false);
  }

  void LexTag(bool output) {
    const size_t first = tokens_.size();
    tokens_.push_back(
        Token{output ? Token::Type::kOutputBegin : Token::Type::kBlockBegin, "", line_});
    int brace_depth = 0;
    while (true) {
      while (pos_ < src_.size() && IsSpace(src_[pos_])) {
        line_ += src_[pos_] == '\n';
        ++pos_;
      }
      if (pos_ >= src_.size()) {
        FailInvalid(
            absl::StrCat("line ", line_, ": unterminated ", output ? "{{ ... }}" : "{% ... %}"));
      }
      const char end_char = output ? '}' : '%';
      auto closes_at = [&](size_t at) {
        return at + 1 < src_.size() && src_[at] == end_char && src_[at + 1] == '}' &&
               (output ? brace_depth == 0 : true);
      };
      const char c = src_[pos_];
      if ((c == '-' || c == '+') && closes_at(pos_ + 1)) {
        pos_ += 3;
        tokens_.push_back(
            Token{output ? Token::Type::kOutputEnd : Token::Type::kBlockEnd, "", line_});
        if (!output)
          AfterBlockEnd(c == '-', c == '+');
        else if (c == '-')
          AfterBlockEnd(true, false);
        break;
      }
      if (closes_at(pos_)) {
        pos_ += 2;
        tokens_.push_back(
            Token{output ? Token::Type::kOutputEnd : Token::Type::kBlockEnd, "", line_});
        if (!output) AfterBlockEnd(false, false);
        break;
      }
      if (c == '{') ++brace_depth;
      if (c == '}') --brace_depth;
      LexOne();
    }
    if (!output && tokens_.size() == first + 3 && tokens_[first + 1].type == Token::Type::kName &&
        tokens_[first + 1].text == "raw") {
      tokens_.resize(first);
      LexRaw();
    }
  }

  // {% raw %}: everything up to {% endraw %} is text.
  void LexRaw() {
    size_t search = pos_;
    while (true) {
      const size_t open = src_.find("{%", search);
      if (open == std::string::npos)
        FailInvalid(absl::StrCat("line ", line_, ": {% raw %} without {% endraw %}"));
      size_t i = open + 2;
      const bool minus_before = i < src_.size() && src_[i] == '-';
      if (i < src_.size() && (src_[i] == '-' || src_[i] == '+')) ++i;
      while (i < src_.size() && IsSpace(src_[i])) ++i;
      if (src_.compare(i, 6, "endraw") != 0) {
        search = open + 2;
        continue;
      }
      i += 6;
      while (i < src_.size() && IsSpace(src_[i])) ++i;
      const bool minus_after = i < src_.size() && src_[i] == '-';
      if (i < src_.size() && (src_[i] == '-' || src_[i] == '+')) ++i;
      if (src_.compare(i, 2, "%}") != 0) {
        search = open + 2;
        continue;
      }
      std::string text = src_.substr(pos_, open - pos_);
      if (minus_before) text.erase(text.find_last_not_of(" \t\n\r\f\v") + 1);
      const int text_line = line_;
      CountLines(pos_, i + 2);
      Emit(Token::Type::kText, std::move(text), text_line);
      pos_ = i + 2;
      AfterBlockEnd(minus_after, false);
      return;
    }
  }

  void LexOne() {
    const char c = src_[pos_];
    if (IsNameStart(c)) {
      size_t end = pos_;
      while (end < src_.size() && IsNameChar(src_[end])) ++end;
      tokens_.push_back(Token{Token::Type::kName, src_.substr(pos_, end - pos_), line_});
      pos_ = end;
      return;
    }
    if (IsDigit(c)) {
      LexNumber();
      return;
    }
    if (c == '\'' || c == '"') {
      LexString(c);
      return;
    }
    static const char* kTwoChar[] = {"**", "//", "==", "!=", "<=", ">="};
    for (const char* op : kTwoChar) {
      if (src_.compare(pos_, 2, op) == 0) {
        tokens_.push_back(Token{Token::Type::kOperator, op, line_});
        pos_ += 2;
        return;
      }
    }
    if (std::string_view("+-*/%~<>=()[]{},.:|").find(c) != std::string_view::npos) {
      tokens_.push_back(Token{Token::Type::kOperator, std::string(1, c), line_});
      ++pos_;
      return;
    }
    FailInvalid(
        absl::StrCat("line ", line_, ": unexpected character '", std::string(1, c), "' in a tag"));
  }

  void LexNumber() {
    size_t end = pos_;
    auto digits = [&] {
      while (end < src_.size() &&
             (IsDigit(src_[end]) ||
              (src_[end] == '_' && end + 1 < src_.size() && IsDigit(src_[end + 1]))))
        ++end;
    };
    digits();
    bool is_float = false;
    const bool after_dot = !tokens_.empty() && tokens_.back().type == Token::Type::kOperator &&
                           tokens_.back().text == ".";
    if (!after_dot && end + 1 < src_.size() && src_[end] == '.' && IsDigit(src_[end + 1])) {
      is_float = true;
      ++end;
      digits();
    }
    if (!after_dot && end < src_.size() && (src_[end] == 'e' || src_[end] == 'E')) {
      size_t e = end + 1;
      if (e < src_.size() && (src_[e] == '+' || src_[e] == '-')) ++e;
      if (e < src_.size() && IsDigit(src_[e])) {
        is_float = true;
        end = e;
        digits();
      }
    }
    std::string text;
    for (size_t i = pos_; i < end; ++i) {
      if (src_[i] != '_') text.push_back(src_[i]);
    }
    tokens_.push_back(Token{is_float ? Token::Type::kFloat : Token::Type::kInteger, text, line_});
    pos_ = end;
  }

  // Python string literal escapes (as Jinja2 decodes them); unknown escapes stay as written.
  void LexString(char quote) {
    std::string value;
    const int start_line = line_;
    size_t i = pos_ + 1;
    while (true) {
      if (i >= src_.size())
        FailInvalid(absl::StrCat("line ", start_line, ": unterminated string literal"));
      const char c = src_[i];
      if (c == quote) break;
      if (c == '\n') ++line_;
      if (c != '\\' || i + 1 >= src_.size()) {
        value.push_back(c);
        ++i;
        continue;
      }
      const char e = src_[i + 1];
      i += 2;
      switch (e) {
        case 'n': value.push_back('\n'); break;
        case 't': value.push_back('\t'); break;
        case 'r': value.push_back('\r'); break;
        case 'b': value.push_back('\b'); break;
        case 'f': value.push_back('\f'); break;
        case 'v': value.push_back('\v'); break;
        case 'a': value.push_back('\a'); break;
        case '0': value.push_back('\0'); break;
        case '\\': value.push_back('\\'); break;
        case '\'': value.push_back('\''); break;
        case '"': value.push_back('"'); break;
        case '\n': ++line_; break;  // line continuation
        case 'x':
        case 'u':
        case 'U': {
          const size_t n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          if (i + n > src_.size())
            FailInvalid(
                absl::StrCat("line ", line_, ": truncated \\", std::string(1, e), " escape"));
          uint32_t cp = 0;
          for (size_t k = 0; k < n; ++k) {
            const char h = src_[i + k];
            if (!std::isxdigit(static_cast<unsigned char>(h))) {
              FailInvalid(absl::StrCat("line ", line_, ": bad \\", std::string(1, e), " escape"));
            }
            cp = cp * 16 + (IsDigit(h) ? h - '0' : (std::tolower(h) - 'a' + 10));
          }
          if (cp > 0x10FFFF) FailInvalid(absl::StrCat("line ", line_, ": escape beyond U+10FFFF"));
          // Python keeps a surrogate in a str but cannot encode it as UTF-8 (nor can the tokenizer
          // take it): refused here, so every template renders valid UTF-8.
          if (cp >= 0xD800 && cp <= 0xDFFF) {
            FailInvalid(absl::StrFormat(
                "line %d: escape of a surrogate (U+%04X): not a character, UTF-8 cannot encode it",
                line_, cp));
          }
          AppendUtf8(cp, value);
          i += n;
          break;
        }
        default: value.push_back('\\'); value.push_back(e);
      }
    }
    tokens_.push_back(Token{Token::Type::kString, std::move(value), start_line});
    pos_ = i + 1;
  }

  std::string src_;
  size_t pos_ = 0;
  int line_ = 1;
  std::vector<Token> tokens_;
};

std::string Normalize(std::string_view source) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out.push_back('\n');
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out.push_back(source[i]);
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();  // keep_trailing_newline=False
  return out;
}

}  // namespace

std::vector<Token> Tokenize(std::string_view source) { return Lexer(Normalize(source)).Run(); }

}  // namespace loramux::jinja
