// Splits a Jinja template into tokens, applying whitespace control exactly as transformers'
// environment does: trim_blocks (the newline right after a block tag or comment goes),
// lstrip_blocks (spaces and tabs from a line's start up to a block tag or comment go),
// `{%-`/`-%}`/`{{-`/`-}}`/`{#-`/`-#}` (all whitespace on that side goes), `{%+` (keeps the
// indentation), keep_trailing_newline off (one final newline of the source goes), newlines
// normalised to "\n". Comments produce no token; `{% raw %}...{% endraw %}` becomes text.
// Thread-safety: a pure function.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace loramux::jinja {

struct Token {
  enum class Type {
    kText,         // literal output between tags; text holds it
    kOutputBegin,  // {{
    kOutputEnd,    // }}
    kBlockBegin,   // {%
    kBlockEnd,     // %}
    kName,         // identifiers and keywords (and, or, not, in, is, if, else, true, ...)
    kString,       // a string literal; text holds the unescaped value
    kInteger,      // text holds the digits
    kFloat,        // text holds the literal
    kOperator,     // + - * / // % ** ~ == != < > <= >= = ( ) [ ] { } , . : |
    kEnd,
  };
  Type type;
  std::string text;
  int line = 1;
};

// Fails with INVALID_ARGUMENT (a JinjaError) on unterminated tags, strings or comments.
std::vector<Token> Tokenize(std::string_view source);

}  // namespace loramux::jinja
