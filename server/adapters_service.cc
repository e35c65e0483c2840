#include "server/adapters_service.h"

#include <algorithm>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "adapters/adapter_store.h"
#include "common/status_macros.h"
#include "common/thread_pool.h"
#include "server/status_mapping.h"
#include "server/unary_call.h"
#include "tensor/compute_threads.h"

namespace loramux {

// An Upload call as the tracker sees it.
class TrackedUpload {
 public:
  virtual ~TrackedUpload() = default;
  // Ends the call with DEADLINE_EXCEEDED when it has waited for the client since before `cutoff`.
  virtual void ExpireIfIdleSince(absl::Time cutoff) = 0;
};

// Admission (at most max_concurrent_uploads calls at once) and a watchdog that ends calls whose
// client has been silent for upload_idle_timeout. Lock order: the tracker's mutex, then a call's.
class AdaptersService::UploadTracker {
 public:
  UploadTracker(int max_uploads, absl::Duration idle_timeout)
      : max_uploads_(std::max(1, max_uploads)), idle_timeout_(idle_timeout) {
    watchdog_ = std::thread([this] { Watch(); });
  }
  ~UploadTracker() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    watchdog_.join();
  }
  int max_uploads() const { return max_uploads_; }
  absl::Duration idle_timeout() const { return idle_timeout_; }

  // False when max_uploads calls are in progress already.
  bool Admit(TrackedUpload* call) {
    absl::MutexLock lock(&mu_);
    if (static_cast<int>(calls_.size()) >= max_uploads_) return false;
    calls_.insert(call);
    return true;
  }
  // After this the watchdog no longer touches `call`.
  void Leave(TrackedUpload* call) {
    absl::MutexLock lock(&mu_);
    calls_.erase(call);
  }

 private:
  void Watch() {
    const absl::Duration period =
        std::clamp(idle_timeout_ / 4, absl::Milliseconds(10), absl::Seconds(1));
    absl::MutexLock lock(&mu_);
    while (!mu_.AwaitWithTimeout(absl::Condition(&stopping_), period)) {
      const absl::Time cutoff = absl::Now() - idle_timeout_;
      for (TrackedUpload* call : calls_) call->ExpireIfIdleSince(cutoff);
    }
  }

  const int max_uploads_;
  const absl::Duration idle_timeout_;
  absl::Mutex mu_;
  absl::flat_hash_set<TrackedUpload*> calls_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread watchdog_;
};

namespace {

v1::AdapterFormat ToProto(AdapterFormat format) {
  return format == AdapterFormat::kSeed ? v1::SEED : v1::PEFT;
}

v1::Residency ToProto(Residency residency) {
  switch (residency) {
    case Residency::kStored: return v1::STORED;
    case Residency::kHost: return v1::HOST;
    case Residency::kDevice: return v1::DEVICE;
  }
  return v1::STORED;
}

void ToProto(const AdapterStatus& status, v1::AdapterInfo* out) {
  out->set_name(status.stored.name);
  out->set_version(status.stored.version);
  out->set_format(ToProto(status.stored.format));
  out->set_rank(static_cast<int32_t>(status.rank));
  out->set_use_dora(status.use_dora);
  for (const std::string& module : status.target_modules) out->add_target_modules(module);
  out->set_size_bytes(status.stored.size_bytes);
  out->set_residency(ToProto(status.residency));
  out->set_pinned(status.pinned);
}

absl::StatusOr<AdapterManifest> FromProto(const v1::UploadManifest& in) {
  AdapterManifest out;
  out.name = in.name();
  switch (in.format()) {
    case v1::PEFT: out.format = AdapterFormat::kPeft; break;
    case v1::SEED: out.format = AdapterFormat::kSeed; break;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "manifest.format ", static_cast<int>(in.format()), " is unknown; use PEFT or SEED"));
  }
  out.config_json = in.config_json();
  out.size_bytes = in.size_bytes();
  out.sha256 = in.sha256();
  return out;
}

