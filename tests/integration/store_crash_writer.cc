// Crash-test helper: uploads random adapters into a store forever, until killed.
//
//   store_crash_writer <store_root>
//
// Payloads of 1 KiB to 200 KiB go under a few names, streamed in random chunks through
// BeginUpload/Append/Commit; now and then a payload is re-sent unchanged (the idempotent path).
// After each successful Commit it prints `ACK <name> <sha256>` and flushes, so whoever kills it
// knows which versions the store promised to keep. A failed upload prints `ERR <status>`: with
// nothing but other writers on the store, none should ever fail.
#include <algorithm>
#include <cstdio>
#include <iterator>
#include <random>
#include <string>
#include <string_view>

#include "adapters/adapter_store.h"
#include "common/sha256.h"

namespace {

constexpr const char* kNames[] = {"crash-a", "crash-b", "crash-c"};
constexpr char kConfig[] = R"({"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]})";

std::string RandomPayload(std::mt19937_64& rng) {
  std::uniform_int_distribution<size_t> size(1 << 10, 200 << 10);
  std::string out(size(rng), '\0');
  for (char& c : out) c = static_cast<char>(rng());
  return out;
}

void Report(const char* tag, const std::string& text) {
  std::printf("%s %s\n", tag, text.c_str());
  std::fflush(stdout);
}

// One upload in random-sized chunks; true when committed.
bool Upload(loramux::AdapterStore& store, const std::string& name, const std::string& payload,
            std::mt19937_64& rng) {
  loramux::AdapterManifest manifest;
  manifest.name = name;
  manifest.config_json = kConfig;
  manifest.size_bytes = payload.size();
  manifest.sha256 = loramux::Sha256Hex(payload);
  auto upload = store.BeginUpload(manifest);
  if (!upload.ok()) {
    Report("ERR", upload.status().ToString());
    return false;
  }
  std::uniform_int_distribution<size_t> chunk(1, 64 << 10);
  for (size_t offset = 0; offset < payload.size();) {
    const size_t n = std::min(chunk(rng), payload.size() - offset);
    absl::Status appended = (*upload)->Append(std::string_view(payload).substr(offset, n));
    if (!appended.ok()) {
      Report("ERR", appended.ToString());
      return false;
    }
    offset += n;
  }
  auto committed = (*upload)->Commit(nullptr);
  if (!committed.ok()) {
    Report("ERR", committed.status().ToString());
    return false;
  }
  Report("ACK", name + " " + committed->version);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <store_root>\n", argv[0]);
    return 2;
  }
  auto store = loramux::AdapterStore::Open(argv[1]);
  if (!store.ok()) {
    std::fprintf(stderr, "cannot open store: %s\n", store.status().ToString().c_str());
    return 1;
  }
  std::mt19937_64 rng(std::random_device{}());
  std::uniform_int_distribution<size_t> pick(0, std::size(kNames) - 1);
  std::string previous;
  while (true) {
    const bool repeat = !previous.empty() && rng() % 10 == 0;
    const std::string payload = repeat ? previous : RandomPayload(rng);
    Upload(**store, kNames[pick(rng)], payload, rng);
    previous = payload;
  }
}
