// PackedLinear (tensor/packed_linear.h): the base weights packed once for oneDNN's matmul kernels.
#include "tensor/packed_linear.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace loramux {
namespace {

class PackedLinearTest : public ::testing::TestWithParam<torch::ScalarType> {
 protected:
  torch::ScalarType dtype() const { return GetParam(); }
  torch::Tensor Random(std::vector<int64_t> shape, int seed) const {
    torch::manual_seed(seed);
    return torch::randn(shape).to(dtype());
  }
  // Float32 packs wherever oneDNN is built in; bfloat16 where this CPU has native kernels for it.
  std::shared_ptr<const PackedLinear> Pack(const torch::Tensor& w) const {
    auto packed = PackedLinear::Pack(w);
    if (!packed && dtype() == torch::kFloat32) ADD_FAILURE() << "no weight packs (no oneDNN?)";
    return packed;
  }
  // Relative bound on the error of one rounded GEMM with in = 300 terms.
  double Tolerance() const { return dtype() == torch::kFloat32 ? 1e-5 : 1e-2; }
};

double RelativeError(const torch::Tensor& got, const torch::Tensor& want) {
  const torch::Tensor g = got.to(torch::kFloat64), w = want.to(torch::kFloat64);
  return ((g - w).abs().max() / w.abs().max()).item<double>();
}

TEST_P(PackedLinearTest, MultipliesLikeLinearWithAndWithoutBias) {
  const torch::Tensor w = Random({200, 300}, 1), bias = Random({200}, 2);
  auto packed = Pack(w);
  if (!packed) GTEST_SKIP() << "no native bfloat16 kernels on this CPU";
  EXPECT_EQ(packed->out_features(), 200);
  EXPECT_EQ(packed->in_features(), 300);
  EXPECT_GE(packed->bytes(), w.numel() * w.element_size());
  for (int64_t m : {1, 3, 32, 77}) {
    const torch::Tensor x = Random({m, 300}, 3 + static_cast<int>(m));
    const torch::Tensor exact = torch::linear(x.to(torch::kFloat64), w.to(torch::kFloat64));
    const torch::Tensor y = packed->Apply(x);
    ASSERT_EQ(y.sizes(), (std::vector<int64_t>{m, 200}));
    EXPECT_EQ(y.scalar_type(), dtype());
    EXPECT_LE(RelativeError(y, exact), Tolerance()) << m;
    const torch::Tensor with_bias = packed->Apply(x, bias);
    EXPECT_LE(RelativeError(with_bias, exact + bias.to(torch::kFloat64)), Tolerance()) << m;
  }
}

// One layout for every row count: a row's result is the same bits whatever shares the call, which
// is what keeps greedy decoding independent of batch-mates.
TEST_P(PackedLinearTest, ARowsResultDoesNotDependOnTheRowsBesideIt) {
  const torch::Tensor w = Random({300, 256}, 4);
  auto packed = Pack(w);
  if (!packed) GTEST_SKIP() << "no native bfloat16 kernels on this CPU";
  const torch::Tensor x = Random({70, 256}, 5);
  const torch::Tensor all = packed->Apply(x);
  for (int64_t row : {0, 31, 69}) {
    EXPECT_TRUE(torch::equal(packed->Apply(x.narrow(0, row, 1)), all.narrow(0, row, 1))) << row;
    EXPECT_TRUE(torch::equal(packed->Apply(x.narrow(0, 0, row + 1)).narrow(0, row, 1),
                             all.narrow(0, row, 1)))
        << row;
  }
}

TEST_P(PackedLinearTest, UnpackGivesTheWeightBackExactly) {
  const torch::Tensor w = Random({130, 70}, 6);
  auto packed = Pack(w);
  if (!packed) GTEST_SKIP() << "no native bfloat16 kernels on this CPU";
  EXPECT_TRUE(torch::equal(packed->Unpack(), w));
}

TEST_P(PackedLinearTest, RefusesInputsOfAnotherShapeOrDtype) {
  auto packed = Pack(Random({16, 32}, 7));
  if (!packed) GTEST_SKIP() << "no native bfloat16 kernels on this CPU";
  EXPECT_THROW(packed->Apply(Random({4, 31}, 8)), c10::Error);
  EXPECT_THROW(packed->Apply(torch::randn({4, 32}, torch::kFloat64)), c10::Error);
  EXPECT_THROW(packed->Apply(Random({4, 32}, 9), Random({15}, 10)), c10::Error);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, PackedLinearTest,
                         ::testing::Values(torch::kFloat32, torch::kBFloat16),
                         [](const auto& info) {
                           return info.param == torch::kFloat32 ? "float32" : "bfloat16";
                         });

TEST(PackedLinearPackTest, LeavesWhatItCannotPackToThePlainPath) {
  EXPECT_EQ(PackedLinear::Pack(torch::randn({8, 8}, torch::kFloat64)), nullptr);
  EXPECT_EQ(PackedLinear::Pack(torch::randn({8, 8}).t()), nullptr);  // not contiguous
  EXPECT_EQ(PackedLinear::Pack(torch::randn({8})), nullptr);
}

}  // namespace
}  // namespace loramux