// Records the call's metrics and finishes a unary reactor.
// One Upload call: manifest, then chunks, committed when the client half-closes. Admitted by the
// tracker (RESOURCE_EXHAUSTED when full) and ended by its watchdog when the client goes silent.
// mu_ orders the gRPC callbacks, the commit's end and the watchdog; gRPC never runs OnReadDone
// or OnDone inline in StartRead or Finish, so both may be called with mu_ held.
class UploadCall final : public grpc::ServerReadReactor<v1::UploadRequest>, public TrackedUpload {
 public:
  UploadCall(AdapterRegistry& registry, Metrics& metrics, ThreadPool& pool,
             AdaptersService::UploadTracker& tracker, const TokenAuth& auth,
             const AdaptersServiceOptions& options, grpc::CallbackServerContext* context,
             v1::AdapterInfo* response)
      : registry_(registry),
        metrics_(metrics),
        pool_(pool),
        tracker_(tracker),
        options_(options),
        context_(context),
        response_(response),
        start_(absl::Now()),
        last_activity_(start_) {  // before Admit: the watchdog may look from then on
    absl::Status status = auth.Check(*context);
    if (status.ok()) {
      admitted_ = tracker_.Admit(this);
      if (!admitted_) {
        status = absl::ResourceExhaustedError(
            absl::StrCat("the server is receiving ", tracker_.max_uploads(),
                         " uploads already, the most it takes at once (--max_concurrent_uploads=",
                         tracker_.max_uploads(), "); retry when one has finished"));
      }
    }
    absl::MutexLock lock(&mu_);
    if (finished_) return;  // the watchdog came first (a stalled machine); nothing to read
    if (!status.ok()) {
      FinishLocked(status);
      return;
    }
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    if (finished_) return;  // ended by the watchdog meanwhile; OnDone follows
    last_activity_ = absl::Now();
    if (!ok) {
      // The client half-closed (or went away): publish what arrived.
      if (upload_ == nullptr) {
        FinishLocked(absl::InvalidArgumentError(
            "the upload ended before its manifest; send an UploadManifest as the first message, "
            "then the weights in chunks"));
        return;
      }
      if (context_->IsCancelled()) {
        FinishLocked(absl::CancelledError("the upload was cancelled"));
        return;
      }
      committing_ = true;  // the client is done: no longer subject to the idle timeout
      pool_.Run([this] {
        absl::Status status = Commit();
        {
          absl::MutexLock lock(&mu_);
          finished_ = true;
        }
        // Outside mu_: OnDone may run (and delete `this`) as soon as Finish is called.
        Respond(status);
      });
      return;
    }
    if (absl::Status status = Handle(request_); !status.ok()) {
      FinishLocked(status);  // stop reading; the rest of the stream is dropped
      return;
    }
    StartRead(&request_);
  }

  void ExpireIfIdleSince(absl::Time cutoff) override {
    absl::MutexLock lock(&mu_);
    if (finished_ || committing_ || last_activity_ >= cutoff) return;
    const std::string what =
        name_.empty() ? std::string("an upload") : absl::StrCat("the upload of \"", name_, "\"");
    upload_.reset();  // removes the staged bytes now
    FinishLocked(absl::DeadlineExceededError(absl::StrCat(
        what, " received nothing for ", absl::FormatDuration(tracker_.idle_timeout()),
        " (--upload_idle_timeout) and was ended; its staged bytes were discarded. Send the ",
        "chunks without long pauses, then half-close the stream")));
  }

  void OnDone() override {
    if (admitted_) tracker_.Leave(this);
    delete this;
  }

 private:
  absl::Status Handle(const v1::UploadRequest& request) {
    switch (request.payload_case()) {
      case v1::UploadRequest::kManifest: {
        if (upload_ != nullptr) {
          return absl::InvalidArgumentError(
              "a second manifest arrived; send the manifest once, first, then only chunks");
        }
        absl::StatusOr<AdapterManifest> manifest = FromProto(request.manifest());
        if (!manifest.ok()) return manifest.status();
        name_ = manifest->name;
        absl::StatusOr<std::unique_ptr<AdapterStore::Upload>> upload =
            registry_.store().BeginUpload(*std::move(manifest));
        if (!upload.ok()) return upload.status();
        upload_ = *std::move(upload);
        return absl::OkStatus();
      }
      case v1::UploadRequest::kChunk: {
        if (upload_ == nullptr) {
          return absl::InvalidArgumentError(
              "a chunk arrived before the manifest; send an UploadManifest as the first message");
        }
        const std::string& chunk = request.chunk();
        if (chunk.size() > options_.max_chunk_bytes) {
          return absl::InvalidArgumentError(absl::StrCat(
              "upload of \"", name_, "\": a chunk of ", chunk.size(), " bytes is over the limit; ",
              "split the weights into chunks of at most ", options_.max_chunk_bytes, " bytes"));
        }
        return upload_->Append(chunk);
      }
      default:
        return absl::InvalidArgumentError(
            "an UploadRequest carried neither a manifest nor a chunk; set one of them");
    }
  }

  // Runs on the worker pool: digest, validation against the base, publish.
  absl::Status Commit() {
    absl::StatusOr<StoredAdapter> stored = upload_->Commit(registry_.Validator());
    if (!stored.ok()) return stored.status();
    ToProto(registry_.StatusOf(*stored), response_);
    return absl::OkStatus();
  }

  // For gRPC's callbacks and the watchdog, which hold mu_ here: OnDone (which deletes `this`)
  // cannot run before OnReadDone has returned, nor before the watchdog lets the tracker go.
  void FinishLocked(const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    finished_ = true;
    Respond(status);
  }
  void Respond(const absl::Status& status) {
    grpc::Status grpc_status = ToGrpcStatus(status);
    metrics_.RecordRpc(Rpc::kUpload, grpc_status.error_code(), absl::Now() - start_);
    Finish(grpc_status);
  }

