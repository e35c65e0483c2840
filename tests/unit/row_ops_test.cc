// The decoder's fused per-row steps (model/row_ops.h) against HF's formulas in float64.
#include "model/row_ops.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace loramux {
namespace {

class RowOpsTest : public ::testing::TestWithParam<torch::ScalarType> {
 protected:
  torch::ScalarType dtype() const { return GetParam(); }
  torch::Tensor Random(std::vector<int64_t> shape, int seed) const {
    torch::manual_seed(seed);
    return torch::randn(shape).to(dtype());
  }
  // One rounding to the dtype, plus float32 accumulation over ~1000 terms.
  double Tolerance() const { return dtype() == torch::kFloat32 ? 1e-5 : 1e-2; }
};

double MaxRelative(const torch::Tensor& got, const torch::Tensor& want) {
  const torch::Tensor g = got.to(torch::kFloat64), w = want.to(torch::kFloat64);
  return ((g - w).abs() / (w.abs() + 1e-3)).max().item<double>();
}

TEST_P(RowOpsTest, RmsNormIsHfsFormula) {
  const torch::Tensor x = Random({5, 1000}, 1), w = Random({1000}, 2);
  const torch::Tensor x64 = x.to(torch::kFloat64);
  const torch::Tensor want =
      w.to(torch::kFloat64) * x64 * torch::rsqrt(x64.pow(2).mean(-1, true) + 1e-5);
  const torch::Tensor got = RmsNorm(x, w, 1e-5);
  EXPECT_EQ(got.scalar_type(), dtype());
  EXPECT_LE(MaxRelative(got, want), 2 * Tolerance());
}

TEST_P(RowOpsTest, RopeRotatesEachTokenByItsPosition) {
  const int64_t hd = 8, positions_n = 20;
  torch::Tensor x = Random({3, 2, hd}, 3);
  const torch::Tensor angles = torch::outer(torch::arange(positions_n, torch::kFloat64),
                                            torch::rand({hd / 2}, torch::kFloat64));
  const torch::Tensor emb = torch::cat({angles, angles}, -1);
  const torch::Tensor cos = emb.cos().to(torch::kFloat32), sin = emb.sin().to(torch::kFloat32);
  const std::vector<int64_t> positions = {0, 7, 19};
  const torch::Tensor pos = torch::tensor(positions);
  const torch::Tensor x64 = x.to(torch::kFloat64);
  const torch::Tensor rotated =
      torch::cat({-x64.narrow(-1, hd / 2, hd / 2), x64.narrow(-1, 0, hd / 2)}, -1);
  const torch::Tensor want = x64 * cos.index_select(0, pos).unsqueeze(1).to(torch::kFloat64) +
                             rotated * sin.index_select(0, pos).unsqueeze(1).to(torch::kFloat64);
  ApplyRope(x, cos, sin, pos);
  EXPECT_LE(MaxRelative(x, want), Tolerance());
}

TEST_P(RowOpsTest, SiluMulIsSiluOfTheGateTimesUp) {
  const torch::Tensor g = Random({4, 3000}, 5) * 4, u = Random({4, 3000}, 6);
  const torch::Tensor g64 = g.to(torch::kFloat64);
  const torch::Tensor want = g64 / (1 + torch::exp(-g64)) * u.to(torch::kFloat64);
  EXPECT_LE(MaxRelative(SiluMul(g, u), want), 2 * Tolerance());
}

// Each op works row by row: a row's bits do not depend on the rows beside it.
TEST_P(RowOpsTest, ARowsResultDoesNotDependOnTheOthers) {
  const torch::Tensor x = Random({9, 512}, 7), w = Random({512}, 8);
  EXPECT_TRUE(torch::equal(RmsNorm(x, w, 1e-6).narrow(0, 4, 1),
                           RmsNorm(x.narrow(0, 4, 1).contiguous(), w, 1e-6)));
  EXPECT_TRUE(
      torch::equal(SiluMul(x, x * 2).narrow(0, 4, 1),
                   SiluMul(x.narrow(0, 4, 1).contiguous(), (x * 2).narrow(0, 4, 1).contiguous())));
}

// Off the fused path (here: a strided input) the LibTorch composition gives the same values.
TEST_P(RowOpsTest, StridedInputsTakeTheCompositionAndAgree) {
  const torch::Tensor x = Random({16, 6}, 9), w = Random({8}, 10);
  const torch::Tensor strided = x.t().narrow(1, 0, 8);  // [6, 8], not contiguous
  ASSERT_FALSE(strided.is_contiguous());
  EXPECT_LE(MaxRelative(RmsNorm(strided, w, 1e-5), RmsNorm(strided.contiguous(), w, 1e-5)),
            2 * Tolerance());
}

INSTANTIATE_TEST_SUITE_P(Dtypes, RowOpsTest, ::testing::Values(torch::kFloat32, torch::kBFloat16),
                         [](const auto& info) {
                           return info.param == torch::kFloat32 ? "float32" : "bfloat16";
                         });

}  // namespace
}  // namespace loramux
