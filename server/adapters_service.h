// The Adapters gRPC service (callback API): Upload (client streaming), List, Get, Delete, Load,
// Unload. Every call needs the admin token when the server has one (--admin_token_file).
//
// Upload protocol: the first message is an UploadManifest (name, format, config JSON, size and
// sha256 of the weights file), then the weights bytes in chunks of at most 1 MiB. The server
// stages the bytes as they arrive (AdapterStore::Upload), and when the client half-closes, checks
// the size and digest, validates the adapter against the base model and publishes it as the
// name's current version. Errors: malformed stream, name or chunk INVALID_ARGUMENT, truncated
// upload INVALID_ARGUMENT, digest mismatch DATA_LOSS, over --max_upload_bytes RESOURCE_EXHAUSTED,
// adapter that does not fit the base FAILED_PRECONDITION.
//
// Resource bounds: at most max_concurrent_uploads Upload calls run at once (more are
// RESOURCE_EXHAUSTED at once, naming --max_concurrent_uploads); a call whose client sends nothing
// for upload_idle_timeout is ended with DEADLINE_EXCEEDED and its staged bytes removed. A call
// waiting for its client holds no file descriptor (the store appends each chunk by open/close).
//
// Calls that may take long (publishing an upload: hashing, fsync, validation; Load: reading and
// moving weights to the device; Delete: waiting for the name's lock, fsync) run on a small pool
// of service threads, never on gRPC's threads.
//
// Thread-safety: calls run concurrently; the registry and store are thread-safe.
#pragma once

#include <cstddef>
#include <memory>

#include "absl/time/time.h"
#include "adapters/adapter_registry.h"
#include "common/thread_pool.h"
#include "loramux/v1/loramux.grpc.pb.h"
#include "server/auth.h"
#include "server/metrics.h"

namespace loramux {

struct AdaptersServiceOptions {
  size_t max_chunk_bytes = 1 << 20;  // larger chunks are INVALID_ARGUMENT
  int blocking_threads = 2;          // threads for uploads' commits, Load and Delete
  int max_concurrent_uploads = 16;   // Upload calls past this are RESOURCE_EXHAUSTED
  absl::Duration upload_idle_timeout = absl::Seconds(60);  // silent this long: DEADLINE_EXCEEDED
};

class AdaptersService final : public v1::Adapters::CallbackService {
 public:
  // `registry` and `metrics` must outlive the service.
  AdaptersService(AdapterRegistry& registry, Metrics& metrics, TokenAuth auth,
                  AdaptersServiceOptions options);
  // Runs the queued blocking work to its end and joins the threads. Destroy the service only after
  // the grpc::Server has shut down.
  ~AdaptersService();

  grpc::ServerReadReactor<v1::UploadRequest>* Upload(grpc::CallbackServerContext* context,
                                                     v1::AdapterInfo* response) override;
  grpc::ServerUnaryReactor* List(grpc::CallbackServerContext* context,
                                 const v1::ListAdaptersRequest* request,
                                 v1::ListAdaptersResponse* response) override;
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* context,
                                const v1::GetAdapterRequest* request,
                                v1::AdapterInfo* response) override;
  grpc::ServerUnaryReactor* Delete(grpc::CallbackServerContext* context,
                                   const v1::DeleteAdapterRequest* request,
                                   v1::DeleteAdapterResponse* response) override;
  grpc::ServerUnaryReactor* Load(grpc::CallbackServerContext* context,
                                 const v1::LoadAdapterRequest* request,
                                 v1::AdapterInfo* response) override;
  grpc::ServerUnaryReactor* Unload(grpc::CallbackServerContext* context,
                                   const v1::UnloadAdapterRequest* request,
                                   v1::AdapterInfo* response) override;

  class UploadTracker;  // see adapters_service.cc

 private:
  absl::Status ListInto(const v1::ListAdaptersRequest& request, v1::ListAdaptersResponse& response);
  static absl::Status Reply(const absl::StatusOr<AdapterStatus>& status, v1::AdapterInfo* response);

  AdapterRegistry& registry_;
  Metrics& metrics_;
  const TokenAuth auth_;
  const AdaptersServiceOptions options_;
  std::unique_ptr<ThreadPool> pool_;  // uploads' commits, Load and Delete
  std::unique_ptr<UploadTracker> uploads_;
};

}  // namespace loramux
