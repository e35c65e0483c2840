// Python's str methods on UTF-8 strings, by code point as Python counts them (len, indexing,
// slicing, strip, split, case mapping via utf8proc). Inputs must be valid UTF-8 (template
// literals and JSON input always are). Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "text/utf8.h"

namespace loramux::jinja {

using text::AppendUtf8;
using text::CountCodePoints;
using text::IsValidUtf8;

// Code points of valid UTF-8, and back.
std::vector<uint32_t> DecodeUtf8(std::string_view s);
std::string EncodeUtf8(const std::vector<uint32_t>& cps);

// str.isspace for one code point.
bool IsPythonSpace(uint32_t cp);

// str.strip / lstrip / rstrip; chars absent: whitespace.
std::string PyStrip(std::string_view s, const std::optional<std::string>& chars, bool left,
                    bool right);
// str.split(sep, maxsplit); sep absent: runs of whitespace, no empty parts. sep must be non-empty.
std::vector<std::string> PySplit(std::string_view s, const std::optional<std::string>& sep,
                                 int64_t maxsplit);
// str.replace(old, new, count); count < 0: all.
std::string PyReplace(std::string_view s, std::string_view old_part, std::string_view new_part,
                      int64_t count);
// str.find: code point index or -1.
int64_t PyFind(std::string_view s, std::string_view sub);
int64_t PyCount(std::string_view s, std::string_view sub);

std::string PyUpper(std::string_view s);
std::string PyLower(std::string_view s);
std::string PyTitle(std::string_view s);       // str.title
std::string PyCapitalize(std::string_view s);  // str.capitalize

}  // namespace loramux::jinja
