#include "adapters/adapter_registry.h"

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "adapters/adapter_config.h"
#include "adapters/adapter_weights.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "common/thread_pool.h"
#include "formats/safetensors.h"
#include "tensor/compute_threads.h"

namespace loramux {

// One stored version and what of it is resident.
struct AdapterRegistry::Entry {
  StoredAdapter stored;
  AdapterKey key;
  bool loading = false;
  std::shared_ptr<const SafetensorsFile> host;    // HOST tier: the weight file, mapped
  std::shared_ptr<const AdapterWeights> weights;  // DEVICE tier
  int64_t users = 0;                              // running requests (and admin loads) holding it
  bool pinned = false;
  int64_t last_used = 0;
  std::vector<std::function<void()>> waiters;
  absl::Status load_status;  // of the last finished load
  absl::Time failed_at;
  // A load that requests waited for stays resident until then or until one takes it: evicting
  // it at once (the device tier over budget with adapters in use) made them load it again and
  // again, starving them.
  absl::Time keep_until = absl::InfinitePast();

  int64_t host_bytes() const { return host ? static_cast<int64_t>(stored.size_bytes) : 0; }
  int64_t device_bytes() const;
};

int64_t AdapterRegistry::Entry::device_bytes() const { return weights ? weights->bytes() : 0; }

namespace {

// How long a fresh load is kept for the requests that waited for it (they take it within a
// scheduler step; a waiter that went away meanwhile holds it no longer than this).
constexpr absl::Duration kFreshLoadGrace = absl::Seconds(1);

// Maps a stored weight file into memory (the HOST tier: its pages are the file's bytes, read once
// by the first copy to the device), optionally re-hashing it against its version first.
absl::StatusOr<std::shared_ptr<const SafetensorsFile>> MapWeights(AdapterStore& store,
                                                                  const StoredAdapter& stored,
                                                                  bool verify) {
  if (verify) RETURN_IF_ERROR(store.Verify(stored));
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
      SafetensorsFile::Open(stored.weights_path);
  if (file.status().code() == absl::StatusCode::kNotFound) {
    return absl::NotFoundError(absl::StrCat("adapter \"", stored.name, "@", stored.version,
                                            "\": weights file is gone (deleted meanwhile?)"));
  }
  RETURN_IF_ERROR(file.status());
  return std::shared_ptr<const SafetensorsFile>(*std::move(file));
}

}  // namespace

AdapterRegistry::AdapterRegistry(AdapterStore& store, const BaseModules& model,
                                 AdapterRegistryOptions options)
    : store_(store),
      model_(model),
      options_(options),
      // Loads run their tensor ops serially, so the scheduler's OpenMP team stays the process's
      // only one (tensor/compute_threads.h).
      loaders_(std::make_unique<ThreadPool>(options_.loader_threads, RunTensorOpsSerially)) {}

AdapterRegistry::~AdapterRegistry() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;  // loads still queued end at once
  }
  loaders_.reset();
}

absl::StatusOr<StoredAdapter> AdapterRegistry::Resolve(const std::string& ref) {
  const size_t at = ref.find('@');
  if (at == std::string::npos) return store_.Current(ref);
  return store_.Resolve(ref.substr(0, at), ref.substr(at + 1));
}

void AdapterRegistry::TouchLocked(Entry& entry) { entry.last_used = ++tick_; }

AdapterRegistry::Lease AdapterRegistry::Acquire(const StoredAdapter& adapter,
                                                std::function<void()> on_ready) {
  absl::MutexLock lock(&mu_);
  const AdapterKey key{adapter.name, adapter.version};
  std::shared_ptr<Entry>& slot = entries_[key.id()];
  if (!slot) {
    slot = std::make_shared<Entry>();
    slot->stored = adapter;
    slot->key = key;
  }
  Entry& entry = *slot;
  TouchLocked(entry);
  if (entry.weights) {
    ++stats_.hits;
    ++entry.users;
    entry.keep_until = absl::InfinitePast();  // taken: evictable again once released
    return {entry.weights, absl::OkStatus()};
  }
  if (!entry.loading && !entry.load_status.ok()) {
    // A failed load answers every request for a second, so waiters all see it; then retry. A
    // load that found the version deleted is retried at once when the request holds a version
    // published since (a delete, then an upload of the same weights).
    const bool republished =
        absl::IsNotFound(entry.load_status) && ::access(adapter.weights_path.c_str(), F_OK) == 0;
    if (!republished && absl::Now() - entry.failed_at < absl::Seconds(1)) {
      return {nullptr, entry.load_status};
    }
    entry.load_status = absl::OkStatus();
  }
  ++stats_.misses;
  if (on_ready) entry.waiters.push_back(std::move(on_ready));
  if (!entry.loading) StartLoadLocked(slot);
  return {nullptr, absl::OkStatus()};
}

