#include "text/jinja_parser.h"

#include <cstdlib>
#include <initializer_list>

#include "absl/strings/str_cat.h"
#include "text/jinja_builtins.h"
#include "text/jinja_lexer.h"

namespace loramux::jinja {
namespace {

using TT = Token::Type;

// Jinja2 statements loramux does not implement (named in the error).
bool IsKnownUnsupportedStatement(const std::string& name) {
  for (const char* s : {"extends", "block", "include", "import", "from", "with", "autoescape", "do",
                        "trans", "pluralize", "print", "endblock", "endwith"}) {
    if (name == s) return true;
  }
  return false;
}

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : t_(std::move(tokens)) {}

  StmtList ParseTemplate() {
    std::string end;
    StmtList body = ParseBody({}, &end);
    return body;
  }

 private:
  // ---- token helpers ----
  const Token& Peek(size_t ahead = 0) const { return t_[std::min(p_ + ahead, t_.size() - 1)]; }
  const Token& Next() {
    const Token& tok = t_[p_];
    if (p_ + 1 < t_.size()) ++p_;
    return tok;
  }
  bool IsOp(const char* op, size_t ahead = 0) const {
    const Token& tok = Peek(ahead);
    return tok.type == TT::kOperator && tok.text == op;
  }
  bool IsName(const char* name, size_t ahead = 0) const {
    const Token& tok = Peek(ahead);
    return tok.type == TT::kName && tok.text == name;
  }
  bool AcceptOp(const char* op) {
    if (!IsOp(op)) return false;
    Next();
    return true;
  }
  bool AcceptName(const char* name) {
    if (!IsName(name)) return false;
    Next();
    return true;
  }
  [[noreturn]] void SyntaxError(const std::string& message) const {
    FailInvalid(absl::StrCat("chat template syntax error at line ", Peek().line, ": ", message));
  }
  static std::string Describe(const Token& tok) {
    switch (tok.type) {
      case TT::kText: return "text";
      case TT::kOutputBegin: return "'{{'";
      case TT::kOutputEnd: return "'}}'";
      case TT::kBlockBegin: return "'{%'";
      case TT::kBlockEnd: return "'%}'";
      case TT::kEnd: return "end of template";
      case TT::kString: return "a string";
      default: return "'" + tok.text + "'";
    }
  }
  void ExpectOp(const char* op) {
    if (!AcceptOp(op)) SyntaxError(absl::StrCat("expected '", op, "', found ", Describe(Peek())));
  }
  void Expect(TT type, const char* what) {
    if (Peek().type != type)
      SyntaxError(absl::StrCat("expected ", what, ", found ", Describe(Peek())));
    Next();
  }
  std::string ExpectName() {
    if (Peek().type != TT::kName) SyntaxError("expected a name, found " + Describe(Peek()));
    return Next().text;
  }
  void ExpectBlockEnd() { Expect(TT::kBlockEnd, "'%}'"); }

  struct DepthGuard {
    explicit DepthGuard(Parser* parser) : p(parser) {
      if (++p->depth_ > kMaxNesting) {
        Fail(absl::StatusCode::kInvalidArgument,
             absl::StrCat("chat template nests deeper than ", kMaxNesting, " levels at line ",
                          p->Peek().line));
      }
    }
    ~DepthGuard() { --p->depth_; }
    Parser* p;
  };

  ExprPtr MakeExpr(Expr::Kind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }

  // ---- statements ----

