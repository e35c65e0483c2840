#include "text/jinja_builtins.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <optional>
#include <unordered_map>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "text/jinja_interpreter.h"
#include "text/jinja_strings.h"

namespace loramux::jinja {
namespace {

// ---- argument helpers ----

// Positional argument `pos`, else keyword `name`, else null.
const Value* FindArg(const CallArgs& args, size_t pos, std::string_view name) {
  if (pos < args.positional.size()) return &args.positional[pos];
  for (const auto& [key, value] : args.keyword) {
    if (key == name) return &value;
  }
  return nullptr;
}
Value Arg(const CallArgs& args, size_t pos, std::string_view name, Value fallback) {
  const Value* v = FindArg(args, pos, name);
  return v != nullptr ? *v : fallback;
}
bool BoolArg(const CallArgs& args, size_t pos, std::string_view name, bool fallback) {
  const Value* v = FindArg(args, pos, name);
  return v != nullptr ? v->Truthy() : fallback;
}
std::optional<std::string> OptionalStringArg(const CallArgs& args, size_t pos,
                                             std::string_view name) {
  const Value* v = FindArg(args, pos, name);
  if (v == nullptr || v->is_none() || v->is_undefined()) return std::nullopt;
  if (!v->is_string())
    FailInvalid(
        absl::StrCat("argument '", std::string(name), "' must be a string, not ", v->TypeName()));
  return v->str();
}
std::string StringArg(const CallArgs& args, size_t pos, std::string_view name) {
  std::optional<std::string> s = OptionalStringArg(args, pos, name);
  if (!s.has_value())
    FailInvalid(absl::StrCat("missing string argument '", std::string(name), "'"));
  return *s;
}
int64_t IntArg(const CallArgs& args, size_t pos, std::string_view name, int64_t fallback) {
  const Value* v = FindArg(args, pos, name);
  if (v == nullptr || v->is_none()) return fallback;
  if (!v->is_int() && !v->is_bool())
    FailInvalid(
        absl::StrCat("argument '", std::string(name), "' must be an integer, not ", v->TypeName()));
  return v->int_value();
}

const std::string& RequireString(const Value& v, std::string_view what) {
  if (!v.is_string()) FailInvalid(std::string(what) + " needs a string, got " + v.TypeName());
  return v.str();
}

}  // namespace

std::vector<Value> Iterate(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined: return {};
    case Value::Kind::kList: return v.list();
    case Value::Kind::kDict: {
      std::vector<Value> keys;
      for (const auto& [k, item] : v.dict().items) keys.push_back(Value::String(k));
      return keys;
    }
    case Value::Kind::kString: {
      std::vector<Value> chars;
      for (uint32_t cp : DecodeUtf8(v.str())) {
        std::string c;
        AppendUtf8(cp, c);
        chars.push_back(Value::String(std::move(c)));
      }
      return chars;
    }
    default: FailInvalid("'" + v.TypeName() + "' object is not iterable");
  }
}

namespace {

// Jinja2's environment.getitem for `attribute=` paths: "a.b.0".
Value GetAttrPath(const Value& item, const std::string& path) {
  Value current = item;
  size_t start = 0;
  while (start <= path.size()) {
    const size_t dot = path.find('.', start);
    const std::string part =
        path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    int64_t index = 0;
    if (current.kind() == Value::Kind::kDict) {
      const Value* v = current.dict().Find(part);
      current = v != nullptr ? *v : Value::Undefined("no attribute '" + part + "'");
    } else if (current.is_list() && absl::SimpleAtoi(part, &index) && index >= 0 &&
               index < static_cast<int64_t>(current.list().size())) {
      current = current.list()[index];
    } else {
      return Value::Undefined(ToPythonStr(current) + " has no attribute '" + part + "'");
    }
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return current;
}

std::string HtmlEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out.push_back(c);
    }
  }
  return out;
}

// Sort key for sort/unique/dictsort/min/max: lowercased strings unless case-sensitive.
Value SortKey(const Value& v, bool case_sensitive) {
  if (!case_sensitive && v.is_string()) return Value::String(PyLower(v.str()));
  return v;
}

Value ToInt(const Value& v, const Value& fallback, int64_t base) {
  if (v.is_int() || v.is_bool()) return Value::Int(v.int_value());
  if (v.is_float()) {
    const double f = v.number_value();
    if (!std::isfinite(f) || std::fabs(f) >= 9.2e18) return fallback;
    return Value::Int(static_cast<int64_t>(f));
  }
  if (v.is_string()) {
    std::string s = PyStrip(v.str(), std::nullopt, true, true);
    std::string digits;
    for (char c : s) {
      if (c != '_') digits.push_back(c);
    }
    errno = 0;
    char* end = nullptr;
    const long long i = std::strtoll(digits.c_str(), &end, static_cast<int>(base));
    if (!digits.empty() && end != nullptr && *end == '\0' && errno == 0) return Value::Int(i);
    double f = 0;
    if (absl::SimpleAtod(s, &f) && std::isfinite(f) && std::fabs(f) < 9.2e18) {
      return Value::Int(static_cast<int64_t>(f));
    }
  }
  return fallback;
}

Value ToFloat(const Value& v, const Value& fallback) {
  if (v.is_number()) return Value::Float(v.number_value());
  if (v.is_string()) {
    double f = 0;
    if (absl::SimpleAtod(PyStrip(v.str(), std::nullopt, true, true), &f)) return Value::Float(f);
  }
  return fallback;
}