void AdapterRegistry::StartLoadLocked(const std::shared_ptr<Entry>& entry) {
  entry->loading = true;
  loaders_->Run([this, entry] { LoadEntry(entry); });
}

void AdapterRegistry::LoadEntry(const std::shared_ptr<Entry>& entry) {
  std::shared_ptr<const SafetensorsFile> host;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    host = entry->host;
  }
  absl::StatusOr<std::shared_ptr<const AdapterWeights>> weights = absl::InternalError("unset");
  if (!host) {
    auto read = MapWeights(store_, entry->stored, options_.verify_on_load);
    if (read.ok())
      host = *read;
    else
      weights = read.status();
  }
  if (host) {
    weights = AdapterWeights::FromFile(entry->stored, *host, model_, options_.limits);
  }
  if (weights.ok() && (*weights)->bytes() > options_.max_device_bytes) {
    weights = absl::ResourceExhaustedError(
        absl::StrCat("adapter \"", entry->stored.name, "\" needs ", (*weights)->bytes(),
                     " bytes of device memory, more than --max_device_adapter_bytes=",
                     options_.max_device_bytes));
  }
  std::vector<std::function<void()>> waiters;
  {
    absl::MutexLock lock(&mu_);
    entry->loading = false;
    ++stats_.loads;
    if (weights.ok()) {
      SetDeviceLocked(*entry, *weights);
      if (!entry->waiters.empty()) entry->keep_until = absl::Now() + kFreshLoadGrace;
      if (static_cast<int64_t>(entry->stored.size_bytes) <= options_.max_host_bytes) {
        SetHostLocked(*entry, host);
      }
      entry->load_status = absl::OkStatus();
    } else {
      ++stats_.load_failures;
      entry->load_status = weights.status();
      entry->failed_at = absl::Now();
      LogWarning("loading adapter %s failed: %s", entry->key.id(), weights.status().ToString());
    }
    TouchLocked(*entry);
    EvictLocked();
    waiters.swap(entry->waiters);
  }
  for (auto& waiter : waiters) waiter();
}

void AdapterRegistry::Release(const AdapterKey& key) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(key.id());
  if (it == entries_.end()) return;
  Entry& entry = *it->second;
  if (entry.users > 0) --entry.users;
  TouchLocked(entry);
  EvictLocked();
  ForgetIfIdleLocked(key.id());
}

void AdapterRegistry::SetDeviceLocked(Entry& entry, std::shared_ptr<const AdapterWeights> weights) {
  stats_.device_bytes += (weights ? weights->bytes() : 0) - entry.device_bytes();
  stats_.device_count += (weights != nullptr) - (entry.weights != nullptr);
  entry.weights = std::move(weights);
}

void AdapterRegistry::SetHostLocked(Entry& entry, std::shared_ptr<const SafetensorsFile> host) {
  const int64_t bytes = host ? static_cast<int64_t>(entry.stored.size_bytes) : 0;
  stats_.host_bytes += bytes - entry.host_bytes();
  stats_.host_count += (host != nullptr) - (entry.host != nullptr);
  entry.host = std::move(host);
}

void AdapterRegistry::ForgetIfIdleLocked(const std::string& id) {
  auto it = entries_.find(id);
  if (it == entries_.end()) return;
  const Entry& e = *it->second;
  if (!e.weights && !e.host && !e.loading && e.users == 0 && !e.pinned && e.waiters.empty() &&
      e.load_status.ok()) {
    entries_.erase(it);
  }
}

void AdapterRegistry::EvictLocked() {
  // Least recently used evictable entry holding a tier, or null.
  const absl::Time now = absl::Now();
  auto victim = [this, now](bool device_tier) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> Entry* {
    Entry* best = nullptr;
    for (const auto& [id, e] : entries_) {
      const bool holds = device_tier ? e->weights != nullptr : e->host != nullptr;
      const bool evictable =
          device_tier ? (e->users == 0 && !e->pinned && e->keep_until <= now) : !e->loading;
      if (holds && evictable && (!best || e->last_used < best->last_used)) best = e.get();
    }
    return best;
  };
  std::vector<std::string> touched;
  while (stats_.device_bytes > options_.max_device_bytes) {
    Entry* e = victim(true);
    if (!e) break;  // everything resident is in use: over budget until a user releases
    SetDeviceLocked(*e, nullptr);
    ++stats_.evictions;
    touched.push_back(e->key.id());
  }
  while (stats_.host_bytes > options_.max_host_bytes) {
    Entry* e = victim(false);
    if (!e) break;
    SetHostLocked(*e, nullptr);
    ++stats_.evictions;
    touched.push_back(e->key.id());
  }
  for (const std::string& id : touched) ForgetIfIdleLocked(id);
}