  // Parses until a block tag named in `stops` (left after its name, in *stop) or the end.
  StmtList ParseBody(std::initializer_list<const char*> stops, std::string* stop) {
    DepthGuard guard(this);
    StmtList body;
    while (true) {
      const Token& tok = Peek();
      if (tok.type == TT::kEnd) {
        if (stops.size() != 0) {
          SyntaxError(
              absl::StrCat("missing {% ", *(stops.end() - 1), " %} (a block was not closed)"));
        }
        return body;
      }
      if (tok.type == TT::kText) {
        auto s = std::make_unique<Stmt>();
        s->kind = Stmt::Kind::kText;
        s->line = tok.line;
        s->text = Next().text;
        body.push_back(std::move(s));
        continue;
      }
      if (tok.type == TT::kOutputBegin) {
        Next();
        auto s = std::make_unique<Stmt>();
        s->kind = Stmt::Kind::kOutput;
        s->line = tok.line;
        s->expr = ParseTuple(/*explicit_parens=*/false);
        Expect(TT::kOutputEnd, "'}}'");
        body.push_back(std::move(s));
        continue;
      }
      if (tok.type != TT::kBlockBegin) SyntaxError("unexpected " + Describe(tok));
      Next();
      const std::string name = Peek().type == TT::kName ? Peek().text : "";
      for (const char* s : stops) {
        if (name == s) {
          Next();
          *stop = name;
          return body;
        }
      }
      ParseStatement(body);
    }
  }

  void ParseStatement(StmtList& body) {
    const int line = Peek().line;
    const std::string name = ExpectName();
    auto s = std::make_unique<Stmt>();
    s->line = line;
    if (name == "if") {
      ParseIf(*s);
    } else if (name == "for") {
      ParseFor(*s);
    } else if (name == "set") {
      ParseSet(*s);
    } else if (name == "macro") {
      ParseMacro(*s);
    } else if (name == "call") {
      ParseCallBlock(*s);
    } else if (name == "filter") {
      ParseFilterBlock(*s);
    } else if (name == "break" || name == "continue") {
      s->kind = name == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue;
      if (loop_depth_ == 0) SyntaxError("{% " + name + " %} outside a for loop");
      ExpectBlockEnd();
    } else if (name == "generation") {
      // transformers' AssistantTracker marks generated spans; the text is unchanged.
      ExpectBlockEnd();
      std::string stop;
      StmtList inner = ParseBody({"endgeneration"}, &stop);
      ExpectBlockEnd();
      for (auto& st : inner) body.push_back(std::move(st));
      return;
    } else if (IsKnownUnsupportedStatement(name)) {
      FailNotImplemented("the {% " + name + " %} statement");
    } else {
      SyntaxError("unknown statement {% " + name + " %}");
    }
    body.push_back(std::move(s));
  }

  void ParseIf(Stmt& s) {
    s.kind = Stmt::Kind::kIf;
    while (true) {
      s.conditions.push_back(ParseTuple(false));
      ExpectBlockEnd();
      std::string stop;
      s.bodies.push_back(ParseBody({"elif", "else", "endif"}, &stop));
      if (stop == "elif") continue;
      if (stop == "else") {
        ExpectBlockEnd();
        s.else_body = ParseBody({"endif"}, &stop);
      }
      ExpectBlockEnd();
      return;
    }
  }

  std::vector<std::string> ParseTargets() {
    std::vector<std::string> targets;
    const bool parens = AcceptOp("(");
    do {
      targets.push_back(ExpectName());
    } while (AcceptOp(","));
    if (parens) ExpectOp(")");
    return targets;
  }

  void ParseFor(Stmt& s) {
    s.kind = Stmt::Kind::kFor;
    s.targets = ParseTargets();
    if (!AcceptName("in")) SyntaxError("expected 'in' in {% for %}");
    s.expr = ParseTuple(false, /*with_condexpr=*/false);
    if (AcceptName("if")) s.condition = ParseExpression();
    if (IsName("recursive")) FailNotImplemented("recursive for loops");
    ExpectBlockEnd();
    std::string stop;
    ++loop_depth_;
    s.body = ParseBody({"else", "endfor"}, &stop);
    --loop_depth_;
    if (stop == "else") {
      ExpectBlockEnd();
      s.else_body = ParseBody({"endfor"}, &stop);
    }
    ExpectBlockEnd();
  }