double PyRound(double x, int64_t digits) {
  const double scale = std::pow(10.0, static_cast<double>(digits));
  const double scaled = x * scale;
  double r = std::nearbyint(scaled);  // round half to even, as Python's round()
  if (std::fabs(scaled - std::trunc(scaled)) != 0.5) r = std::round(scaled);
  return r / scale;
}

std::string IndentText(const std::string& s, const std::string& indention, bool first, bool blank) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < s.size()) {
    size_t nl = s.find('\n', start);
    if (nl == std::string::npos) nl = s.size();
    std::string line = s.substr(start, nl - start);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(std::move(line));
    start = nl + 1;
  }
  if (lines.empty()) lines.push_back("");
  std::string rv = lines[0];
  for (size_t i = 1; i < lines.size(); ++i) {
    rv += "\n";
    if (blank || !lines[i].empty()) rv += indention;
    rv += lines[i];
  }
  if (first) rv = indention + rv;
  return rv;
}

// ---- filters ----

using FilterFn = std::function<Value(Interpreter&, const Value&, CallArgs&)>;

Value SelectOrReject(Interpreter& in, const Value& input, CallArgs& args, bool select,
                     bool by_attribute) {
  std::string attribute;
  size_t test_pos = 0;
  if (by_attribute) {
    attribute = StringArg(args, 0, "attribute");
    test_pos = 1;
  }
  std::optional<std::string> test;
  if (test_pos < args.positional.size())
    test = RequireString(args.positional[test_pos], "select/reject's test name");
  if (test.has_value() && !IsImplementedTest(*test)) FailNotImplemented("test \"" + *test + "\"");
  CallArgs test_args;
  for (size_t i = test_pos + 1; i < args.positional.size(); ++i)
    test_args.positional.push_back(args.positional[i]);
  std::vector<Value> out;
  for (const Value& item : Iterate(input)) {
    const Value subject = by_attribute ? GetAttrPath(item, attribute) : item;
    CallArgs call_args = test_args;
    const bool passed = test.has_value() ? in.Test(*test, subject, call_args) : subject.Truthy();
    if (passed == select) out.push_back(item);
  }
  return Value::List(std::move(out));
}

Value MapFilter(Interpreter& in, const Value& input, CallArgs& args) {
  std::vector<Value> out;
  if (args.positional.empty()) {
    const std::string attribute = StringArg(args, 99, "attribute");
    const Value* fallback = FindArg(args, 99, "default");
    for (const Value& item : Iterate(input)) {
      Value v = GetAttrPath(item, attribute);
      out.push_back(v.is_undefined() && fallback != nullptr ? *fallback : v);
    }
    return Value::List(std::move(out));
  }
  const std::string filter = RequireString(args.positional[0], "map's filter name");
  if (!IsImplementedFilter(filter)) FailNotImplemented("filter \"" + filter + "\"");
  CallArgs rest;
  rest.positional.assign(args.positional.begin() + 1, args.positional.end());
  rest.keyword = args.keyword;
  for (const Value& item : Iterate(input)) {
    CallArgs call_args = rest;
    out.push_back(in.Filter(filter, item, call_args));
  }
  return Value::List(std::move(out));
}

Value SortFilter(const Value& input, CallArgs& args) {
  const bool reverse = BoolArg(args, 0, "reverse", false);
  const bool case_sensitive = BoolArg(args, 1, "case_sensitive", false);
  const std::optional<std::string> attribute = OptionalStringArg(args, 2, "attribute");
  std::vector<Value> items = Iterate(input);
  std::vector<std::pair<Value, Value>> keyed;
  for (Value& item : items) {
    Value key = attribute.has_value() ? GetAttrPath(item, *attribute) : item;
    keyed.emplace_back(SortKey(key, case_sensitive), std::move(item));
  }
  std::stable_sort(keyed.begin(), keyed.end(), [reverse](const auto& a, const auto& b) {
    return reverse ? Less(b.first, a.first) : Less(a.first, b.first);
  });
  std::vector<Value> out;
  for (auto& [key, item] : keyed) out.push_back(std::move(item));
  return Value::List(std::move(out));
}

Value DictItems(const Value& input) {
  std::vector<Value> out;
  if (input.is_undefined()) return Value::List({});
  if (input.kind() != Value::Kind::kDict)
    FailInvalid("items needs a mapping, got " + input.TypeName());
  for (const auto& [k, v] : input.dict().items) out.push_back(Value::Tuple({Value::String(k), v}));
  return Value::List(std::move(out));
}

Value MinMax(const Value& input, CallArgs& args, bool want_max) {
  const bool case_sensitive = BoolArg(args, 0, "case_sensitive", false);
  const std::optional<std::string> attribute = OptionalStringArg(args, 1, "attribute");
  std::vector<Value> items = Iterate(input);
  if (items.empty())
    return Value::Undefined("no " + std::string(want_max ? "max" : "min") +
                            " of an empty sequence");
  size_t best = 0;
  auto key = [&](size_t i) {
    return SortKey(attribute.has_value() ? GetAttrPath(items[i], *attribute) : items[i],
                   case_sensitive);
  };
  for (size_t i = 1; i < items.size(); ++i) {
    if (want_max ? Less(key(best), key(i)) : Less(key(i), key(best))) best = i;
  }
  return items[best];
}

