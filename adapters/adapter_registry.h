// The registry: which adapter versions exist (via the store) and which are resident, under byte
// budgets, with LRU eviction of unused ones.
//
// Tiers: STORED (files in the store) -> HOST (the weight file mapped into memory) -> DEVICE
// (AdapterWeights on the model's device, ready to serve). Each tier has a byte budget; the least
// recently used adapter that no running request uses and nobody pinned is evicted first. A load
// that requests waited for is kept for them (up to 1 s) even when the tier is over budget.
// Loads run on a background thread and are single-flight: many requests for one cold adapter
// cause one load, and requests for resident adapters keep flowing meanwhile.
//
// Hot swap: a request resolves "name" to the store's current version when it is admitted and
// keeps that version until it ends; the old version is freed when its last user releases it.
//
// Thread-safety: all public methods are thread-safe. Torch-free header: the weights are opaque.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "adapters/adapter_limits.h"
#include "adapters/adapter_store.h"
#include "common/thread_pool.h"

namespace loramux {

class AdapterWeights;
class BaseModules;
class SafetensorsFile;

enum class Residency { kStored, kHost, kDevice };

struct AdapterRegistryOptions {
  int64_t max_host_bytes = 1ll << 30;
  int64_t max_device_bytes = 1ll << 30;
  AdapterLimits limits;  // largest rank, factor precision
  int loader_threads = 1;
  // Re-hash the weights on every load from the store (DATA_LOSS on mismatch). Uploads are always
  // verified before publishing; this adds bit-rot detection at ~0.3 GB/s of SHA-256.
  bool verify_on_load = false;
};

// What the admin API reports about one version.
struct AdapterStatus {
  StoredAdapter stored;
  Residency residency = Residency::kStored;
  bool pinned = false;
  int64_t rank = 0;       // 0 until first loaded
  bool use_dora = false;  // from the config until loaded
  std::vector<std::string> target_modules;
};

// Counters for metrics (monotonic) and gauges.
struct RegistryStats {
  int64_t hits = 0, misses = 0, loads = 0, load_failures = 0, evictions = 0;
  int64_t host_bytes = 0, device_bytes = 0, host_count = 0, device_count = 0;
};

// A resolved reference to one stored version ("name" -> current version).
struct AdapterKey {
  std::string name;
  std::string version;
  std::string id() const { return name + "@" + version; }
};

class AdapterRegistry {
 public:
  AdapterRegistry(AdapterStore& store, const BaseModules& model, AdapterRegistryOptions options);
  ~AdapterRegistry();

  // "name" -> current version; "name@prefix" -> that version. NOT_FOUND / INVALID_ARGUMENT.
  absl::StatusOr<StoredAdapter> Resolve(const std::string& ref);

  // Outcome of Acquire.
  struct Lease {
    std::shared_ptr<const AdapterWeights> weights;  // null while loading
    absl::Status status;                            // non-OK: the load failed for good
  };
  // Makes `adapter` resident, counting one user that pins it until Release. Returns the weights
  // when resident; otherwise starts (or joins) an async load and returns null weights with OK
  // status, and `on_ready` runs (on the loader thread) once it is resident or failed. A failed
  // load returns its status; the user is then not counted.
  Lease Acquire(const StoredAdapter& adapter, std::function<void()> on_ready);
  void Release(const AdapterKey& key);

  // Admin: status of a version; Load makes it resident now (blocking the caller, which must not be
  // the scheduler thread), optionally pinning it; Unload drops residency and any pin (users keep
  // their copy); Delete removes the name from the store and unpins its versions.
  absl::StatusOr<AdapterStatus> Describe(const std::string& ref);
  absl::StatusOr<AdapterStatus> Load(const std::string& ref, bool pin);
  absl::StatusOr<AdapterStatus> Unload(const std::string& ref);
  absl::Status Delete(const std::string& name);
  AdapterStatus StatusOf(const StoredAdapter& stored);

  // Validates an upload against the base model (for AdapterStore::Upload::Commit).
  AdapterValidator Validator() const;

  RegistryStats stats() const;
  AdapterStore& store() { return store_; }

 private:
  struct Entry;
  // Reads, validates and places one entry's weights; runs on loaders_.
  void LoadEntry(const std::shared_ptr<Entry>& entry);
  void StartLoadLocked(const std::shared_ptr<Entry>& entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Evicts least recently used, unused, unpinned entries while a tier is over its budget. Scans
  // only when over budget; the hit path stays O(1).
  void EvictLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void TouchLocked(Entry& entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Tier changes go through these so the byte totals stay exact.
  void SetDeviceLocked(Entry& entry, std::shared_ptr<const AdapterWeights> weights)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SetHostLocked(Entry& entry, std::shared_ptr<const SafetensorsFile> host)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops the entry from the map when it holds nothing and nobody needs it.
  void ForgetIfIdleLocked(const std::string& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  AdapterStore& store_;
  const BaseModules& model_;
  const AdapterRegistryOptions options_;

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<Entry>> entries_ ABSL_GUARDED_BY(mu_);
  int64_t tick_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  RegistryStats stats_ ABSL_GUARDED_BY(mu_);  // counters; the tier totals live here too
  std::unique_ptr<ThreadPool> loaders_;       // last: joined before the state above goes
};

}  // namespace loramux
