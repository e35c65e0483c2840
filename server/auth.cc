#include "server/auth.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/durable_file.h"

namespace loramux {
namespace {

constexpr absl::string_view kBearer = "Bearer ";

// Compares without an early exit, so the time taken does not reveal how much of a guess matched.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::min(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace

absl::StatusOr<std::string> ReadTokenFile(const std::string& path, const std::string& flag) {
  absl::StatusOr<std::string> text = ReadSmallFile(path, 64 << 10);
  if (!text.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, "=", path, ": cannot read the token file (", text.status().message(),
                     "); check the path and its permissions"));
  }
  std::string token(absl::StripAsciiWhitespace(*text));
  if (token.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, "=", path, ": the token file is empty; write the token into it"));
  }
  if (token.find_first_of("\r\n") != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, "=", path, ": the token file holds several lines; keep only the token"));
  }
  return token;
}

TokenAuth::TokenAuth(std::string token, std::string flag)
    : token_(std::move(token)), flag_(std::move(flag)) {}

absl::Status TokenAuth::Check(const grpc::ServerContextBase& context) const {
  if (!enabled()) return absl::OkStatus();
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) return CheckHeader(nullptr);
  const std::string value(it->second.data(), it->second.size());
  return CheckHeader(&value);
}

absl::Status TokenAuth::CheckHeader(const std::string* authorization) const {
  if (!enabled()) return absl::OkStatus();
  if (authorization == nullptr) {
    return absl::UnauthenticatedError(absl::StrCat(
        "missing `authorization`; send `authorization: Bearer <token>` with the token the server "
        "reads from ",
        flag_));
  }
  const absl::string_view value(*authorization);
  if (!absl::StartsWith(value, kBearer)) {
    return absl::UnauthenticatedError("`authorization` must have the form `Bearer <token>`");
  }
  if (!ConstantTimeEquals(value.substr(kBearer.size()), token_)) {
    return absl::UnauthenticatedError(
        absl::StrCat("the bearer token is wrong; use the token in the server's ", flag_));
  }
  return absl::OkStatus();
}

}  // namespace loramux