const std::unordered_map<std::string, FilterFn>& Filters() {
  static const auto* filters = new std::unordered_map<std::string, FilterFn>{
      {"trim",
       [](Interpreter&, const Value& v, CallArgs& a) {
         return Value::String(
             PyStrip(ToPythonStr(v), OptionalStringArg(a, 0, "chars"), true, true));
       }},
      {"length",
       [](Interpreter&, const Value& v, CallArgs&) {
         switch (v.kind()) {
           case Value::Kind::kUndefined: return Value::Int(0);
           case Value::Kind::kString:
             return Value::Int(static_cast<int64_t>(CountCodePoints(v.str())));
           case Value::Kind::kList: return Value::Int(static_cast<int64_t>(v.list().size()));
           case Value::Kind::kDict: return Value::Int(static_cast<int64_t>(v.dict().items.size()));
           default: FailInvalid("object of type '" + v.TypeName() + "' has no len()");
         }
       }},
      {"tojson",
       [](Interpreter&, const Value& v, CallArgs& a) {
         JsonOptions options;
         options.ensure_ascii = BoolArg(a, 99, "ensure_ascii", false);
         const Value indent = Arg(a, 0, "indent", Value::None());
         if (indent.is_int())
           options.indent = static_cast<int>(std::clamp<int64_t>(indent.int_value(), 0, 64));
         else if (!indent.is_none())
           FailNotImplemented("tojson with a non-integer indent");
         const Value separators = Arg(a, 99, "separators", Value::None());
         if (separators.is_list() && separators.list().size() == 2 &&
             separators.list()[0].is_string() && separators.list()[1].is_string()) {
           options.item_separator = separators.list()[0].str();
           options.key_separator = separators.list()[1].str();
         } else if (!separators.is_none()) {
           FailInvalid("tojson separators must be a pair of strings");
         }
         options.sort_keys = BoolArg(a, 99, "sort_keys", false);
         return Value::String(ToJson(v, options));
       }},
      {"join",
       [](Interpreter& in, const Value& v, CallArgs& a) {
         const std::string separator = Arg(a, 0, "d", Value::String("")).str();
         const std::optional<std::string> attribute = OptionalStringArg(a, 1, "attribute");
         std::string out;
         bool first = true;
         for (const Value& item : Iterate(v)) {
           if (!first) out += separator;
           first = false;
           out += ToPythonStr(attribute.has_value() ? GetAttrPath(item, *attribute) : item);
           in.CheckSize(out.size());
         }
         return Value::String(std::move(out));
       }},
      {"first",
       [](Interpreter&, const Value& v, CallArgs&) {
         std::vector<Value> items = Iterate(v);
         return items.empty() ? Value::Undefined("no first item of an empty sequence")
                              : items.front();
       }},
      {"last",
       [](Interpreter&, const Value& v, CallArgs&) {
         std::vector<Value> items = Iterate(v);
         return items.empty() ? Value::Undefined("no last item of an empty sequence")
                              : items.back();
       }},
      {"default",
       [](Interpreter&, const Value& v, CallArgs& a) {
         const bool boolean = BoolArg(a, 1, "boolean", false);
         if (v.is_undefined() || (boolean && !v.Truthy()))
           return Arg(a, 0, "default_value", Value::String(""));
         return v;
       }},
      {"upper", [](Interpreter&, const Value& v,
                   CallArgs&) { return Value::String(PyUpper(ToPythonStr(v))); }},
      {"lower", [](Interpreter&, const Value& v,
                   CallArgs&) { return Value::String(PyLower(ToPythonStr(v))); }},
      {"capitalize", [](Interpreter&, const Value& v,
                        CallArgs&) { return Value::String(PyCapitalize(ToPythonStr(v))); }},
      {"title", [](Interpreter&, const Value& v,
                   CallArgs&) { return Value::String(PyTitle(ToPythonStr(v))); }},
      {"list", [](Interpreter&, const Value& v, CallArgs&) { return Value::List(Iterate(v)); }},
      {"map", MapFilter},
      {"select", [](Interpreter& in, const Value& v,
                    CallArgs& a) { return SelectOrReject(in, v, a, true, false); }},
      {"reject", [](Interpreter& in, const Value& v,
                    CallArgs& a) { return SelectOrReject(in, v, a, false, false); }},
      {"selectattr", [](Interpreter& in, const Value& v,
                        CallArgs& a) { return SelectOrReject(in, v, a, true, true); }},
      {"rejectattr", [](Interpreter& in, const Value& v,
                        CallArgs& a) { return SelectOrReject(in, v, a, false, true); }},
      {"string",
       [](Interpreter&, const Value& v, CallArgs&) { return Value::String(ToPythonStr(v)); }},
      {"int",
       [](Interpreter&, const Value& v, CallArgs& a) {
         return ToInt(v, Arg(a, 0, "default", Value::Int(0)), IntArg(a, 1, "base", 10));
       }},
      {"float", [](Interpreter&, const Value& v,
                   CallArgs& a) { return ToFloat(v, Arg(a, 0, "default", Value::Float(0))); }},
      {"replace",
       [](Interpreter&, const Value& v, CallArgs& a) {
         return Value::String(PyReplace(ToPythonStr(v), StringArg(a, 0, "old"),
                                        StringArg(a, 1, "new"), IntArg(a, 2, "count", -1)));
       }},
      {"round",
       [](Interpreter&, const Value& v, CallArgs& a) {
         if (!v.is_number()) FailInvalid("round needs a number, got " + v.TypeName());
         const int64_t precision = IntArg(a, 0, "precision", 0);
         const std::string method = Arg(a, 1, "method", Value::String("common")).str();
         const double scale = std::pow(10.0, static_cast<double>(precision));
         if (method == "common") return Value::Float(PyRound(v.number_value(), precision));
         if (method == "ceil") return Value::Float(std::ceil(v.number_value() * scale) / scale);
         if (method == "floor") return Value::Float(std::floor(v.number_value() * scale) / scale);
         FailInvalid("round's method must be common, ceil or floor");
       }},
      {"abs",
       [](Interpreter&, const Value& v, CallArgs&) {
         if (v.is_float()) return Value::Float(std::fabs(v.number_value()));
         if (v.is_int() || v.is_bool()) {
           if (v.int_value() == INT64_MIN) FailInvalid("integer overflow in abs");
           return Value::Int(std::llabs(v.int_value()));
         }
         FailInvalid("bad operand type for abs(): '" + v.TypeName() + "'");
       }},
      {"unique",
       [](Interpreter&, const Value& v, CallArgs& a) {
         const bool case_sensitive = BoolArg(a, 0, "case_sensitive", false);
         const std::optional<std::string> attribute = OptionalStringArg(a, 1, "attribute");
         std::vector<Value> out;
         std::vector<Value> seen;
         for (const Value& item : Iterate(v)) {
           Value key = SortKey(attribute.has_value() ? GetAttrPath(item, *attribute) : item,
                               case_sensitive);
           bool duplicate = false;
           for (const Value& s : seen) duplicate = duplicate || Equal(s, key);
           if (duplicate) continue;
           seen.push_back(std::move(key));
           out.push_back(item);
         }
         return Value::List(std::move(out));
       }},
      {"sort", [](Interpreter&, const Value& v, CallArgs& a) { return SortFilter(v, a); }},
      {"items", [](Interpreter&, const Value& v, CallArgs&) { return DictItems(v); }},
      {"dictsort",
       [](Interpreter&, const Value& v, CallArgs& a) {
         const bool case_sensitive = BoolArg(a, 0, "case_sensitive", false);
         const std::string by = Arg(a, 1, "by", Value::String("key")).str();
         const bool reverse = BoolArg(a, 2, "reverse", false);
         if (by != "key" && by != "value") FailInvalid("dictsort's by must be 'key' or 'value'");
         std::vector<Value> items = DictItems(v).list();
         const size_t k = by == "key" ? 0 : 1;
         std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
           const Value kx = SortKey(x.list()[k], case_sensitive);
           const Value ky = SortKey(y.list()[k], case_sensitive);
           return reverse ? Less(ky, kx) : Less(kx, ky);
         });
         return Value::List(std::move(items));
       }},
      {"indent",
       [](Interpreter&, const Value& v, CallArgs& a) {
         const Value width = Arg(a, 0, "width", Value::Int(4));
         std::string indention;
         if (width.is_string()) {
           indention = width.str();
         } else if (width.is_int()) {
           indention.assign(static_cast<size_t>(std::clamp<int64_t>(width.int_value(), 0, 1024)),
                            ' ');
         } else {
           FailInvalid("indent's width must be an integer or a string");
         }
         return Value::String(IndentText(ToPythonStr(v), indention, BoolArg(a, 1, "first", false),
                                         BoolArg(a, 2, "blank", false)));
       }},
      {"safe", [](Interpreter&, const Value& v, CallArgs&) { return v; }},
      {"escape", [](Interpreter&, const Value& v,
                    CallArgs&) { return Value::String(HtmlEscape(ToPythonStr(v))); }},
      {"e", [](Interpreter&, const Value& v,
               CallArgs&) { return Value::String(HtmlEscape(ToPythonStr(v))); }},
      {"attr",
       [](Interpreter&, const Value& v, CallArgs& a) {
         const std::string name = StringArg(a, 0, "name");
         if (v.kind() == Value::Kind::kDict) {
           if (const Value* item = v.dict().Find(name)) return *item;
         }
         return GetMethod(v, name);
       }},
      {"sum",
       [](Interpreter& in, const Value& v, CallArgs& a) {
         const std::optional<std::string> attribute = OptionalStringArg(a, 0, "attribute");
         Value total = Arg(a, 1, "start", Value::Int(0));
         for (const Value& item : Iterate(v)) {
           const Value x = attribute.has_value() ? GetAttrPath(item, *attribute) : item;
           if (!x.is_number() || !total.is_number())
             FailInvalid("sum needs numbers, got " + x.TypeName());
           if (x.is_float() || total.is_float()) {
             total = Value::Float(total.number_value() + x.number_value());
           } else {
             int64_t r;
             if (__builtin_add_overflow(total.int_value(), x.int_value(), &r))
               FailInvalid("integer overflow in sum");
             total = Value::Int(r);
           }
         }
         return total;
       }},
      {"min", [](Interpreter&, const Value& v, CallArgs& a) { return MinMax(v, a, false); }},
      {"max", [](Interpreter&, const Value& v, CallArgs& a) { return MinMax(v, a, true); }},
      {"reverse",
       [](Interpreter&, const Value& v, CallArgs&) {
         if (v.is_string()) {
           std::vector<uint32_t> cps = DecodeUtf8(v.str());
           std::reverse(cps.begin(), cps.end());
           return Value::String(EncodeUtf8(cps));
         }
         std::vector<Value> items = Iterate(v);
         std::reverse(items.begin(), items.end());
         return Value::List(std::move(items));
       }},
  };
  return *filters;
}

