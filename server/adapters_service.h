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
// Calls that may take long (publishing an upload: hashing, fsync, validation; Load: reading and
// moving weights to the device) run on a small pool of service threads, never on gRPC's threads.
//
// Thread-safety: calls run concurrently; the registry and store are thread-safe.
#pragma once

#include <cstddef>
#include <memory>

#include "adapters/adapter_registry.h"
#include "loramux/v1/loramux.grpc.pb.h"
#include "server/auth.h"
#include "server/metrics.h"

namespace loramux {

struct AdaptersServiceOptions {
  size_t max_chunk_bytes = 1 << 20;  // larger chunks are INVALID_ARGUMENT
  int blocking_threads = 2;          // threads for uploads' commits and Load
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

  class WorkerPool;  // see adapters_service.cc

 private:
  AdapterRegistry& registry_;
  Metrics& metrics_;
  const TokenAuth auth_;
  const AdaptersServiceOptions options_;
  std::unique_ptr<WorkerPool> pool_;
};

}  // namespace loramux
