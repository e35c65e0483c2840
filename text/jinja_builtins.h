// Jinja2's built-in filters, tests and global functions, and the Python methods of str, dict and
// list, in the subset HuggingFace chat templates use; transformers' additions raise_exception,
// strftime_now and tojson (json.dumps with ensure_ascii=False, insertion order kept).
// Names Jinja2 or Python know but loramux does not implement fail FAILED_PRECONDITION naming them.
// Thread-safety: pure functions of their arguments (strftime_now reads the clock).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "text/jinja_value.h"

namespace loramux::jinja {

class Interpreter;

bool IsImplementedFilter(std::string_view name);
bool IsImplementedTest(std::string_view name);

Value ApplyFilter(Interpreter& in, const std::string& name, const Value& input, CallArgs& args);
bool ApplyTest(Interpreter& in, const std::string& name, const Value& input, CallArgs& args);

// obj.name on a str, dict, list or namespace's built-in methods: a bound function, or undefined.
Value GetMethod(const Value& object, const std::string& name);

// What a for loop or an iterating filter walks: a list's items, a dict's keys, a string's
// characters; undefined is empty. Anything else fails INVALID_ARGUMENT ("... is not iterable").
std::vector<Value> Iterate(const Value& v);

// range, dict, namespace, raise_exception, strftime_now; Jinja2 globals loramux lacks (cycler,
// joiner, lipsum) as functions that fail FAILED_PRECONDITION; otherwise undefined.
Value GetGlobal(const std::string& name);

// The message raise_exception's status carries (the template's text follows it).
inline constexpr std::string_view kRaisedPrefix = "chat template rejected the conversation: ";

}  // namespace loramux::jinja