const std::unordered_map<std::string, std::string>& FilterAliases() {
  static const auto* aliases =
      new std::unordered_map<std::string, std::string>{{"count", "length"}, {"d", "default"}};
  return *aliases;
}

// ---- tests ----

using TestFn = std::function<bool(Interpreter&, const Value&, CallArgs&)>;

bool IsInteger(const Value& v) { return v.is_int(); }

const std::unordered_map<std::string, TestFn>& Tests() {
  auto compare = [](std::function<bool(const Value&, const Value&)> op) {
    return [op](Interpreter&, const Value& v, CallArgs& a) {
      const Value* other = FindArg(a, 0, "other");
      if (other == nullptr) FailInvalid("comparison test needs an argument");
      return op(v, *other);
    };
  };
  static const auto* tests = new std::unordered_map<std::string, TestFn>{
      {"defined", [](Interpreter&, const Value& v, CallArgs&) { return !v.is_undefined(); }},
      {"undefined", [](Interpreter&, const Value& v, CallArgs&) { return v.is_undefined(); }},
      {"none", [](Interpreter&, const Value& v, CallArgs&) { return v.is_none(); }},
      {"boolean", [](Interpreter&, const Value& v, CallArgs&) { return v.is_bool(); }},
      {"true",
       [](Interpreter&, const Value& v, CallArgs&) { return v.is_bool() && v.bool_value(); }},
      {"false",
       [](Interpreter&, const Value& v, CallArgs&) { return v.is_bool() && !v.bool_value(); }},
      {"integer", [](Interpreter&, const Value& v, CallArgs&) { return IsInteger(v); }},
      {"float", [](Interpreter&, const Value& v, CallArgs&) { return v.is_float(); }},
      {"number", [](Interpreter&, const Value& v, CallArgs&) { return v.is_number(); }},
      {"string", [](Interpreter&, const Value& v, CallArgs&) { return v.is_string(); }},
      {"mapping", [](Interpreter&, const Value& v, CallArgs&) { return v.is_dict(); }},
      {"iterable",
       [](Interpreter&, const Value& v, CallArgs&) {
         return v.is_undefined() || v.is_string() || v.is_list() || v.is_dict();
       }},
      {"sequence", [](Interpreter&, const Value& v,
                      CallArgs&) { return v.is_string() || v.is_list() || v.is_dict(); }},
      {"callable", [](Interpreter&, const Value& v, CallArgs&) { return v.is_function(); }},
      {"even",
       [](Interpreter&, const Value& v, CallArgs&) {
         if (!v.is_int() && !v.is_bool()) FailInvalid("even needs an integer, got " + v.TypeName());
         return v.int_value() % 2 == 0;
       }},
      {"odd",
       [](Interpreter&, const Value& v, CallArgs&) {
         if (!v.is_int() && !v.is_bool()) FailInvalid("odd needs an integer, got " + v.TypeName());
         return v.int_value() % 2 != 0;
       }},
      {"divisibleby",
       [](Interpreter&, const Value& v, CallArgs& a) {
         const int64_t n = IntArg(a, 0, "num", 0);
         if (n == 0) FailInvalid("divisibleby 0");
         if (!v.is_int() && !v.is_bool())
           FailInvalid("divisibleby needs an integer, got " + v.TypeName());
         return v.int_value() % n == 0;
       }},
      {"lower", [](Interpreter&, const Value& v,
                   CallArgs&) { return v.is_string() && PyLower(v.str()) == v.str(); }},
      {"upper", [](Interpreter&, const Value& v,
                   CallArgs&) { return v.is_string() && PyUpper(v.str()) == v.str(); }},
      {"in",
       [](Interpreter&, const Value& v, CallArgs& a) {
         const Value* seq = FindArg(a, 0, "seq");
         if (seq == nullptr) FailInvalid("the in test needs a sequence");
         if (seq->is_string())
           return v.is_string() && seq->str().find(v.str()) != std::string::npos;
         if (seq->kind() == Value::Kind::kDict)
           return v.is_string() && seq->dict().Find(v.str()) != nullptr;
         for (const Value& item : Iterate(*seq)) {
           if (Equal(item, v)) return true;
         }
         return false;
       }},
      {"sameas", compare([](const Value& x, const Value& y) {
         if (x.kind() != y.kind()) return false;
         if (x.is_none() || x.is_undefined()) return true;
         if (x.is_bool()) return x.bool_value() == y.bool_value();
         if (x.is_list()) return &x.list() == &y.list();
         if (x.kind() == Value::Kind::kDict) return &x.dict() == &y.dict();
         return Equal(x, y) && (x.is_int() || x.is_string());
       })},
      {"eq", compare([](const Value& x, const Value& y) { return Equal(x, y); })},
      {"ne", compare([](const Value& x, const Value& y) { return !Equal(x, y); })},
      {"lt", compare([](const Value& x, const Value& y) { return Less(x, y); })},
      {"gt", compare([](const Value& x, const Value& y) { return Less(y, x); })},
      {"le", compare([](const Value& x, const Value& y) { return !Less(y, x); })},
      {"ge", compare([](const Value& x, const Value& y) { return !Less(x, y); })},
  };
  return *tests;
}

