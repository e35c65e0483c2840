// The decode GEMM against float64 maths: 1 to 4 rows, row counts of W that are not multiples of
// the kernel's four-row passes or of any vector width, with and without bias.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include "tensor/decode_linear.h"

namespace loramux {
namespace {

TEST(DecodeLinearTest, MatchesFloat64MathsForEveryRowCount) {
  torch::manual_seed(5);
  for (int64_t rows = 1; rows <= kDecodeLinearMaxRows; ++rows) {
    for (auto [in, out] : {std::pair<int64_t, int64_t>{64, 40}, {97, 131}, {1024, 7}}) {
      const torch::Tensor x = torch::randn({rows, in}), w = torch::randn({out, in});
      for (const torch::Tensor& b : {torch::Tensor(), torch::randn({out})}) {
        ASSERT_TRUE(DecodeLinearApplies(x, w, b));
        const torch::Tensor got = DecodeLinear(x, w, b);
        torch::Tensor want = torch::matmul(x.to(torch::kFloat64), w.to(torch::kFloat64).t());
        if (b.defined()) want += b.to(torch::kFloat64);
        const double error = (got.to(torch::kFloat64) - want).abs().max().item<double>();
        EXPECT_LE(error,
                  1e-5 * std::sqrt(static_cast<double>(in)) * want.abs().max().item<double>())
            << rows << " rows, " << in << " -> " << out << (b.defined() ? " with bias" : "");
        EXPECT_EQ(got.sizes(), (std::vector<int64_t>{rows, out}));
      }
    }
  }
}

TEST(DecodeLinearTest, LinearFallsBackToLibTorchOutsideItsShapes) {
  const torch::Tensor w = torch::randn({8, 16});
  for (const torch::Tensor& x :
       {torch::randn({kDecodeLinearMaxRows + 1, 16}),  // more rows than a decode step's
        torch::randn({2, 16}, torch::kFloat64),        // another dtype
        torch::randn({16, 2}).t()}) {                  // not contiguous
    EXPECT_FALSE(DecodeLinearApplies(x, w.to(x.scalar_type()), torch::Tensor()));
    EXPECT_TRUE(
        torch::equal(Linear(x, w.to(x.scalar_type())), torch::linear(x, w.to(x.scalar_type()))));
  }
}

}  // namespace
}  // namespace loramux