  void ParseSet(Stmt& s) {
    s.kind = Stmt::Kind::kSet;
    s.targets.push_back(ExpectName());
    if (AcceptOp(".")) {
      s.attribute = ExpectName();
    } else {
      while (AcceptOp(",")) s.targets.push_back(ExpectName());
    }
    if (AcceptOp("=")) {
      s.expr = ParseTuple(false);
      ExpectBlockEnd();
      return;
    }
    if (s.targets.size() != 1 || !s.attribute.empty())
      SyntaxError("a block {% set %} takes one name");
    if (IsOp("|")) FailNotImplemented("filters on a block {% set %}");
    ExpectBlockEnd();
    std::string stop;
    const int saved_loop_depth = loop_depth_;
    s.body = ParseBody({"endset"}, &stop);
    loop_depth_ = saved_loop_depth;
    ExpectBlockEnd();
  }

  void ParseParams(std::vector<MacroParam>& params) {
    ExpectOp("(");
    while (!IsOp(")")) {
      if (!params.empty()) ExpectOp(",");
      if (IsOp(")")) break;
      MacroParam param;
      param.name = ExpectName();
      if (AcceptOp("=")) param.default_value = ParseExpression();
      params.push_back(std::move(param));
    }
    ExpectOp(")");
  }

  void ParseMacro(Stmt& s) {
    s.kind = Stmt::Kind::kMacro;
    s.text = ExpectName();
    ParseParams(s.params);
    ExpectBlockEnd();
    std::string stop;
    const int saved_loop_depth = loop_depth_;
    loop_depth_ = 0;
    ++macro_depth_;
    s.body = ParseBody({"endmacro"}, &stop);
    --macro_depth_;
    loop_depth_ = saved_loop_depth;
    ExpectBlockEnd();
  }

  void ParseCallBlock(Stmt& s) {
    s.kind = Stmt::Kind::kCallBlock;
    if (IsOp("(")) ParseParams(s.params);
    s.expr = ParseExpression();
    if (s.expr->kind != Expr::Kind::kCall) SyntaxError("{% call %} expects a macro call");
    ExpectBlockEnd();
    std::string stop;
    const int saved_loop_depth = loop_depth_;
    loop_depth_ = 0;
    s.body = ParseBody({"endcall"}, &stop);
    loop_depth_ = saved_loop_depth;
    ExpectBlockEnd();
  }

  void ParseFilterBlock(Stmt& s) {
    s.kind = Stmt::Kind::kFilterBlock;
    ExprPtr placeholder = MakeExpr(Expr::Kind::kName, Peek().line);
    placeholder->name = "";  // the body's rendered text
    s.expr = ParseFilterChain(ParseFilter(std::move(placeholder)));
    ExpectBlockEnd();
    std::string stop;
    s.body = ParseBody({"endfilter"}, &stop);
    ExpectBlockEnd();
  }

  // ---- expressions ----

  // A comma list without brackets is a tuple (`{% set a, b = 1, 2 %}`, `{{ 1, 2 }}`).
  ExprPtr ParseTuple(bool explicit_parens, bool with_condexpr = true) {
    const int line = Peek().line;
    std::vector<ExprPtr> items;
    bool trailing_comma = false;
    while (true) {
      if (!items.empty()) {
        if (!AcceptOp(",")) break;
        trailing_comma = true;
        if (IsTupleEnd()) break;
      }
      items.push_back(with_condexpr ? ParseExpression() : ParseOr());
      trailing_comma = false;
      if (!IsOp(",")) break;
    }
    if (items.size() == 1 && !trailing_comma && !IsOp(",")) return std::move(items[0]);
    if (items.empty() && !explicit_parens)
      SyntaxError("expected an expression, found " + Describe(Peek()));
    auto e = MakeExpr(Expr::Kind::kTuple, line);
    e->args = std::move(items);
    return e;
  }
  bool IsTupleEnd() const {
    const Token& tok = Peek();
    return tok.type == TT::kBlockEnd || tok.type == TT::kOutputEnd || IsOp(")") || IsOp("]") ||
           IsName("if") || IsName("in");
  }

