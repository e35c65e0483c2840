// Fuzzes the adapter store's upload state machine (adapters/adapter_store.h), what an Upload
// stream drives: sequences of BeginUpload (a client's manifest), Append (its chunks), Commit,
// dropping an upload midway, Delete, Current, Resolve and List, on a real store in a fresh
// directory (under $TMPDIR, /dev/shm when unset) for every input.
//
// Checked beyond "no crash, no UB, no leak": every outcome has one of the codes the header
// documents (never INTERNAL or UNKNOWN); Commit succeeds only for exactly the declared bytes
// with the declared digest, and the version it returns is then Current and verifies; Delete
// makes a name NOT_FOUND; and no file descriptor outlives the store.
#include <dirent.h>
#include <fuzzer/FuzzedDataProvider.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "adapters/adapter_store.h"
#include "common/sha256.h"
#include "formats/safetensors.h"
#include "tests/fuzz/fuzz_check.h"

namespace loramux {
namespace {

using Code = absl::StatusCode;

int OpenFds() {
  int n = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (::readdir(d) != nullptr) ++n;
    ::closedir(d);
  }
  return n;
}

void CheckCode(const absl::Status& s, std::initializer_list<Code> allowed, const char* op) {
  bool ok = s.ok();
  for (Code c : allowed) ok = ok || s.code() == c;
  FUZZ_CHECK(ok, op, ": unexpected ", s.ToString());
}

struct Pending {
  std::unique_ptr<AdapterStore::Upload> upload;
  AdapterManifest manifest;
  std::string planned;   // the bytes the manifest was made for, which the chunks usually carry
  std::string appended;  // what Append accepted
};

std::string Name(FuzzedDataProvider& in) {
  switch (in.ConsumeIntegralInRange(0, 3)) {
    case 0: return "a";
    case 1: return "b.v-2_x";
    case 2: return std::string(128, 'n');
    default: return in.ConsumeRandomLengthString(140);
  }
}

AdapterValidator Validator(FuzzedDataProvider& in) {
  switch (in.ConsumeIntegralInRange(0, 2)) {
    case 0: return nullptr;
    case 1:  // what a server checks first: the bytes are a safetensors file
      return [](const AdapterManifest&, const std::string& path) {
        return SafetensorsFile::Open(path).status();
      };
    default:
      return [](const AdapterManifest&, const std::string&) {
        return absl::FailedPreconditionError("the adapter does not fit the base model");
      };
  }
}

void Run(FuzzedDataProvider& in, AdapterStore& store) {
  std::vector<Pending> uploads;
  std::map<std::string, std::string> current;  // name -> version, as the commits made it
  for (int step = 0; step < 24 && in.remaining_bytes() > 0; ++step) {
    switch (in.ConsumeIntegralInRange(0, 6)) {
      case 0: {  // a client's manifest
        Pending p;
        p.manifest.name = Name(in);
        p.manifest.format = in.ConsumeBool() ? AdapterFormat::kPeft : AdapterFormat::kSeed;
        p.manifest.config_json =
            in.ConsumeBool() ? R"({"alpha": 1})" : in.ConsumeRandomLengthString(64);
        p.planned = "w" + in.ConsumeRandomLengthString(2048);
        p.manifest.size_bytes =
            in.ConsumeBool() ? p.planned.size() : in.ConsumeIntegral<uint64_t>();
        p.manifest.sha256 =
            in.ConsumeBool() ? Sha256Hex(p.planned) : in.ConsumeRandomLengthString(70);
        auto upload = store.BeginUpload(p.manifest);
        CheckCode(upload.status(), {Code::kInvalidArgument, Code::kResourceExhausted},
                  "BeginUpload");
        if (upload.ok()) {
          p.upload = std::move(*upload);
          uploads.push_back(std::move(p));
        }
        break;
      }
      case 1: {  // a chunk
        if (uploads.empty()) break;
        Pending& p = uploads[in.ConsumeIntegralInRange<size_t>(0, uploads.size() - 1)];
        // Mostly the next piece of the planned bytes; sometimes anything.
        const size_t next = std::min(p.appended.size(), p.planned.size());
        const std::string chunk =
            in.ConsumeIntegralInRange(0, 3) != 0
                ? p.planned.substr(next, in.ConsumeBool() ? std::string::npos
                                                          : in.ConsumeIntegralInRange<size_t>(
                                                                0, p.planned.size() - next))
                : in.ConsumeRandomLengthString(1024);
        const absl::Status s = p.upload->Append(chunk);
        CheckCode(s, {Code::kInvalidArgument, Code::kResourceExhausted, Code::kFailedPrecondition},
                  "Append");
        if (s.ok()) p.appended += chunk;
        break;
      }
      case 2: {  // the end of the stream
        if (uploads.empty()) break;
        const size_t i = in.ConsumeIntegralInRange<size_t>(0, uploads.size() - 1);
        Pending& p = uploads[i];
        auto stored = p.upload->Commit(Validator(in));
        CheckCode(stored.status(),
                  {Code::kInvalidArgument, Code::kDataLoss, Code::kAlreadyExists,
                   Code::kFailedPrecondition},
                  "Commit");
        if (stored.ok()) {
          FUZZ_CHECK(p.appended.size() == p.manifest.size_bytes &&
                         Sha256Hex(p.appended) == stored->version &&
                         stored->name == p.manifest.name,
                     "Commit published bytes other than the declared ones");
          current[stored->name] = stored->version;
          auto now = store.Current(stored->name);
          FUZZ_CHECK(now.ok() && now->version == stored->version,
                     "a committed version is not current");
          FUZZ_CHECK(store.Verify(*now).ok(), "a committed version does not verify");
        }
        break;
      }
      case 3:  // the client goes away
        if (!uploads.empty())
          uploads.erase(uploads.begin() + in.ConsumeIntegralInRange<size_t>(0, uploads.size() - 1));
        break;
      case 4: {
        const std::string name = Name(in);
        const absl::Status s = store.Delete(name);
        CheckCode(s, {Code::kNotFound, Code::kInvalidArgument}, "Delete");
        if (s.ok()) {
          current.erase(name);
          CheckCode(store.Current(name).status(), {Code::kNotFound}, "Current after Delete");
          FUZZ_CHECK(!store.Current(name).ok(), "a deleted name is still current");
        }
        break;
      }
      case 5: {
        const std::string name = Name(in);
        auto now = store.Current(name);
        CheckCode(now.status(), {Code::kNotFound, Code::kInvalidArgument}, "Current");
        auto it = current.find(name);
        if (it != current.end()) {
          FUZZ_CHECK(now.ok() && now->version == it->second, "Current(\"", name,
                     "\") lost its version");
        }
        auto resolved = store.Resolve(name, in.ConsumeRandomLengthString(70));
        CheckCode(resolved.status(), {Code::kNotFound, Code::kInvalidArgument}, "Resolve");
        break;
      }
      default: {
        auto page = store.List(in.ConsumeRandomLengthString(140), in.ConsumeIntegralInRange(-1, 3));
        CheckCode(page.status(), {Code::kInvalidArgument}, "List");
        break;
      }
    }
  }
}

}  // namespace
}  // namespace loramux

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loramux;
  static const std::string base = [] {
    const char* tmp = std::getenv("TMPDIR");
    std::string dir = std::string(tmp != nullptr ? tmp : "/dev/shm") + "/loramux-upload-fuzz-" +
                      std::to_string(::getpid());
    std::filesystem::remove_all(dir);
    return dir;
  }();
  const int fds_before = OpenFds();
  {
    AdapterStoreOptions options;
    options.max_adapter_bytes = 4096;  // so that the limit is within reach
    auto store = AdapterStore::Open(base, options);
    FUZZ_CHECK(store.ok(), "cannot open a store in ", base, ": ", store.status().ToString());
    FuzzedDataProvider in(data, size);
    Run(in, **store);
  }
  FUZZ_CHECK(OpenFds() == fds_before, OpenFds() - fds_before,
             " file descriptors outlive the store");
  std::filesystem::remove_all(base);
  return 0;
}