const std::unordered_map<std::string, std::string>& TestAliases() {
  static const auto* aliases = new std::unordered_map<std::string, std::string>{
      {"equalto", "eq"},     {"==", "eq"}, {"!=", "ne"}, {"lessthan", "lt"}, {"<", "lt"},
      {"greaterthan", "gt"}, {">", "gt"},  {"<=", "le"}, {">=", "ge"}};
  return *aliases;
}

std::string Canonical(const std::unordered_map<std::string, std::string>& aliases,
                      const std::string& name) {
  auto it = aliases.find(name);
  return it == aliases.end() ? name : it->second;
}

// ---- methods ----

Value Bind(const Value& self, const std::string& qualified,
           std::function<Value(const Value&, CallArgs&)> fn) {
  return Value::MakeFunction(qualified,
                             [self, fn](Interpreter&, CallArgs& args) { return fn(self, args); });
}

std::string PyFormat(const std::string& format, const CallArgs& args) {
  std::string out;
  size_t auto_index = 0;
  for (size_t i = 0; i < format.size(); ++i) {
    const char c = format[i];
    if (c == '{' && i + 1 < format.size() && format[i + 1] == '{') {
      out.push_back('{');
      ++i;
      continue;
    }
    if (c == '}' && i + 1 < format.size() && format[i + 1] == '}') {
      out.push_back('}');
      ++i;
      continue;
    }
    if (c != '{') {
      out.push_back(c);
      continue;
    }
    const size_t close = format.find('}', i);
    if (close == std::string::npos) FailInvalid("str.format: single '{' in the format string");
    const std::string field = format.substr(i + 1, close - i - 1);
    if (field.find_first_of(":!.[") != std::string::npos)
      FailNotImplemented("str.format with format specs or conversions");
    const Value* v = nullptr;
    size_t index = 0;
    if (field.empty()) {
      index = auto_index++;
      v = index < args.positional.size() ? &args.positional[index] : nullptr;
    } else if (absl::SimpleAtoi(field, &index)) {
      v = index < args.positional.size() ? &args.positional[index] : nullptr;
    } else {
      v = FindArg(args, SIZE_MAX, field);
    }
    if (v == nullptr) FailInvalid("str.format: no argument for {" + field + "}");
    out += ToPythonStr(*v);
    i = close;
  }
  return out;
}

