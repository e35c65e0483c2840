// Bearer-token checks for the gRPC services and the HTTP front.
//
// A TokenAuth holds one shared secret (read from a file given by a flag); a call passes when its
// metadata (gRPC) or headers (HTTP) carry `authorization: Bearer <token>`. A TokenAuth without a
// token lets every call through (the flag was not given). Health is never guarded; see server.cc
// for which service uses which token.
//
// Thread-safety: immutable after construction; Check is safe from any thread.
#pragma once

#include <string>

#include <grpcpp/server_context.h>

#include "absl/status/statusor.h"

namespace loramux {

// Reads a token file: the token is its content with surrounding whitespace trimmed (files often
// end in a newline). INVALID_ARGUMENT naming `flag` when the file is missing, unreadable or empty.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path, const std::string& flag);

class TokenAuth {
 public:
  // `token` "" disables the check. `flag` names where the token comes from, for error messages
  // (e.g. "--admin_token_file").
  TokenAuth(std::string token, std::string flag);

  bool enabled() const { return !token_.empty(); }
  // OK, or UNAUTHENTICATED saying what was wrong (missing header, wrong scheme, wrong token).
  absl::Status Check(const grpc::ServerContextBase& context) const;
  // The same check on the value of an `authorization` header (nullptr when there is none).
  absl::Status CheckHeader(const std::string* authorization) const;

 private:
  std::string token_;
  std::string flag_;
};

}  // namespace loramux
