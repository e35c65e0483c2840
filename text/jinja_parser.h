// Parses a chat template into statement trees (text/jinja_ast.h), with Jinja2's grammar and
// operator precedence: conditional < or < and < not < comparisons/in < + - < ~ < * / // % <
// ** < unary - + < postfix (.attr [item] [a:b:c] (call)) and filters/tests (| f, is t).
// Errors (as a JinjaError): syntax INVALID_ARGUMENT with the line; a statement, filter or test
// loramux does not implement FAILED_PRECONDITION naming it. Nesting is bounded (kMaxNesting)
// so a hostile template cannot exhaust the stack.
// Thread-safety: a pure function.
#pragma once

#include <string_view>

#include "text/jinja_ast.h"

namespace loramux::jinja {

inline constexpr int kMaxNesting = 100;

StmtList Parse(std::string_view source);

}  // namespace loramux::jinja
