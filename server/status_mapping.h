// The one place where engine errors (absl::Status) become wire errors (grpc::Status).
//
// absl::StatusCode and grpc::StatusCode share their numeric values (both follow
// google.rpc.Code), so the mapping keeps the code and the message unchanged; any code outside the
// canonical range becomes UNKNOWN. Handlers build their own errors as absl::Status too and pass
// them through here, so every error the server sends follows one path.
// Thread-safety: pure functions.
#pragma once

#include <string>

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace loramux {

grpc::Status ToGrpcStatus(const absl::Status& status);

// "OK", "NOT_FOUND", ... (the canonical upper-case name; bounded, for metric labels and logs).
const char* GrpcCodeName(grpc::StatusCode code);

}  // namespace loramux
