// The values a chat template computes with, shaped after Python's as Jinja2 sees them:
// undefined, None, bool, int (64-bit), float, str (UTF-8, indexed by code point), list/tuple,
// dict (string keys, insertion order kept, as Python's dict), namespace and callables.
// Lists and dicts are shared by reference (shared_ptr), as in Python; templates never mutate
// a list (transformers runs them sandboxed), and only namespaces take attribute assignment.
// Thread-safety: a Value is used by one render at a time; the parsed template keeps only
// scalar literals, which concurrent renders copy.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "text/jinja_error.h"

namespace loramux::jinja {

class Value;
class Interpreter;

// Arguments of a call: positional, then keyword, in the order written.
struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};

using Function = std::function<Value(Interpreter&, CallArgs&)>;

// Insertion-ordered string-keyed map (Python dict semantics for what templates do).
struct Dict {
  std::vector<std::pair<std::string, Value>> items;
  const Value* Find(std::string_view key) const;
  void Set(const std::string& key, Value value);
};

class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kFunction };

  Value() = default;                         // undefined
  static Value Undefined(std::string hint);  // hint: what was missing, for error messages
  static Value None();
  static Value Bool(bool b);
  static Value Int(int64_t i);
  static Value Float(double f);
  static Value String(std::string s);
  static Value List(std::vector<Value> items);
  static Value Tuple(std::vector<Value> items);
  static Value MakeDict(Dict dict);
  static Value Namespace(Dict dict);
  static Value MakeFunction(std::string name, Function fn);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  bool is_int() const { return kind_ == Kind::kInt; }
  bool is_float() const { return kind_ == Kind::kFloat; }
  bool is_number() const { return is_bool() || is_int() || is_float(); }  // Python: bool is an int
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_tuple() const { return kind_ == Kind::kList && tuple_; }
  bool is_dict() const { return kind_ == Kind::kDict && !namespace_; }  // a mapping
  bool is_namespace() const { return kind_ == Kind::kDict && namespace_; }
  bool is_function() const { return kind_ == Kind::kFunction; }

  bool bool_value() const { return b_; }
  int64_t int_value() const { return is_bool() ? (b_ ? 1 : 0) : i_; }
  double number_value() const { return is_float() ? f_ : static_cast<double>(int_value()); }
  const std::string& str() const { return s_; }  // string contents; undefined: the hint
  const std::vector<Value>& list() const { return *list_; }
  const Dict& dict() const { return *dict_; }
  Dict& mutable_namespace() const { return *dict_; }  // namespaces only
  const Function& function() const { return *fn_; }
  const std::string& function_name() const { return s_; }

  // Python truthiness (undefined is falsy).
  bool Truthy() const;
  // Jinja2's Python type name for messages ("str", "int", "list", "dict", "undefined", ...).
  std::string TypeName() const;

 private:
  Kind kind_ = Kind::kUndefined;
  bool b_ = false;
  bool tuple_ = false;
  bool namespace_ = false;
  int64_t i_ = 0;
  double f_ = 0;
  std::string s_;
  std::shared_ptr<const std::vector<Value>> list_;
  std::shared_ptr<Dict> dict_;
  std::shared_ptr<const Function> fn_;
};

// str(value) as Jinja2 prints it: undefined -> "", None -> "None", True -> "True",
// floats as Python's repr, containers as Python's repr.
std::string ToPythonStr(const Value& v);
// repr(value): strings quoted as Python quotes them.
std::string ToPythonRepr(const Value& v);
// Python's repr of a float ("1.0", "0.1", "1e+16").
std::string FloatRepr(double f);

// Python ==, and ordering (<); Compare fails (INVALID_ARGUMENT) on unorderable types.
bool Equal(const Value& a, const Value& b);
bool Less(const Value& a, const Value& b);

// JSON in: objects keep key order. Nesting deeper than kMaxJsonDepth is INVALID_ARGUMENT.
inline constexpr int kMaxJsonDepth = 128;
Value FromJson(const nlohmann::ordered_json& json);

// transformers' tojson: json.dumps(value, ensure_ascii=ensure_ascii (default False), indent=indent,
// separators=separators, sort_keys=sort_keys). indent < 0: none. Undefined and callables fail.
struct JsonOptions {
  int indent = -1;
  std::string item_separator;  // empty: Python's default for the indent setting
  std::string key_separator;
  bool sort_keys = false;
  bool ensure_ascii = false;  // true: non-ASCII as \uXXXX (surrogate pairs past U+FFFF)
};
std::string ToJson(const Value& v, const JsonOptions& options);

}  // namespace loramux::jinja
