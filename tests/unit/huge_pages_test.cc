// EmptyOnHugePages (tensor/huge_pages.h): large tensors on their own 2 MiB-aligned mapping advised
// for huge pages, unmapped with their storage; small ones from LibTorch's allocator.
#include "tensor/huge_pages.h"

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace loramux {
namespace {

uintptr_t Address(const torch::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()); }

// Whether `line` starts a /proc/self/smaps entry ("start-end perms offset dev inode [path]").
bool StartsEntry(const std::string& line) {
  const std::string range = line.substr(0, line.find(' '));
  return range.find('-') != std::string::npos &&
         range.find_first_not_of("0123456789abcdef-") == std::string::npos;
}

// The /proc/self/smaps entry of the mapping that starts at `start`, or "" when none does.
std::string SmapsEntry(uintptr_t start) {
  std::ostringstream prefix;
  prefix << std::hex << start << '-';
  std::ifstream smaps("/proc/self/smaps");
  std::string line, entry;
  bool inside = false;
  while (std::getline(smaps, line)) {
    if (StartsEntry(line)) {
      if (inside) break;
      inside = line.rfind(prefix.str(), 0) == 0;
    }
    if (inside) entry += line + "\n";
  }
  return entry;
}

bool TransparentHugePagesOff() {
  std::ifstream enabled("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string modes;
  std::getline(enabled, modes);
  return modes.empty() || modes.find("[never]") != std::string::npos;
}

TEST(HugePagesTest, LargeTensorsGetAnAlignedMappingAdvisedForHugePages) {
  torch::Tensor t = EmptyOnHugePages({3, 1 << 20}, torch::kFloat32);  // 12 MiB
  EXPECT_EQ(t.sizes(), torch::IntArrayRef({3, 1 << 20}));
  EXPECT_EQ(t.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(Address(t) % kHugePageBytes, 0u);
  t.fill_(1.5f);
  EXPECT_EQ(t.sum().item<double>(), 1.5 * 3 * (1 << 20));
  const std::string entry = SmapsEntry(Address(t));
  ASSERT_FALSE(entry.empty()) << "no mapping starts at the tensor's data";
  if (TransparentHugePagesOff()) GTEST_SKIP() << "transparent huge pages are off on this host";
  const size_t field = entry.find("THPeligible:");
  ASSERT_NE(field, std::string::npos) << entry;
  EXPECT_EQ(std::stoi(entry.substr(field + 12)), 1) << entry;
}

TEST(HugePagesTest, TheMappingGoesWithTheLastTensorSharingIt) {
  torch::Tensor t = EmptyOnHugePages({int64_t{4} << 20}, torch::kUInt8);
  const uintptr_t start = Address(t);
  torch::Tensor view = t.narrow(0, 1 << 20, 1 << 20);
  t = torch::Tensor();
  view.fill_(7);  // still mapped: the view shares the storage
  EXPECT_EQ(view.sum().item<int64_t>(), int64_t{7} << 20);
  EXPECT_FALSE(SmapsEntry(start).empty());
  view = torch::Tensor();
  EXPECT_TRUE(SmapsEntry(start).empty()) << "the mapping outlived its tensors";
}

TEST(HugePagesTest, SmallTensorsComeFromTheAllocator) {
  const torch::Tensor t = EmptyOnHugePages({10, 3}, torch::kBFloat16);
  EXPECT_EQ(t.sizes(), torch::IntArrayRef({10, 3}));
  EXPECT_EQ(t.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(t.is_contiguous());
}

}  // namespace
}  // namespace loramux
