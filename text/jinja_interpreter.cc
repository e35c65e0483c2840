#include "text/jinja_interpreter.h"

#include <cmath>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "text/jinja_builtins.h"
#include "text/jinja_strings.h"

namespace loramux::jinja {
namespace {

std::string UndefinedHint(const Value& v) {
  return v.str().empty() ? std::string("a value is undefined") : v.str();
}

std::string ObjectName(const Value& v) { return "'" + v.TypeName() + " object'"; }

// Python's slice.indices: clamps start/stop for a sequence of length n.
void SliceIndices(int64_t n, const Value& start_v, const Value& stop_v, const Value& step_v,
                  int64_t& start, int64_t& stop, int64_t& step) {
  auto as_int = [](const Value& v, const char* what) {
    if (!v.is_int() && !v.is_bool())
      FailInvalid(std::string("slice ") + what + " must be an integer or none");
    return v.int_value();
  };
  step = step_v.is_none() || step_v.is_undefined() ? 1 : as_int(step_v, "step");
  if (step == 0) FailInvalid("slice step cannot be zero");
  auto clamp = [&](const Value& v, int64_t default_value) {
    if (v.is_none() || v.is_undefined()) return default_value;
    int64_t i = as_int(v, "index");
    if (i < 0) {
      i += n;
      if (i < 0) i = step < 0 ? -1 : 0;
    } else if (i >= n) {
      i = step < 0 ? n - 1 : n;
    }
    return i;
  };
  start = clamp(start_v, step < 0 ? n - 1 : 0);
  stop = clamp(stop_v, step < 0 ? -1 : n);
}

template <typename T>
std::vector<T> SliceVector(const std::vector<T>& items, const Value& a, const Value& b,
                           const Value& c) {
  int64_t start, stop, step;
  SliceIndices(static_cast<int64_t>(items.size()), a, b, c, start, stop, step);
  std::vector<T> out;
  if (step > 0) {
    for (int64_t i = start; i < stop; i += step) out.push_back(items[i]);
  } else {
    for (int64_t i = start; i > stop; i += step) out.push_back(items[i]);
  }
  return out;
}

int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

}  // namespace

Interpreter::Interpreter(const RenderLimits& limits, Dict variables) : limits_(limits) {
  for (auto& [name, value] : variables.items) root_.vars[name] = std::move(value);
}

Interpreter::~Interpreter() {
  for (const Value& ns : assigned_namespaces_) ns.mutable_namespace().items.clear();
}

std::string Interpreter::Render(const StmtList& program) {
  std::string out;
  out_ = &out;
  try {
    ExecBody(program, root_);
  } catch (JinjaError& e) {
    out_ = nullptr;
    // Prefix the line for errors raised without one (built-ins, type errors).
    if (e.status.code() == absl::StatusCode::kInvalidArgument &&
        !absl::StartsWith(e.status.message(), "chat template") &&
        !absl::StartsWith(e.status.message(), std::string(kRaisedPrefix))) {
      e.status = absl::InvalidArgumentError(
          absl::StrCat("chat template failed at line ", line_, ": ", e.status.message()));
    }
    throw;
  }
  out_ = nullptr;
  return out;
}

void Interpreter::Step() {
  if (++steps_ > limits_.max_steps) {
    Fail(
        absl::StatusCode::kResourceExhausted,
        absl::StrCat("chat template ran more than ", limits_.max_steps,
                     " steps (statements, loop iterations and calls); the conversation is too long "
                     "or the template does not terminate"));
  }
}

void Interpreter::CheckSize(size_t n) const {
  if (n > limits_.max_output_bytes) {
    Fail(absl::StatusCode::kResourceExhausted,
         absl::StrCat("chat template built a value or output larger than ",
                      limits_.max_output_bytes, " bytes/items (line ", line_, ")"));
  }
}

void Interpreter::Account(const Value& v) {
  size_t bytes = 0;
  if (v.is_string()) {
    CheckSize(v.str().size());
    bytes = v.str().size();
  } else if (v.is_list()) {
    CheckSize(v.list().size());
    bytes = v.list().size() * sizeof(Value);
  }
  built_bytes_ += bytes;
  if (built_bytes_ > limits_.max_built_bytes) {
    Fail(absl::StatusCode::kResourceExhausted,
         absl::StrCat("chat template built more than ", limits_.max_built_bytes,
                      " bytes of strings and lists in one render (line ", line_, ")"));
  }
}

void Interpreter::Emit(const std::string& text) {
  out_->append(text);
  CheckSize(out_->size());
}

std::string Interpreter::Capture(const StmtList& body, Scope& scope) {
  std::string captured;
  std::string* saved = out_;
  out_ = &captured;
  try {
    ExecBody(body, scope);
  } catch (...) {
    out_ = saved;
    throw;
  }
  out_ = saved;
  return captured;
}

Interpreter::Flow Interpreter::ExecBody(const StmtList& body, Scope& scope) {
  for (const auto& stmt : body) {
    const Flow flow = Exec(*stmt, scope);
    if (flow != Flow::kNormal) return flow;
  }
  return Flow::kNormal;
}

Interpreter::Flow Interpreter::Exec(const Stmt& stmt, Scope& scope) {
  Step();
  line_ = stmt.line;
  switch (stmt.kind) {
    case Stmt::Kind::kText: Emit(stmt.text); return Flow::kNormal;
    case Stmt::Kind::kOutput: Emit(ToPythonStr(Eval(*stmt.expr, scope))); return Flow::kNormal;
    case Stmt::Kind::kIf:
      for (size_t i = 0; i < stmt.conditions.size(); ++i) {
        if (Eval(*stmt.conditions[i], scope).Truthy()) return ExecBody(stmt.bodies[i], scope);
      }
      return ExecBody(stmt.else_body, scope);
    case Stmt::Kind::kFor: {
      Flow flow = Flow::kNormal;
      ExecFor(stmt, scope, flow);
      return Flow::kNormal;
    }
    case Stmt::Kind::kSet: ExecSet(stmt, scope); return Flow::kNormal;
    case Stmt::Kind::kMacro: DefineMacro(stmt, scope); return Flow::kNormal;
    case Stmt::Kind::kCallBlock: ExecCallBlock(stmt, scope); return Flow::kNormal;
    case Stmt::Kind::kFilterBlock: {
      Scope inner;
      inner.parent = &scope;
      inner.vars[""] = Value::String(Capture(stmt.body, scope));
      Emit(ToPythonStr(Eval(*stmt.expr, inner)));
      return Flow::kNormal;
    }
    case Stmt::Kind::kBreak: return Flow::kBreak;
    case Stmt::Kind::kContinue: return Flow::kContinue;
  }
  return Flow::kNormal;
}

namespace {

template <typename Map>
void Bind(const std::vector<std::string>& targets, const Value& item, Map& vars) {
  if (targets.size() == 1) {
    vars[targets[0]] = item;
    return;
  }
  if (!item.is_list() || item.list().size() != targets.size()) {
    FailInvalid(
        absl::StrCat("cannot unpack ", item.TypeName(), " into ", targets.size(), " names"));
  }
  for (size_t i = 0; i < targets.size(); ++i) vars[targets[i]] = item.list()[i];
}

}  // namespace

void Interpreter::ExecFor(const Stmt& stmt, Scope& scope, Flow& flow) {
  const Value iterable = Eval(*stmt.expr, scope);
  if (iterable.is_undefined() && !iterable.str().empty()) {
    // Jinja2 iterates an undefined value as empty; nothing to report.
  }
  std::vector<Value> items = Iterate(iterable);
  if (stmt.condition != nullptr) {
    std::vector<Value> kept;
    for (auto& item : items) {
      Step();
      Scope filter_scope;
      filter_scope.parent = &scope;
      Bind(stmt.targets, item, filter_scope.vars);
      if (Eval(*stmt.condition, filter_scope).Truthy()) kept.push_back(std::move(item));
    }
    items = std::move(kept);
  }
  const int64_t n = static_cast<int64_t>(items.size());
  for (int64_t i = 0; i < n; ++i) {
    Step();
    Scope body;
    body.parent = &scope;
    Bind(stmt.targets, items[i], body.vars);
    Dict loop;
    loop.Set("index", Value::Int(i + 1));
    loop.Set("index0", Value::Int(i));
    loop.Set("revindex", Value::Int(n - i));
    loop.Set("revindex0", Value::Int(n - i - 1));
    loop.Set("first", Value::Bool(i == 0));
    loop.Set("last", Value::Bool(i == n - 1));
    loop.Set("length", Value::Int(n));
    loop.Set("depth", Value::Int(1));
    loop.Set("depth0", Value::Int(0));
    loop.Set("previtem", i > 0 ? items[i - 1] : Value::Undefined("there is no previous item"));
    loop.Set("nextitem", i + 1 < n ? items[i + 1] : Value::Undefined("there is no next item"));
    loop.Set("cycle", Value::MakeFunction("loop.cycle", [i](Interpreter&, CallArgs& args) {
               if (args.positional.empty()) FailInvalid("loop.cycle() needs at least one argument");
               return args.positional[static_cast<size_t>(i) % args.positional.size()];
             }));
    loop.Set("changed", Value::MakeFunction("loop.changed", [](Interpreter&, CallArgs&) -> Value {
               FailNotImplemented("loop.changed()");
             }));
    body.vars["loop"] = Value::Namespace(std::move(loop));
    flow = ExecBody(stmt.body, body);
    if (flow == Flow::kBreak) break;
  }
  flow = Flow::kNormal;
  if (n == 0) ExecBody(stmt.else_body, scope);
}

void Interpreter::ExecSet(const Stmt& stmt, Scope& scope) {
  Value value =
      stmt.expr != nullptr ? Eval(*stmt.expr, scope) : Value::String(Capture(stmt.body, scope));
  if (!stmt.attribute.empty()) {
    const Value target = Lookup(stmt.targets[0], scope);
    if (!target.is_namespace()) {
      FailInvalid("cannot assign attribute '" + stmt.attribute + "' on '" + stmt.targets[0] +
                  "', a " + target.TypeName() + " (only namespace() objects take attributes)");
    }
    Dict& dict = target.mutable_namespace();
    if (assigned_.insert(&dict).second) assigned_namespaces_.push_back(target);
    dict.Set(stmt.attribute, std::move(value));
    return;
  }
  Bind(stmt.targets, value, scope.vars);
}

void Interpreter::DefineMacro(const Stmt& stmt, Scope& scope) {
  const Stmt* macro = &stmt;
  // A macro defined inside a loop or macro closes over the names visible there (a copy: the
  // macro may outlive that scope); top-level names are read at call time, as Jinja2 does.
  auto closure = std::make_shared<absl::flat_hash_map<std::string, Value>>();
  for (const Scope* s = &scope; s != nullptr && s != &root_; s = s->parent) {
    for (const auto& [name, value] : s->vars) closure->emplace(name, value);
  }
  scope.vars[stmt.text] =
      Value::MakeFunction(stmt.text, [macro, closure](Interpreter& in, CallArgs& args) {
        Value caller;
        for (auto it = args.keyword.begin(); it != args.keyword.end(); ++it) {
          if (it->first == "caller") {
            caller = it->second;
            args.keyword.erase(it);
            break;
          }
        }
        return in.CallMacro(*macro, *closure, args, caller);
      });
}

Value Interpreter::CallMacro(const Stmt& macro,
                             const absl::flat_hash_map<std::string, Value>& closure, CallArgs& args,
                             const Value& caller) {
  Step();
  if (++call_depth_ > limits_.max_call_depth) {
    Fail(absl::StatusCode::kResourceExhausted,
         absl::StrCat("chat template macro calls nest deeper than ", limits_.max_call_depth,
                      " (runaway recursion in macro '", macro.text, "'?)"));
  }
  if (args.positional.size() > macro.params.size()) {
    FailInvalid(absl::StrCat("macro '", macro.text, "' takes not more than ", macro.params.size(),
                             " argument(s), got ", args.positional.size()));
  }
  Scope enclosing;
  enclosing.vars = closure;
  enclosing.parent = &root_;
  Scope scope;
  scope.parent = closure.empty() ? &root_ : &enclosing;
  for (size_t i = 0; i < macro.params.size(); ++i) {
    const MacroParam& param = macro.params[i];
    if (i < args.positional.size()) {
      scope.vars[param.name] = args.positional[i];
      continue;
    }
    bool found = false;
    for (auto& [key, value] : args.keyword) {
      if (key == param.name) {
        scope.vars[param.name] = value;
        found = true;
      }
    }
    if (found) continue;
    scope.vars[param.name] = param.default_value != nullptr
                                 ? Eval(*param.default_value, scope)
                                 : Value::Undefined("'" + param.name + "' is undefined");
  }
  for (auto& [key, value] : args.keyword) {
    bool known = false;
    for (const auto& param : macro.params) known = known || param.name == key;
    if (!known) FailInvalid("macro '" + macro.text + "' takes no keyword argument '" + key + "'");
  }
  if (!caller.is_undefined()) scope.vars["caller"] = caller;
  const int saved_line = line_;
  std::string text = Capture(macro.body, scope);
  line_ = saved_line;
  --call_depth_;
  return Value::String(std::move(text));
}

void Interpreter::ExecCallBlock(const Stmt& stmt, Scope& scope) {
  const Expr& call = *stmt.expr;
  const Value callee = Eval(*call.args[0], scope);
  CallArgs args = EvalArgs(call, 1, scope);
  const Stmt* block = &stmt;
  // The names around the call block, copied: `caller` may be stored and called after the block.
  auto closure = std::make_shared<absl::flat_hash_map<std::string, Value>>();
  for (const Scope* s = &scope; s != nullptr && s != &root_; s = s->parent) {
    for (const auto& [name, value] : s->vars) closure->emplace(name, value);
  }
  args.keyword.emplace_back(
      "caller", Value::MakeFunction("caller", [block, closure](Interpreter& in, CallArgs& a) {
        Scope enclosing;
        enclosing.vars = *closure;
        enclosing.parent = &in.root_;
        Scope inner;
        inner.parent = &enclosing;
        for (size_t i = 0; i < block->params.size(); ++i) {
          const MacroParam& p = block->params[i];
          if (i < a.positional.size()) {
            inner.vars[p.name] = a.positional[i];
          } else {
            inner.vars[p.name] = p.default_value != nullptr
                                     ? in.Eval(*p.default_value, inner)
                                     : Value::Undefined("'" + p.name + "' is undefined");
          }
        }
        for (auto& [key, value] : a.keyword) inner.vars[key] = value;
        return Value::String(in.Capture(block->body, inner));
      }));
  Emit(ToPythonStr(Call(callee, args)));
}

Value Interpreter::Lookup(const std::string& name, Scope& scope) const {
  for (const Scope* s = &scope; s != nullptr; s = s->parent) {
    auto it = s->vars.find(name);
    if (it != s->vars.end()) return it->second;
  }
  Value global = GetGlobal(name);
  if (!global.is_undefined()) return global;
  return Value::Undefined("'" + name + "' is undefined");
}

Value Interpreter::Call(const Value& callee, CallArgs& args) {
  if (callee.is_function()) {
    Step();
    return callee.function()(*this, args);
  }
  if (callee.is_undefined()) FailInvalid(UndefinedHint(callee) + " (called as a function)");
  FailInvalid("'" + callee.TypeName() + "' object is not callable");
}

Value Interpreter::Filter(const std::string& name, const Value& input, CallArgs& args) {
  return ApplyFilter(*this, name, input, args);
}

bool Interpreter::Test(const std::string& name, const Value& input, CallArgs& args) {
  return ApplyTest(*this, name, input, args);
}

CallArgs Interpreter::EvalArgs(const Expr& expr, size_t first, Scope& scope) {
  CallArgs args;
  for (size_t i = first; i < expr.args.size(); ++i)
    args.positional.push_back(Eval(*expr.args[i], scope));
  for (const auto& [key, value] : expr.keyword) args.keyword.emplace_back(key, Eval(*value, scope));
  return args;
}

Value Interpreter::Eval(const Expr& expr, Scope& scope) {
  switch (expr.kind) {
    case Expr::Kind::kLiteral: return expr.literal;
    case Expr::Kind::kName: return Lookup(expr.name, scope);
    case Expr::Kind::kList:
    case Expr::Kind::kTuple: {
      std::vector<Value> items;
      for (const auto& e : expr.args) items.push_back(Eval(*e, scope));
      Value list = expr.kind == Expr::Kind::kList ? Value::List(std::move(items))
                                                  : Value::Tuple(std::move(items));
      Account(list);
      return list;
    }
    case Expr::Kind::kDict: {
      Dict dict;
      for (size_t i = 0; i + 1 < expr.args.size(); i += 2) {
        const Value key = Eval(*expr.args[i], scope);
        if (!key.is_string()) FailNotImplemented("dict literals with non-string keys");
        dict.Set(key.str(), Eval(*expr.args[i + 1], scope));
      }
      return Value::MakeDict(std::move(dict));
    }
    case Expr::Kind::kAttribute: {
      const Value object = Eval(*expr.args[0], scope);
      if (object.is_undefined()) {
        FailInvalid(UndefinedHint(object) + " (reading its attribute '" + expr.name + "')");
      }
      if (object.kind() == Value::Kind::kDict) {
        if (object.is_dict()) {
          Value method = GetMethod(object, expr.name);
          if (!method.is_undefined()) return method;
        }
        if (const Value* v = object.dict().Find(expr.name)) return *v;
        return Value::Undefined(ObjectName(object) + " has no attribute '" + expr.name + "'");
      }
      Value method = GetMethod(object, expr.name);
      if (!method.is_undefined()) return method;
      return Value::Undefined(ObjectName(object) + " has no attribute '" + expr.name + "'");
    }
    case Expr::Kind::kItem: {
      const Value object = Eval(*expr.args[0], scope);
      const Value key = Eval(*expr.args[1], scope);
      if (object.is_undefined()) FailInvalid(UndefinedHint(object) + " (reading an item of it)");
      if (object.kind() == Value::Kind::kDict && key.is_string()) {
        if (const Value* v = object.dict().Find(key.str())) return *v;
        if (object.is_dict()) {
          Value method = GetMethod(object, key.str());
          if (!method.is_undefined()) return method;
        }
        return Value::Undefined(ObjectName(object) + " has no attribute '" + key.str() + "'");
      }
      if ((object.is_list() || object.is_string()) && (key.is_int() || key.is_bool())) {
        const int64_t n = object.is_list() ? static_cast<int64_t>(object.list().size())
                                           : static_cast<int64_t>(CountCodePoints(object.str()));
        int64_t i = key.int_value();
        if (i < 0) i += n;
        if (i < 0 || i >= n)
          return Value::Undefined(ObjectName(object) + " has no element " + ToPythonStr(key));
        if (object.is_list()) return object.list()[i];
        std::string c;
        AppendUtf8(DecodeUtf8(object.str())[i], c);
        return Value::String(std::move(c));
      }
      if (key.is_string()) {
        Value method = GetMethod(object, key.str());
        if (!method.is_undefined()) return method;
      }
      return Value::Undefined(ObjectName(object) + " has no element " + ToPythonRepr(key));
    }
    case Expr::Kind::kSlice: return EvalSlice(expr, scope);
    case Expr::Kind::kCall: return EvalCall(expr, scope);
    case Expr::Kind::kFilter: {
      const Value input = Eval(*expr.args[0], scope);
      CallArgs args = EvalArgs(expr, 1, scope);
      line_ = expr.line;
      Value result = ApplyFilter(*this, expr.name, input, args);
      Account(result);
      return result;
    }
    case Expr::Kind::kTest: {
      const Value input = Eval(*expr.args[0], scope);
      CallArgs args = EvalArgs(expr, 1, scope);
      line_ = expr.line;
      return Value::Bool(ApplyTest(*this, expr.name, input, args) != expr.negated);
    }
    case Expr::Kind::kUnary: {
      const Value v = Eval(*expr.args[0], scope);
      if (expr.name == "not") return Value::Bool(!v.Truthy());
      if (v.is_undefined()) FailInvalid(UndefinedHint(v) + " (used with unary " + expr.name + ")");
      if (!v.is_number())
        FailInvalid("bad operand type for unary " + expr.name + ": '" + v.TypeName() + "'");
      if (expr.name == "+") return v.is_float() ? v : Value::Int(v.int_value());
      if (v.is_float()) return Value::Float(-v.number_value());
      if (v.int_value() == INT64_MIN) FailInvalid("integer overflow in unary -");
      return Value::Int(-v.int_value());
    }
    case Expr::Kind::kBinary: return EvalBinary(expr, scope);
    case Expr::Kind::kCompare: return EvalCompareChain(expr, scope);
    case Expr::Kind::kConditional:
      if (Eval(*expr.args[1], scope).Truthy()) return Eval(*expr.args[0], scope);
      if (expr.args[2] == nullptr)
        return Value::Undefined("the conditional expression had no else branch");
      return Eval(*expr.args[2], scope);
  }
  return Value();
}

Value Interpreter::EvalSlice(const Expr& expr, Scope& scope) {
  const Value object = Eval(*expr.args[0], scope);
  Value parts[3];
  for (int i = 0; i < 3; ++i) {
    if (expr.args[i + 1] != nullptr) parts[i] = Eval(*expr.args[i + 1], scope);
  }
  if (object.is_undefined()) FailInvalid(UndefinedHint(object) + " (slicing it)");
  Value slice;
  if (object.is_list()) {
    std::vector<Value> items = SliceVector(object.list(), parts[0], parts[1], parts[2]);
    slice = object.is_tuple() ? Value::Tuple(std::move(items)) : Value::List(std::move(items));
  } else if (object.is_string()) {
    slice = Value::String(
        EncodeUtf8(SliceVector(DecodeUtf8(object.str()), parts[0], parts[1], parts[2])));
  }
  if (!slice.is_undefined()) {
    Account(slice);
    return slice;
  }
  FailInvalid("'" + object.TypeName() + "' object is not subscriptable");
}

Value Interpreter::EvalCall(const Expr& expr, Scope& scope) {
  const Value callee = Eval(*expr.args[0], scope);
  CallArgs args = EvalArgs(expr, 1, scope);
  line_ = expr.line;
  Value result = Call(callee, args);
  Account(result);
  return result;
}

bool Interpreter::Compare(const std::string& op, const Value& a, const Value& b) const {
  if (op == "==") return Equal(a, b);
  if (op == "!=") return !Equal(a, b);
  if (op == "in" || op == "not in") {
    bool found = false;
    if (b.is_string()) {
      if (!a.is_string())
        FailInvalid("'in <string>' requires string as left operand, not " + a.TypeName());
      found = b.str().find(a.str()) != std::string::npos;
    } else if (b.is_list()) {
      for (const Value& item : b.list()) found = found || Equal(a, item);
    } else if (b.kind() == Value::Kind::kDict) {
      found = a.is_string() && b.dict().Find(a.str()) != nullptr;
    } else if (!b.is_undefined()) {
      FailInvalid("argument of type '" + b.TypeName() + "' is not iterable");
    }
    return found == (op == "in");
  }
  for (const Value* v : {&a, &b}) {
    if (v->is_undefined()) FailInvalid(UndefinedHint(*v) + " (used with operator " + op + ")");
  }
  if (op == "<") return Less(a, b);
  if (op == ">") return Less(b, a);
  if (op == "<=") return !Less(b, a);
  return !Less(a, b);  // >=
}

Value Interpreter::EvalCompareChain(const Expr& expr, Scope& scope) {
  Value left = Eval(*expr.args[0], scope);
  for (size_t i = 0; i < expr.ops.size(); ++i) {
    Value right = Eval(*expr.args[i + 1], scope);
    line_ = expr.line;
    if (!Compare(expr.ops[i], left, right)) return Value::Bool(false);
    left = std::move(right);
  }
  return Value::Bool(true);
}

Value Interpreter::EvalBinary(const Expr& expr, Scope& scope) {
  const std::string& op = expr.name;
  const Value a = Eval(*expr.args[0], scope);
  if (op == "and") return a.Truthy() ? Eval(*expr.args[1], scope) : a;
  if (op == "or") return a.Truthy() ? a : Eval(*expr.args[1], scope);
  const Value b = Eval(*expr.args[1], scope);
  line_ = expr.line;
  if (op == "~") {
    Value s = Value::String(ToPythonStr(a) + ToPythonStr(b));
    Account(s);
    return s;
  }
  if (op == "==" || op == "!=" || op == "in" || op == "not in" || op == "<" || op == ">" ||
      op == "<=" || op == ">=") {
    return Value::Bool(Compare(op, a, b));
  }
  for (const Value* v : {&a, &b}) {
    if (v->is_undefined()) FailInvalid(UndefinedHint(*v) + " (used with operator " + op + ")");
  }
  auto type_error = [&]() -> Value {
    if (op == "%" && a.is_string())
      FailNotImplemented("printf-style string formatting (str % value)");
    FailInvalid("unsupported operand type(s) for " + op + ": '" + a.TypeName() + "' and '" +
                b.TypeName() + "'");
  };
  if (op == "+") {
    if (a.is_string() && b.is_string()) {
      CheckSize(a.str().size() + b.str().size());
      Value sum = Value::String(a.str() + b.str());
      Account(sum);
      return sum;
    }
    if (a.is_list() && b.is_list() && a.is_tuple() == b.is_tuple()) {
      CheckSize(a.list().size() + b.list().size());
      std::vector<Value> items = a.list();
      items.insert(items.end(), b.list().begin(), b.list().end());
      Value sum = a.is_tuple() ? Value::Tuple(std::move(items)) : Value::List(std::move(items));
      Account(sum);
      return sum;
    }
  }
  if (op == "*" && (a.is_string() || a.is_list() || b.is_string() || b.is_list())) {
    const Value& seq = (a.is_string() || a.is_list()) ? a : b;
    const Value& count = (a.is_string() || a.is_list()) ? b : a;
    if (!count.is_int() && !count.is_bool()) return type_error();
    const int64_t n = std::max<int64_t>(0, count.int_value());
    const size_t unit = seq.is_string() ? seq.str().size() : seq.list().size();
    if (unit != 0 && static_cast<uint64_t>(n) > limits_.max_output_bytes / unit)
      CheckSize(limits_.max_output_bytes + 1);
    Value product;
    if (seq.is_string()) {
      std::string out;
      for (int64_t i = 0; i < n; ++i) out += seq.str();
      product = Value::String(std::move(out));
    } else {
      std::vector<Value> items;
      for (int64_t i = 0; i < n; ++i)
        items.insert(items.end(), seq.list().begin(), seq.list().end());
      product = seq.is_tuple() ? Value::Tuple(std::move(items)) : Value::List(std::move(items));
    }
    Account(product);
    return product;
  }
  if (!a.is_number() || !b.is_number()) return type_error();
  const bool floats = a.is_float() || b.is_float();
  const double x = a.number_value();
  const double y = b.number_value();
  const int64_t i = a.int_value();
  const int64_t j = b.int_value();
  if (op == "+" || op == "-" || op == "*") {
    if (floats) return Value::Float(op == "+" ? x + y : op == "-" ? x - y : x * y);
    int64_t r = 0;
    const bool overflow = op == "+"   ? __builtin_add_overflow(i, j, &r)
                          : op == "-" ? __builtin_sub_overflow(i, j, &r)
                                      : __builtin_mul_overflow(i, j, &r);
    if (overflow) FailInvalid("integer overflow in '" + op + "'");
    return Value::Int(r);
  }
  if (op == "/" || op == "//" || op == "%") {
    if (y == 0) FailInvalid(op == "/" ? "division by zero" : "integer division or modulo by zero");
    if (op == "/") return Value::Float(x / y);
    if (op == "//") {
      if (floats) return Value::Float(std::floor(x / y));
      if (i == INT64_MIN && j == -1) FailInvalid("integer overflow in '//'");
      return Value::Int(FloorDiv(i, j));
    }
    if (floats) {
      double m = std::fmod(x, y);
      if (m != 0 && ((m < 0) != (y < 0))) m += y;
      return Value::Float(m);
    }
    if (j == -1) return Value::Int(0);
    return Value::Int(i - FloorDiv(i, j) * j);
  }
  if (op == "**") {
    if (floats || j < 0) return Value::Float(std::pow(x, y));
    if (i == 0 || i == 1) return Value::Int(j == 0 ? 1 : i);
    if (i == -1) return Value::Int(j % 2 == 0 ? 1 : -1);
    int64_t result = 1;  // |i| >= 2: at most 63 multiplications before overflow
    for (int64_t k = 0; k < j; ++k) {
      if (__builtin_mul_overflow(result, i, &result)) FailInvalid("integer overflow in '**'");
    }
    return Value::Int(result);
  }
  return type_error();
}

}  // namespace loramux::jinja