bool PrefixTest(const Value& self, const CallArgs& a, bool suffix) {
  const Value* arg = FindArg(a, 0, "prefix");
  if (arg == nullptr) FailInvalid("startswith/endswith needs an argument");
  std::vector<Value> candidates =
      arg->is_tuple() || arg->is_list() ? arg->list() : std::vector<Value>{*arg};
  for (const Value& c : candidates) {
    const std::string& s = RequireString(c, "startswith/endswith");
    if (suffix ? absl::EndsWith(self.str(), s) : absl::StartsWith(self.str(), s)) return true;
  }
  return false;
}

Value StringMethod(const Value& self, const std::string& name) {
  using A = CallArgs;
  const std::string q = "str." + name;
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    const bool left = name != "rstrip";
    const bool right = name != "lstrip";
    return Bind(self, q, [left, right](const Value& s, A& a) {
      return Value::String(PyStrip(s.str(), OptionalStringArg(a, 0, "chars"), left, right));
    });
  }
  if (name == "split") {
    return Bind(self, q, [](const Value& s, A& a) {
      std::optional<std::string> sep = OptionalStringArg(a, 0, "sep");
      if (sep.has_value() && sep->empty()) FailInvalid("str.split: empty separator");
      std::vector<Value> parts;
      for (auto& p : PySplit(s.str(), sep, IntArg(a, 1, "maxsplit", -1)))
        parts.push_back(Value::String(std::move(p)));
      return Value::List(std::move(parts));
    });
  }
  if (name == "startswith" || name == "endswith") {
    const bool suffix = name == "endswith";
    return Bind(self, q,
                [suffix](const Value& s, A& a) { return Value::Bool(PrefixTest(s, a, suffix)); });
  }
  if (name == "replace") {
    return Bind(self, q, [](const Value& s, A& a) {
      return Value::String(PyReplace(s.str(), StringArg(a, 0, "old"), StringArg(a, 1, "new"),
                                     IntArg(a, 2, "count", -1)));
    });
  }
  if (name == "upper")
    return Bind(self, q, [](const Value& s, A&) { return Value::String(PyUpper(s.str())); });
  if (name == "lower")
    return Bind(self, q, [](const Value& s, A&) { return Value::String(PyLower(s.str())); });
  if (name == "title")
    return Bind(self, q, [](const Value& s, A&) { return Value::String(PyTitle(s.str())); });
  if (name == "capitalize")
    return Bind(self, q, [](const Value& s, A&) { return Value::String(PyCapitalize(s.str())); });
  if (name == "find")
    return Bind(self, q, [](const Value& s, A& a) {
      return Value::Int(PyFind(s.str(), StringArg(a, 0, "sub")));
    });
  if (name == "count")
    return Bind(self, q, [](const Value& s, A& a) {
      return Value::Int(PyCount(s.str(), StringArg(a, 0, "sub")));
    });
  if (name == "format")
    return Bind(self, q, [](const Value& s, A& a) { return Value::String(PyFormat(s.str(), a)); });
  if (name == "removeprefix" || name == "removesuffix") {
    const bool suffix = name == "removesuffix";
    return Bind(self, q, [suffix](const Value& s, A& a) {
      const std::string& v = s.str();
      const std::string affix = StringArg(a, 0, suffix ? "suffix" : "prefix");
      if (suffix && absl::EndsWith(v, affix))
        return Value::String(v.substr(0, v.size() - affix.size()));
      if (!suffix && absl::StartsWith(v, affix)) return Value::String(v.substr(affix.size()));
      return s;
    });
  }
  if (name == "join") {
    return Bind(self, q, [](const Value& s, A& a) {
      const Value* items = FindArg(a, 0, "iterable");
      if (items == nullptr) FailInvalid("str.join needs an iterable");
      std::string out;
      bool first = true;
      for (const Value& item : Iterate(*items)) {
        if (!first) out += s.str();
        first = false;
        out += RequireString(item, "str.join");
      }
      return Value::String(std::move(out));
    });
  }
  if (name == "splitlines") {
    return Bind(self, q, [](const Value& s, A&) {
      std::vector<Value> lines;
      size_t start = 0;
      const std::string& str = s.str();
      while (start < str.size()) {
        size_t nl = str.find('\n', start);
        if (nl == std::string::npos) nl = str.size();
        std::string line = str.substr(start, nl - start);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        lines.push_back(Value::String(std::move(line)));
        start = nl + 1;
      }
      return Value::List(std::move(lines));
    });
  }
  if (name == "isdigit" || name == "isspace") {
    const bool digit = name == "isdigit";
    return Bind(self, q, [digit](const Value& s, A&) {
      const std::vector<uint32_t> cps = DecodeUtf8(s.str());
      if (cps.empty()) return Value::Bool(false);
      for (uint32_t cp : cps) {
        if (digit ? !(cp >= '0' && cp <= '9') : !IsPythonSpace(cp)) return Value::Bool(false);
      }
      return Value::Bool(true);
    });
  }
  return Value();
}