  ExprPtr ParseExpression() {
    DepthGuard guard(this);
    ExprPtr expr = ParseOr();
    while (IsName("if")) {
      const int line = Next().line;
      auto e = MakeExpr(Expr::Kind::kConditional, line);
      e->args.push_back(std::move(expr));
      e->args.push_back(ParseOr());
      if (AcceptName("else")) {
        e->args.push_back(ParseExpression());
      } else {
        e->args.push_back(nullptr);
      }
      expr = std::move(e);
    }
    return expr;
  }

  ExprPtr Binary(const std::string& op, ExprPtr left, ExprPtr right, int line) {
    auto e = MakeExpr(Expr::Kind::kBinary, line);
    e->name = op;
    e->args.push_back(std::move(left));
    e->args.push_back(std::move(right));
    return e;
  }

  ExprPtr ParseOr() {
    ExprPtr left = ParseAnd();
    while (IsName("or")) {
      const int line = Next().line;
      left = Binary("or", std::move(left), ParseAnd(), line);
    }
    return left;
  }
  ExprPtr ParseAnd() {
    ExprPtr left = ParseNot();
    while (IsName("and")) {
      const int line = Next().line;
      left = Binary("and", std::move(left), ParseNot(), line);
    }
    return left;
  }
  ExprPtr ParseNot() {
    if (IsName("not")) {
      DepthGuard guard(this);
      const int line = Next().line;
      auto e = MakeExpr(Expr::Kind::kUnary, line);
      e->name = "not";
      e->args.push_back(ParseNot());
      return e;
    }
    return ParseCompare();
  }
  // One comparison is a kBinary; a chain (a < b < c) a kCompare, evaluated as Python does.
  ExprPtr ParseCompare() {
    const int line = Peek().line;
    ExprPtr first = ParseMath1();
    auto chain = MakeExpr(Expr::Kind::kCompare, line);
    chain->args.push_back(std::move(first));
    while (true) {
      std::string op;
      if (IsOp("==") || IsOp("!=") || IsOp("<") || IsOp(">") || IsOp("<=") || IsOp(">=")) {
        op = Next().text;
      } else if (IsName("in")) {
        Next();
        op = "in";
      } else if (IsName("not") && IsName("in", 1)) {
        Next();
        Next();
        op = "not in";
      } else {
        break;
      }
      chain->ops.push_back(std::move(op));
      chain->args.push_back(ParseMath1());
    }
    if (chain->ops.empty()) return std::move(chain->args[0]);
    if (chain->ops.size() == 1) {
      return Binary(chain->ops[0], std::move(chain->args[0]), std::move(chain->args[1]), line);
    }
    return chain;
  }
  ExprPtr ParseMath1() {
    ExprPtr left = ParseConcat();
    while (IsOp("+") || IsOp("-")) {
      const Token& tok = Next();
      left = Binary(tok.text, std::move(left), ParseConcat(), tok.line);
    }
    return left;
  }
  ExprPtr ParseConcat() {
    ExprPtr left = ParseMath2();
    while (IsOp("~")) {
      const int line = Next().line;
      left = Binary("~", std::move(left), ParseMath2(), line);
    }
    return left;
  }
  ExprPtr ParseMath2() {
    ExprPtr left = ParsePow();
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      const Token& tok = Next();
      left = Binary(tok.text, std::move(left), ParsePow(), tok.line);
    }
    return left;
  }
  ExprPtr ParsePow() {
    ExprPtr left = ParseUnary(true);
    while (IsOp("**")) {
      const int line = Next().line;
      left = Binary("**", std::move(left), ParseUnary(true), line);
    }
    return left;
  }
  ExprPtr ParseUnary(bool with_filter) {
    DepthGuard guard(this);
    ExprPtr node;
    if (IsOp("-") || IsOp("+")) {
      const Token& tok = Next();
      node = MakeExpr(Expr::Kind::kUnary, tok.line);
      node->name = tok.text;
      node->args.push_back(ParseUnary(false));
    } else {
      node = ParsePrimary();
    }
    node = ParsePostfix(std::move(node));
    if (with_filter) node = ParseFilterChain(std::move(node));
    return node;
  }