  AdapterRegistry& registry_;
  Metrics& metrics_;
  ThreadPool& pool_;
  AdaptersService::UploadTracker& tracker_;
  const AdaptersServiceOptions& options_;
  grpc::CallbackServerContext* const context_;
  v1::AdapterInfo* const response_;
  const absl::Time start_;
  bool admitted_ = false;  // set in the constructor only
  absl::Mutex mu_;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool committing_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time last_activity_ ABSL_GUARDED_BY(mu_);
  v1::UploadRequest request_;
  std::string name_;
  std::unique_ptr<AdapterStore::Upload> upload_;
};

}  // namespace

AdaptersService::AdaptersService(AdapterRegistry& registry, Metrics& metrics, TokenAuth auth,
                                 AdaptersServiceOptions options)
    : registry_(registry),
      metrics_(metrics),
      auth_(std::move(auth)),
      options_(options),
      // Commits and loads touch tensors: serially, beside the scheduler's OpenMP team
      // (tensor/compute_threads.h).
      pool_(std::make_unique<ThreadPool>(options.blocking_threads, RunTensorOpsSerially)),
      uploads_(std::make_unique<UploadTracker>(options.max_concurrent_uploads,
                                               options.upload_idle_timeout)) {}

AdaptersService::~AdaptersService() = default;

grpc::ServerReadReactor<v1::UploadRequest>* AdaptersService::Upload(
    grpc::CallbackServerContext* context, v1::AdapterInfo* response) {
  return new UploadCall(registry_, metrics_, *pool_, *uploads_, auth_, options_, context, response);
}

absl::Status AdaptersService::ListInto(const v1::ListAdaptersRequest& request,
                                       v1::ListAdaptersResponse& response) {
  if (request.page_size() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size is ", request.page_size(), "; use 0 for the default (",
                     kDefaultListPageSize, ") or a positive count up to ", kMaxListPageSize));
  }
  ASSIGN_OR_RETURN(AdapterStore::Page page,
                   registry_.store().List(request.page_token(), request.page_size()));
  for (const StoredAdapter& stored : page.adapters)
    ToProto(registry_.StatusOf(stored), response.add_adapters());
  response.set_next_page_token(page.next_page_token);
  return absl::OkStatus();
}

// Fills `response` from an AdapterStatus, or passes the error on.
absl::Status AdaptersService::Reply(const absl::StatusOr<AdapterStatus>& status,
                                    v1::AdapterInfo* response) {
  if (status.ok()) ToProto(*status, response);
  return status.status();
}

grpc::ServerUnaryReactor* AdaptersService::List(grpc::CallbackServerContext* context,
                                                const v1::ListAdaptersRequest* request,
                                                v1::ListAdaptersResponse* response) {
  return AnswerUnary({context, metrics_, Rpc::kList, auth_},
                     [&] { return ListInto(*request, *response); });
}

grpc::ServerUnaryReactor* AdaptersService::Get(grpc::CallbackServerContext* context,
                                               const v1::GetAdapterRequest* request,
                                               v1::AdapterInfo* response) {
  return AnswerUnary({context, metrics_, Rpc::kGet, auth_},
                     [&] { return Reply(registry_.Describe(request->name()), response); });
}

grpc::ServerUnaryReactor* AdaptersService::Delete(grpc::CallbackServerContext* context,
                                                  const v1::DeleteAdapterRequest* request,
                                                  v1::DeleteAdapterResponse* response) {
  // Deleting takes the name's lock (it waits for a publish of the name) and syncs the disk.
  return AnswerUnaryOn([this](auto task) { pool_->Run(std::move(task)); },
                       {context, metrics_, Rpc::kDelete, auth_},
                       [this, name = request->name()] { return registry_.Delete(name); });
}

grpc::ServerUnaryReactor* AdaptersService::Load(grpc::CallbackServerContext* context,
                                                const v1::LoadAdapterRequest* request,
                                                v1::AdapterInfo* response) {
  // Loading blocks until the weights are resident: keep it off gRPC's threads.
  return AnswerUnaryOn([this](auto task) { pool_->Run(std::move(task)); },
                       {context, metrics_, Rpc::kLoad, auth_},
                       [this, name = request->name(), pin = request->pin(), response] {
                         return Reply(registry_.Load(name, pin), response);
                       });
}

grpc::ServerUnaryReactor* AdaptersService::Unload(grpc::CallbackServerContext* context,
                                                  const v1::UnloadAdapterRequest* request,
                                                  v1::AdapterInfo* response) {
  return AnswerUnary({context, metrics_, Rpc::kUnload, auth_},
                     [&] { return Reply(registry_.Unload(request->name()), response); });
}

}  // namespace loramux
