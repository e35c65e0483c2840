// Cat(...): absl::StrCat that also takes std::string_view. Debian's Abseil (20220623) has its own
// absl::string_view, which StrCat's overloads expect; the tokenizer works in std::string_view.
#pragma once

#include <string>
#include <string_view>
#include <type_traits>

#include "absl/strings/str_cat.h"

namespace loramux::text {

template <typename T>
decltype(auto) ToAbslArg(const T& value) {
  if constexpr (std::is_convertible_v<const T&, std::string_view>) {
    const std::string_view view(value);
    return absl::string_view(view.data(), view.size());
  } else {
    return (value);
  }
}

template <typename... Args>
std::string Cat(const Args&... args) {
  return absl::StrCat(ToAbslArg(args)...);
}

}  // namespace loramux::text

namespace loramux::text {

// For heterogeneous lookups in absl containers keyed by std::string.
inline absl::string_view AsAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace loramux::text