  ExprPtr ParsePrimary() {
    const Token& tok = Peek();
    const int line = tok.line;
    if (tok.type == TT::kName) {
      Next();
      const std::string& n = tok.text;
      auto e = MakeExpr(Expr::Kind::kLiteral, line);
      if (n == "true" || n == "True") {
        e->literal = Value::Bool(true);
      } else if (n == "false" || n == "False") {
        e->literal = Value::Bool(false);
      } else if (n == "none" || n == "None") {
        e->literal = Value::None();
      } else {
        e->kind = Expr::Kind::kName;
        e->name = n;
        if (macro_depth_ > 0 && (n == "varargs" || n == "kwargs")) {
          FailNotImplemented("macros that take extra arguments (varargs/kwargs)");
        }
      }
      return e;
    }
    if (tok.type == TT::kString) {
      std::string s;
      while (Peek().type == TT::kString) s += Next().text;  // adjacent literals concatenate
      auto e = MakeExpr(Expr::Kind::kLiteral, line);
      e->literal = Value::String(std::move(s));
      return e;
    }
    if (tok.type == TT::kInteger) {
      Next();
      auto e = MakeExpr(Expr::Kind::kLiteral, line);
      errno = 0;
      const long long v = std::strtoll(tok.text.c_str(), nullptr, 10);
      if (errno == ERANGE) SyntaxError("integer literal " + tok.text + " is out of range");
      e->literal = Value::Int(v);
      return e;
    }
    if (tok.type == TT::kFloat) {
      Next();
      auto e = MakeExpr(Expr::Kind::kLiteral, line);
      e->literal = Value::Float(std::strtod(tok.text.c_str(), nullptr));
      return e;
    }
    if (AcceptOp("(")) {
      ExprPtr inner = ParseTuple(/*explicit_parens=*/true);
      ExpectOp(")");
      return inner;
    }
    if (AcceptOp("[")) {
      auto e = MakeExpr(Expr::Kind::kList, line);
      while (!IsOp("]")) {
        if (!e->args.empty()) ExpectOp(",");
        if (IsOp("]")) break;
        e->args.push_back(ParseExpression());
      }
      ExpectOp("]");
      return e;
    }
    if (AcceptOp("{")) {
      auto e = MakeExpr(Expr::Kind::kDict, line);
      while (!IsOp("}")) {
        if (!e->args.empty()) ExpectOp(",");
        if (IsOp("}")) break;
        e->args.push_back(ParseExpression());
        ExpectOp(":");
        e->args.push_back(ParseExpression());
      }
      ExpectOp("}");
      return e;
    }
    SyntaxError("expected an expression, found " + Describe(tok));
  }

