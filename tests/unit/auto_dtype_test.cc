// --dtype=auto: bfloat16 exactly where the CPU lists native bfloat16 instructions, and a log line
// that says so with both measured GEMM rates.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "tensor/tensor_util.h"

namespace loramux {
namespace {

using ::testing::HasSubstr;

bool CpuInfoLists(const std::string& flag) {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("flags", 0) == 0 || line.rfind("Features", 0) == 0) {
      return (line + " ").find(" " + flag + " ") != std::string::npos;
    }
  }
  return false;
}

TEST(AutoDtypeTest, BFloat16ExactlyWhereTheCpuMultipliesItNatively) {
  const bool native =
      CpuInfoLists("avx512_bf16") || CpuInfoLists("amx_bf16") || CpuInfoLists("bf16");
  const AutoDtype choice = ChooseAutoDtype(torch::kCPU);
  EXPECT_EQ(choice.dtype, native ? torch::kBFloat16 : torch::kFloat32) << choice.reason;
  EXPECT_THAT(choice.reason, HasSubstr(native ? "serves in bfloat16" : "serves in float32"));
  EXPECT_THAT(choice.reason, HasSubstr("GFLOP/s in bfloat16"));
  EXPECT_THAT(choice.reason, HasSubstr("in float32"));
}

TEST(AutoDtypeTest, LinearRateIsPositive) {
  EXPECT_GT(LinearGflops(torch::kCPU, torch::kFloat32, 4, 64, 64), 0.0);
}

}  // namespace
}  // namespace loramux
