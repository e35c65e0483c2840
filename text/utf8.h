// UTF-8 helpers shared by the tokenizer stages. All functions work on bytes; none allocate
// except the Append* ones. Thread-safe (no state).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace loramux::text {

// True when `s` is well-formed UTF-8 (no overlongs, surrogates or code points above U+10FFFF).
// On failure *bad_offset (if given) is the byte offset of the first bad sequence.
bool IsValidUtf8(std::string_view s, size_t* bad_offset = nullptr);

// Length in bytes of the character starting with lead byte `lead` (1 for invalid leads).
inline size_t Utf8CharLength(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xF0) return 4;
  if (lead >= 0xE0) return 3;
  if (lead >= 0xC0) return 2;
  return 1;
}

// Decodes the character at s[pos] (s must be valid UTF-8) and advances pos past it.
char32_t NextCodePoint(std::string_view s, size_t& pos);

void AppendUtf8(char32_t cp, std::string& out);

// Number of characters (code points) in valid UTF-8.
size_t CountCodePoints(std::string_view s);

// Appends `bytes` to `out` the way Rust's String::from_utf8_lossy does: every maximal ill-formed
// subsequence (Unicode's "maximal subpart" rule) becomes one U+FFFD.
void AppendUtf8Lossy(std::string_view bytes, std::string& out);

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

}  // namespace loramux::text