Value DictMethod(const Value& self, const std::string& name) {
  using A = CallArgs;
  const std::string q = "dict." + name;
  if (name == "items") return Bind(self, q, [](const Value& d, A&) { return DictItems(d); });
  if (name == "keys") {
    return Bind(self, q, [](const Value& d, A&) {
      std::vector<Value> keys;
      for (const auto& [k, v] : d.dict().items) keys.push_back(Value::String(k));
      return Value::List(std::move(keys));
    });
  }
  if (name == "values") {
    return Bind(self, q, [](const Value& d, A&) {
      std::vector<Value> values;
      for (const auto& [k, v] : d.dict().items) values.push_back(v);
      return Value::List(std::move(values));
    });
  }
  if (name == "get") {
    return Bind(self, q, [](const Value& d, A& a) {
      const Value* key = FindArg(a, 0, "key");
      if (key == nullptr) FailInvalid("dict.get needs a key");
      if (key->is_string()) {
        if (const Value* v = d.dict().Find(key->str())) return *v;
      }
      return Arg(a, 1, "default", Value::None());
    });
  }
  return Value();
}

Value ListMethod(const Value& self, const std::string& name) {
  using A = CallArgs;
  if (name == "index" || name == "count") {
    const bool index = name == "index";
    return Bind(self, "list." + name, [index](const Value& l, A& a) {
      const Value* x = FindArg(a, 0, "value");
      if (x == nullptr)
        FailInvalid("list." + std::string(index ? "index" : "count") + " needs a value");
      int64_t n = 0;
      for (size_t i = 0; i < l.list().size(); ++i) {
        if (!Equal(l.list()[i], *x)) continue;
        if (index) return Value::Int(static_cast<int64_t>(i));
        ++n;
      }
      if (index) FailInvalid(ToPythonRepr(*x) + " is not in list");
      return Value::Int(n);
    });
  }
  return Value();
}

// Methods that mutate a list or dict: transformers' ImmutableSandboxedEnvironment refuses them.
bool IsMutatingMethod(const Value& self, const std::string& name) {
  static const char* kDict[] = {"pop", "popitem", "setdefault", "update", "clear"};
  static const char* kList[] = {"append", "extend",  "insert", "pop",
                                "remove", "reverse", "sort",   "clear"};
  auto in = [&](const auto& names) {
    for (const char* n : names) {
      if (name == n) return true;
    }
    return false;
  };
  return (self.is_dict() && in(kDict)) || (self.is_list() && in(kList));
}

// Python methods loramux does not implement: calling one fails naming it, never silently.
bool IsKnownPythonMethod(const Value& self, const std::string& name) {
  static const char* kStr[] = {
      "casefold",  "center",      "encode",   "expandtabs", "format_map",   "index",
      "isalnum",   "isalpha",     "isascii",  "isdecimal",  "isidentifier", "islower",
      "isnumeric", "isprintable", "istitle",  "isupper",    "ljust",        "partition",
      "rfind",     "rindex",      "rjust",    "rpartition", "rsplit",       "swapcase",
      "translate", "zfill",       "maketrans"};
  static const char* kDict[] = {"copy",       "fromkeys", "pop",  "popitem",
                                "setdefault", "update",   "clear"};
  static const char* kList[] = {"copy",   "append",  "extend", "insert", "pop",
                                "remove", "reverse", "sort",   "clear"};
  auto in = [&](const auto& names) {
    for (const char* n : names) {
      if (name == n) return true;
    }
    return false;
  };
  if (self.is_string()) return in(kStr);
  if (self.is_dict()) return in(kDict);
  if (self.is_list()) return in(kList);
  return false;
}