  ExprPtr ParsePostfix(ExprPtr node) {
    while (true) {
      const int line = Peek().line;
      if (AcceptOp(".")) {
        const Token& tok = Next();
        if (tok.type == TT::kName) {
          auto e = MakeExpr(Expr::Kind::kAttribute, line);
          e->name = tok.text;
          e->args.push_back(std::move(node));
          node = std::move(e);
        } else if (tok.type == TT::kInteger) {  // foo.0 is foo[0]
          auto e = MakeExpr(Expr::Kind::kItem, line);
          auto index = MakeExpr(Expr::Kind::kLiteral, line);
          index->literal = Value::Int(std::strtoll(tok.text.c_str(), nullptr, 10));
          e->args.push_back(std::move(node));
          e->args.push_back(std::move(index));
          node = std::move(e);
        } else {
          SyntaxError("expected an attribute name after '.'");
        }
      } else if (AcceptOp("[")) {
        node = ParseSubscript(std::move(node), line);
      } else if (IsOp("(")) {
        node = ParseCall(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr ParseSubscript(ExprPtr node, int line) {
    ExprPtr parts[3];
    int part = 0;
    bool is_slice = false;
    while (!IsOp("]")) {
      if (AcceptOp(":")) {
        is_slice = true;
        if (++part > 2) SyntaxError("a slice takes at most start:stop:step");
        continue;
      }
      if (parts[part] != nullptr) SyntaxError("expected ':' or ']' in a subscript");
      parts[part] = ParseExpression();
    }
    ExpectOp("]");
    if (!is_slice) {
      if (parts[0] == nullptr) SyntaxError("empty subscript []");
      auto e = MakeExpr(Expr::Kind::kItem, line);
      e->args.push_back(std::move(node));
      e->args.push_back(std::move(parts[0]));
      return e;
    }
    auto e = MakeExpr(Expr::Kind::kSlice, line);
    e->args.push_back(std::move(node));
    for (auto& p : parts) e->args.push_back(std::move(p));
    return e;
  }

  // Fills args (from index `first`) and keyword of `e` from `( ... )`.
  void ParseCallArgs(Expr& e) {
    ExpectOp("(");
    bool first = true;
    while (!IsOp(")")) {
      if (!first) ExpectOp(",");
      first = false;
      if (IsOp(")")) break;
      if (IsOp("*") || IsOp("**")) FailNotImplemented("*args/**kwargs in calls");
      if (Peek().type == TT::kName && IsOp("=", 1)) {
        std::string key = Next().text;
        Next();
        e.keyword.emplace_back(std::move(key), ParseExpression());
      } else {
        if (!e.keyword.empty()) SyntaxError("positional argument after a keyword argument");
        e.args.push_back(ParseExpression());
      }
    }
    ExpectOp(")");
  }

  ExprPtr ParseCall(ExprPtr callee) {
    auto e = MakeExpr(Expr::Kind::kCall, Peek().line);
    e->args.push_back(std::move(callee));
    ParseCallArgs(*e);
    return e;
  }

  // `name` or `name(args)` applied to node (the `|` already read).
  ExprPtr ParseFilter(ExprPtr node) {
    auto e = MakeExpr(Expr::Kind::kFilter, Peek().line);
    e->name = ExpectName();
    while (AcceptOp(".")) e->name += "." + ExpectName();
    if (!IsImplementedFilter(e->name)) FailNotImplemented("filter \"" + e->name + "\"");
    e->args.push_back(std::move(node));
    if (IsOp("(")) ParseCallArgs(*e);
    return e;
  }

  ExprPtr ParseFilterChain(ExprPtr node) {
    while (true) {
      if (AcceptOp("|")) {
        node = ParseFilter(std::move(node));
      } else if (IsName("is")) {
        const int line = Next().line;
        auto e = MakeExpr(Expr::Kind::kTest, line);
        e->negated = AcceptName("not");
        e->name = ExpectName();
        while (AcceptOp(".")) e->name += "." + ExpectName();
        if (!IsImplementedTest(e->name)) FailNotImplemented("test \"" + e->name + "\"");
        e->args.push_back(std::move(node));
        if (IsOp("(")) {
          ParseCallArgs(*e);
        } else if (TestTakesBareArgument()) {
          e->args.push_back(ParsePostfix(ParsePrimary()));
        }
        node = std::move(e);
      } else if (IsOp("(")) {
        node = ParseCall(std::move(node));
      } else {
        return node;
      }
    }
  }
  // `x is divisibleby 3`, `x is sameas none`: one argument without parentheses.
  bool TestTakesBareArgument() const {
    const Token& tok = Peek();
    if (tok.type == TT::kString || tok.type == TT::kInteger || tok.type == TT::kFloat) return true;
    if (IsOp("[") || IsOp("{")) return true;
    if (tok.type != TT::kName) return false;
    for (const char* keyword : {"else", "or", "and", "if", "in", "not", "is"}) {
      if (tok.text == keyword) return false;
    }
    return true;
  }

  std::vector<Token> t_;
  size_t p_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
  int macro_depth_ = 0;
};

}  // namespace

StmtList Parse(std::string_view source) { return Parser(Tokenize(source)).ParseTemplate(); }

}  // namespace loramux::jinja