AdapterStatus AdapterRegistry::StatusOf(const StoredAdapter& stored) {
  AdapterStatus status;
  status.stored = stored;
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(AdapterKey{stored.name, stored.version}.id());
    if (it != entries_.end()) {
      const Entry& e = *it->second;
      status.pinned = e.pinned;
      status.residency = e.weights ? Residency::kDevice
                         : e.host  ? Residency::kHost
                                   : Residency::kStored;
      if (e.weights) {
        status.rank = e.weights->max_rank();
        status.use_dora = e.weights->use_dora();
        status.target_modules = e.weights->target_kinds();
        return status;
      }
    }
  }
  // Not resident: describe from the config.
  auto j = nlohmann::json::parse(stored.config_json, nullptr, false);
  if (!j.is_object()) return status;
  if (stored.format == AdapterFormat::kPeft) {
    if (j.contains("r") && j["r"].is_number_integer()) status.rank = j["r"].get<int64_t>();
    if (j.contains("rank_pattern") && j["rank_pattern"].is_object()) {
      for (const auto& [k, v] : j["rank_pattern"].items()) {
        if (v.is_number_integer()) status.rank = std::max<int64_t>(status.rank, v.get<int64_t>());
      }
    }
    status.use_dora = j.value("use_dora", false);
    if (j.contains("target_modules")) {
      const auto& t = j["target_modules"];
      if (t.is_string()) status.target_modules.push_back(t.get<std::string>());
      if (t.is_array()) {
        for (const auto& v : t) {
          if (v.is_string()) status.target_modules.push_back(v.get<std::string>());
        }
      }
    }
  }
  return status;
}

absl::StatusOr<AdapterStatus> AdapterRegistry::Describe(const std::string& ref) {
  ASSIGN_OR_RETURN(StoredAdapter stored, Resolve(ref));
  return StatusOf(stored);
}

absl::StatusOr<AdapterStatus> AdapterRegistry::Load(const std::string& ref, bool pin) {
  ASSIGN_OR_RETURN(StoredAdapter stored, Resolve(ref));
  auto ready = std::make_shared<absl::Notification>();
  Lease lease = Acquire(stored, [ready] { ready->Notify(); });
  if (!lease.status.ok()) return lease.status;
  if (!lease.weights) {
    ready->WaitForNotification();
    lease = Acquire(stored, nullptr);
    if (!lease.status.ok()) return lease.status;
    if (!lease.weights) return absl::UnavailableError("adapter was evicted while loading; retry");
  }
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(AdapterKey{stored.name, stored.version}.id());
    if (it != entries_.end() && pin) it->second->pinned = true;
  }
  Release({stored.name, stored.version});
  return StatusOf(stored);
}

absl::StatusOr<AdapterStatus> AdapterRegistry::Unload(const std::string& ref) {
  ASSIGN_OR_RETURN(StoredAdapter stored, Resolve(ref));
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(AdapterKey{stored.name, stored.version}.id());
    if (it != entries_.end()) {
      Entry& e = *it->second;
      e.pinned = false;
      SetHostLocked(e, nullptr);
      if (e.users == 0) SetDeviceLocked(e, nullptr);  // running requests keep their copy
      ForgetIfIdleLocked(e.key.id());
    }
  }
  return StatusOf(stored);
}

absl::Status AdapterRegistry::Delete(const std::string& name) {
  RETURN_IF_ERROR(store_.Delete(name));
  absl::MutexLock lock(&mu_);
  std::vector<std::string> forget;
  for (auto& [id, e] : entries_) {
    if (e->key.name != name) continue;
    e->pinned = false;
    SetHostLocked(*e, nullptr);
    if (e->users == 0) SetDeviceLocked(*e, nullptr);
    forget.push_back(id);
  }
  for (const std::string& id : forget) ForgetIfIdleLocked(id);
  return absl::OkStatus();
}

AdapterValidator AdapterRegistry::Validator() const {
  const BaseModules* model = &model_;
  const AdapterLimits& limits = options_.limits;
  return [model, limits](const AdapterManifest& manifest, const std::string& weights_path) {
    return AdapterWeights::Validate(manifest, weights_path, *model, limits);
  };
}

RegistryStats AdapterRegistry::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

}  // namespace loramux