Value Strftime(const std::string& format) {
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char buf[512];
  const size_t n = std::strftime(buf, sizeof buf, format.c_str(), &local);
  if (n == 0 && !format.empty()) FailInvalid("strftime_now: format too long or empty result");
  return Value::String(std::string(buf, n));
}

}  // namespace

bool IsImplementedFilter(std::string_view name) {
  const std::string n = Canonical(FilterAliases(), std::string(name));
  return Filters().count(n) != 0;
}

bool IsImplementedTest(std::string_view name) {
  const std::string n = Canonical(TestAliases(), std::string(name));
  return Tests().count(n) != 0;
}

Value ApplyFilter(Interpreter& in, const std::string& name, const Value& input, CallArgs& args) {
  auto it = Filters().find(Canonical(FilterAliases(), name));
  if (it == Filters().end()) FailNotImplemented("filter \"" + name + "\"");
  return it->second(in, input, args);
}

bool ApplyTest(Interpreter& in, const std::string& name, const Value& input, CallArgs& args) {
  auto it = Tests().find(Canonical(TestAliases(), name));
  if (it == Tests().end()) FailNotImplemented("test \"" + name + "\"");
  return it->second(in, input, args);
}

Value GetMethod(const Value& object, const std::string& name) {
  Value method;
  if (object.is_string()) method = StringMethod(object, name);
  if (object.is_dict()) method = DictMethod(object, name);
  if (object.is_list()) method = ListMethod(object, name);
  if (!method.is_undefined()) return method;
  if (IsMutatingMethod(object, name)) {
    const std::string what = object.TypeName() + "." + name;
    return Value::MakeFunction(what, [what](Interpreter&, CallArgs&) -> Value {
      Fail(absl::StatusCode::kFailedPrecondition,
           "chat template calls " + what +
               "(), which transformers' sandbox forbids (templates may not "
               "modify lists or dicts); fix the model's chat template");
    });
  }
  if (IsKnownPythonMethod(object, name)) {
    const std::string what = "the " + object.TypeName() + " method \"" + name + "\"";
    return Value::MakeFunction(
        object.TypeName() + "." + name,
        [what](Interpreter&, CallArgs&) -> Value { FailNotImplemented(what); });
  }
  return Value();
}

Value GetGlobal(const std::string& name) {
  if (name == "range") {
    return Value::MakeFunction("range", [](Interpreter& in, CallArgs& a) {
      int64_t start = 0, stop = 0, step = 1;
      if (a.positional.size() == 1) {
        stop = IntArg(a, 0, "stop", 0);
      } else if (a.positional.size() == 2 || a.positional.size() == 3) {
        start = IntArg(a, 0, "start", 0);
        stop = IntArg(a, 1, "stop", 0);
        step = IntArg(a, 2, "step", 1);
      } else {
        FailInvalid("range expects 1 to 3 integer arguments");
      }
      if (step == 0) FailInvalid("range() arg 3 must not be zero");
      const double count =
          std::max(0.0, std::ceil((static_cast<double>(stop) - start) / static_cast<double>(step)));
      if (count > static_cast<double>(in.limits().max_range)) {
        Fail(absl::StatusCode::kResourceExhausted,
             absl::StrCat("range() of ", count, " items is larger than the limit ",
                          in.limits().max_range));
      }
      std::vector<Value> items;
      for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step)
        items.push_back(Value::Int(i));
      return Value::List(std::move(items));
    });
  }
  if (name == "dict" || name == "namespace") {
    const bool is_namespace = name == "namespace";
    return Value::MakeFunction(name, [is_namespace](Interpreter&, CallArgs& a) {
      Dict dict;
      for (const Value& p : a.positional) {
        if (!p.is_dict()) FailInvalid("dict()/namespace() positional argument must be a mapping");
        for (const auto& [k, v] : p.dict().items) dict.Set(k, v);
      }
      for (const auto& [k, v] : a.keyword) dict.Set(k, v);
      return is_namespace ? Value::Namespace(std::move(dict)) : Value::MakeDict(std::move(dict));
    });
  }
  if (name == "raise_exception") {
    return Value::MakeFunction(name, [](Interpreter&, CallArgs& a) -> Value {
      const Value message = Arg(a, 0, "message", Value::String(""));
      FailInvalid(std::string(kRaisedPrefix) + ToPythonStr(message));
    });
  }
  if (name == "strftime_now") {
    return Value::MakeFunction(
        name, [](Interpreter&, CallArgs& a) { return Strftime(StringArg(a, 0, "format")); });
  }
  if (name == "cycler" || name == "joiner" || name == "lipsum") {
    return Value::MakeFunction(name, [name](Interpreter&, CallArgs&) -> Value {
      FailNotImplemented("the global function \"" + name + "\"");
    });
  }
  return Value();
}

}  // namespace loramux::jinja
