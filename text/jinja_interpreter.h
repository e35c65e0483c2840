// Renders a parsed template (text/jinja_ast.h) with Jinja2's semantics as transformers configures
// it (ImmutableSandboxedEnvironment, loop controls, the default Undefined):
//  - an undefined name prints "", is falsy, iterates as empty and has length 0; using it any
//    other way (attribute, item, call, arithmetic) fails INVALID_ARGUMENT naming it;
//  - `for` bodies, macros and call blocks get their own scope (hence namespace());
//  - macros see the template's top-level names (as they are when called) and a copy of the
//    names around their definition (a loop variable, say).
// Every render is bounded by RenderLimits: statements, loop iterations and calls count as steps;
// every string and list built, and the output, are bounded in size; calls nest only so deep.
// Thread-safety: one Interpreter per render (it owns the render's state); the tree it walks is
// only read, so many Interpreters may render one tree at once.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "text/jinja_ast.h"

namespace loramux::jinja {

struct RenderLimits {
  int64_t max_steps = 2'000'000;        // statements + loop iterations + calls
  size_t max_output_bytes = 16u << 20;  // the output, and any one string or list built
  int max_call_depth = 64;              // macro/caller nesting
  int64_t max_range = 100'000;          // range() length, as Jinja2's sandbox MAX_RANGE
  size_t max_built_bytes = 512u << 20;  // all strings and lists built in one render together
                                        // (a list item counts as sizeof(Value) bytes)
};

class Interpreter {
 public:
  // variables: the render's context (messages, add_generation_prompt, bos_token, extras...).
  Interpreter(const RenderLimits& limits, Dict variables);
  // Empties every namespace the render assigned an attribute of: a namespace may have been given
  // itself, or a value holding it (`{% set ns.x = ns %}`), and such a cycle of shared references
  // would otherwise outlive the render (a leak per render).
  ~Interpreter();
  Interpreter(const Interpreter&) = delete;
  Interpreter& operator=(const Interpreter&) = delete;

  // Throws JinjaError (see text/jinja_error.h).
  std::string Render(const StmtList& program);

  // For built-ins: call any callable value; apply a filter or a test by name.
  Value Call(const Value& callee, CallArgs& args);
  Value Filter(const std::string& name, const Value& input, CallArgs& args);
  bool Test(const std::string& name, const Value& input, CallArgs& args);
  // Size checks for values built by built-ins (RESOURCE_EXHAUSTED past the limit).
  void CheckSize(size_t bytes_or_items) const;
  // Checks a newly built string or list (CheckSize) and counts it against max_built_bytes.
  void Account(const Value& v);
  const RenderLimits& limits() const { return limits_; }
  int line() const { return line_; }

 private:
  struct Scope {
    absl::flat_hash_map<std::string, Value> vars;
    Scope* parent = nullptr;
  };
  enum class Flow { kNormal, kBreak, kContinue };

  Flow ExecBody(const StmtList& body, Scope& scope);
  Flow Exec(const Stmt& stmt, Scope& scope);
  void ExecFor(const Stmt& stmt, Scope& scope, Flow& flow);
  void ExecSet(const Stmt& stmt, Scope& scope);
  void DefineMacro(const Stmt& stmt, Scope& scope);
  void ExecCallBlock(const Stmt& stmt, Scope& scope);
  std::string Capture(const StmtList& body, Scope& scope);

  Value Eval(const Expr& expr, Scope& scope);
  Value EvalBinary(const Expr& expr, Scope& scope);
  Value EvalCompareChain(const Expr& expr, Scope& scope);
  bool Compare(const std::string& op, const Value& a, const Value& b) const;
  Value EvalCall(const Expr& expr, Scope& scope);
  Value EvalSlice(const Expr& expr, Scope& scope);
  CallArgs EvalArgs(const Expr& expr, size_t first, Scope& scope);
  Value Lookup(const std::string& name, Scope& scope) const;
  Value CallMacro(const Stmt& macro, const absl::flat_hash_map<std::string, Value>& closure,
                  CallArgs& args, const Value& caller);

  void Step();
  void Emit(const std::string& text);

  RenderLimits limits_;
  Scope root_;
  // Namespaces that took an attribute assignment, once each: only an assignment can close a cycle
  // (at creation a namespace holds values made before it).
  std::vector<Value> assigned_namespaces_;
  absl::flat_hash_set<const Dict*> assigned_;
  std::string* out_ = nullptr;
  int64_t steps_ = 0;
  size_t built_bytes_ = 0;
  int call_depth_ = 0;
  int line_ = 0;
};

}  // namespace loramux::jinja
