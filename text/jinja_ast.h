// The parsed form of a chat template: expression and statement trees, immutable after parsing
// (so any number of renders may walk one tree at once).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "text/jinja_value.h"

namespace loramux::jinja {

struct Expr;
struct Stmt;
using ExprPtr = std::unique_ptr<Expr>;
using StmtList = std::vector<std::unique_ptr<Stmt>>;

struct Expr {
  enum class Kind {
    kLiteral,      // literal (a scalar)
    kName,         // name
    kList,         // [args...]
    kTuple,        // (args...)
    kDict,         // {args[0]: args[1], args[2]: args[3], ...}
    kAttribute,    // args[0].name
    kItem,         // args[0][args[1]]
    kSlice,        // args[0][args[1]:args[2]:args[3]] (null parts omitted)
    kCall,         // args[0](args[1..], keyword...)
    kFilter,       // args[0] | name(args[1..], keyword...)
    kTest,         // args[0] is [not] name(args[1..])
    kUnary,        // op args[0]: "not", "-", "+"
    kBinary,       // args[0] op args[1]: + - * / // % ** ~ and or in "not in" == != < > <= >=
    kConditional,  // args[0] if args[1] else args[2] (args[2] may be null)
    kCompare,      // args[0] ops[0] args[1] ops[1] args[2] ...: a chained comparison
  };
  Kind kind;
  int line = 0;
  Value literal;
  std::string name;      // variable, attribute, filter or test name, or the operator
  bool negated = false;  // kTest: `is not`
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> keyword;
  std::vector<std::string> ops;  // kCompare
};

struct MacroParam {
  std::string name;
  ExprPtr default_value;  // null: none given
};

struct Stmt {
  enum class Kind {
    kText,       // text
    kOutput,     // {{ expr }}
    kIf,         // conditions[i] -> bodies[i]; else_body
    kFor,        // for targets in expr [if condition]: body; else_body
    kSet,        // set targets (or attribute on targets[0]) = expr, or {% set x %}body{% endset %}
    kMacro,      // macro name(params): body
    kCallBlock,  // {% call(params) expr %}body{% endcall %}
    kFilterBlock,  // {% filter f %}body{% endfilter %}: expr is the filter chain on a placeholder
    kBreak,
    kContinue,
  };
  Kind kind;
  int line = 0;
  std::string text;
  ExprPtr expr;
  ExprPtr condition;                 // kFor's `if`
  std::vector<std::string> targets;  // kFor / kSet names (several: tuple unpacking)
  std::string attribute;             // kSet: `set targets[0].attribute = ...`
  std::vector<ExprPtr> conditions;   // kIf
  std::vector<StmtList> bodies;      // kIf
  StmtList body;
  StmtList else_body;
  std::vector<MacroParam> params;  // kMacro, kCallBlock
};

}  // namespace loramux::jinja
