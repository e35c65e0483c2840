// PackedLinear (tensor/packed_linear.h): the base weights packed once for a CPU matmul kernel,
// tested for each kernel (the panel kernels of tensor/panel_gemm.h and oneDNN's) and dtype.
#include "tensor/packed_linear.h"

#include <tuple>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tensor/panel_gemm.h"

namespace loramux {
namespace {

using Kernel = PackedLinear::Kernel;

class PackedLinearTest : public ::testing::TestWithParam<std::tuple<torch::ScalarType, Kernel>> {
 protected:
  torch::ScalarType dtype() const { return std::get<0>(GetParam()); }
  Kernel kernel() const { return std::get<1>(GetParam()); }
  torch::Tensor Random(std::vector<int64_t> shape, int seed) const {
    torch::manual_seed(seed);
    return torch::randn(shape).to(dtype());
  }
  // Null where the kernel does not run on this CPU or build (the test then skips), except that
  // float32 always packs where oneDNN is built in.
  std::shared_ptr<const PackedLinear> Pack(const torch::Tensor& w) const {
    auto packed = PackedLinear::Pack(w, kernel());
    if (packed) EXPECT_EQ(packed->kernel(), kernel());
    if (!packed && dtype() == torch::kFloat32 && kernel() == Kernel::kOneDnn) {
      ADD_FAILURE() << "no weight packs (no oneDNN?)";
    }
    return packed;
  }
  // Relative bound on the error of one rounded GEMM with in = 300 terms.
  double Tolerance() const { return dtype() == torch::kFloat32 ? 1e-5 : 1e-2; }
};

#define PACK_OR_SKIP(packed, w) \
  auto packed = Pack(w);        \
  if (!packed) GTEST_SKIP() << "this kernel does not run here for this dtype"

double RelativeError(const torch::Tensor& got, const torch::Tensor& want) {
  const torch::Tensor g = got.to(torch::kFloat64), w = want.to(torch::kFloat64);
  return ((g - w).abs().max() / w.abs().max()).item<double>();
}

TEST_P(PackedLinearTest, MultipliesLikeLinearWithAndWithoutBias) {
  const torch::Tensor w = Random({200, 300}, 1), bias = Random({200}, 2);
  PACK_OR_SKIP(packed, w);
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

// Shapes off every block size: an odd number of inputs (bfloat16 pairs them), outputs that end
// part-way through a panel of 64 or fill less than one, and every remainder of the 6-row tile.
TEST_P(PackedLinearTest, MultipliesShapesThatFillNoBlock) {
  for (const auto& [out, in] :
       std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {5, 3}, {63, 17}, {65, 31}, {130, 301}}) {
    const torch::Tensor w = Random({out, in}, static_cast<int>(out + in)), bias = Random({out}, 9);
    PACK_OR_SKIP(packed, w);
    for (int64_t m = 1; m <= 13; ++m) {
      const torch::Tensor x = Random({m, in}, static_cast<int>(m));
      const torch::Tensor exact =
          torch::linear(x.to(torch::kFloat64), w.to(torch::kFloat64), bias.to(torch::kFloat64));
      const torch::Tensor y = packed->Apply(x, bias);
      ASSERT_EQ(y.sizes(), (std::vector<int64_t>{m, out}));
      EXPECT_LE(RelativeError(y, exact), Tolerance()) << out << "x" << in << ", m = " << m;
    }
    EXPECT_TRUE(torch::equal(packed->Unpack(), w)) << out << "x" << in;
  }
}

// One layout for every row count: a row's result is the same bits whatever shares the call, which
// is what keeps greedy decoding independent of batch-mates. The model's shapes: long sums
// (2,816 inputs) and many panels.
// (oneDNN keeps it with its AVX-512 kernels only: its AVX2 GEMM blocks by the row count, so the
// automatic choice takes the panel kernels on every CPU with AVX2.)
TEST_P(PackedLinearTest, ARowsResultDoesNotDependOnTheRowsBesideIt) {
  if (kernel() == Kernel::kOneDnn && PanelGemmIsa(PanelType::kFloat32) != PanelIsa::kAvx512) {
    GTEST_SKIP() << "oneDNN's GEMM keeps rows apart on AVX-512 CPUs only";
  }
  for (const auto& [out, in] : std::vector<std::pair<int64_t, int64_t>>{{300, 256}, {700, 2816}}) {
    const torch::Tensor w = Random({out, in}, 4);
    PACK_OR_SKIP(packed, w);
    const torch::Tensor x = Random({70, in}, 5);
    const torch::Tensor all = packed->Apply(x);
    for (int64_t row : {0, 5, 31, 69}) {
      EXPECT_TRUE(torch::equal(packed->Apply(x.narrow(0, row, 1)), all.narrow(0, row, 1))) << row;
      EXPECT_TRUE(torch::equal(packed->Apply(x.narrow(0, 0, row + 1)).narrow(0, row, 1),
                               all.narrow(0, row, 1)))
          << row;
    }
  }
}

// A row of infinities and NaN gives NaN and infinities in that row alone.
TEST_P(PackedLinearTest, ARowOfNonFiniteValuesStaysInItsRow) {
  const torch::Tensor w = Random({100, 64}, 11);
  PACK_OR_SKIP(packed, w);
  const torch::Tensor x = Random({8, 64}, 12);
  const torch::Tensor clean = packed->Apply(x);
  torch::Tensor poisoned = x.clone();
  poisoned[3][0] = std::numeric_limits<float>::quiet_NaN();
  poisoned[3][1] = std::numeric_limits<float>::infinity();
  const torch::Tensor y = packed->Apply(poisoned);
  EXPECT_TRUE(y[3].isnan().all().item<bool>());
  for (int64_t row : {0, 2, 4, 7}) EXPECT_TRUE(torch::equal(y[row], clean[row])) << row;
}

TEST_P(PackedLinearTest, UnpackGivesTheWeightBackExactly) {
  const torch::Tensor w = Random({130, 70}, 6);
  PACK_OR_SKIP(packed, w);
  EXPECT_TRUE(torch::equal(packed->Unpack(), w));
}

// An embedding table held packed as its tied head: lookups get its rows back exactly, in any
// order and with repeats; an index out of range is refused.
TEST_P(PackedLinearTest, RowsAreTheWeightsRowsExactly) {
  for (const auto& [out, in] : std::vector<std::pair<int64_t, int64_t>>{{130, 70}, {65, 31}}) {
    const torch::Tensor w = Random({out, in}, 13);
    PACK_OR_SKIP(packed, w);
    const torch::Tensor index =
        torch::tensor(std::vector<int64_t>{out - 1, 0, 63, 64, 5, 63}, torch::kInt64);
    EXPECT_TRUE(torch::equal(packed->Rows(index), w.index_select(0, index))) << out << "x" << in;
    EXPECT_EQ(packed->Rows(torch::zeros({0}, torch::kInt64)).sizes(),
              (std::vector<int64_t>{0, in}));
    EXPECT_THROW(packed->Rows(torch::tensor(std::vector<int64_t>{out}, torch::kInt64)), c10::Error);
  }
}

TEST_P(PackedLinearTest, RefusesInputsOfAnotherShapeOrDtype) {
  PACK_OR_SKIP(packed, Random({16, 32}, 7));
  EXPECT_THROW(packed->Apply(Random({4, 31}, 8)), c10::Error);
  EXPECT_THROW(packed->Apply(torch::randn({4, 32}, torch::kFloat64)), c10::Error);
  EXPECT_THROW(packed->Apply(Random({4, 32}, 9), Random({15}, 10)), c10::Error);
}

// Weights of 2 MiB or more are packed onto huge pages (tensor/huge_pages.h): the same values in
// the same layout as small ones.
TEST_P(PackedLinearTest, LargeWeightsPackOntoHugePagesLikeSmallOnes) {
  const torch::Tensor w = Random({1100, 1030}, 9);  // 4.5 MB in float32, 2.3 MB in bfloat16
  PACK_OR_SKIP(packed, w);
  EXPECT_TRUE(torch::equal(packed->Unpack(), w));
  const torch::Tensor x = Random({5, 1030}, 10);
  const torch::Tensor want = torch::linear(x.to(torch::kFloat64), w.to(torch::kFloat64));
  const double scale = want.abs().max().item<double>();
  EXPECT_LE((packed->Apply(x).to(torch::kFloat64) - want).abs().max().item<double>(),
            Tolerance() * 4 * scale);
}

TEST_P(PackedLinearTest, MultipliesNoRows) {
  PACK_OR_SKIP(packed, Random({16, 32}, 7));
  EXPECT_EQ(packed->Apply(Random({0, 32}, 8)).sizes(), (std::vector<int64_t>{0, 16}));
}

INSTANTIATE_TEST_SUITE_P(
    DtypesAndKernels, PackedLinearTest,
    ::testing::Combine(::testing::Values(torch::kFloat32, torch::kBFloat16),
                       ::testing::Values(Kernel::kPanels, Kernel::kOneDnn)),
    [](const auto& info) {
      return std::string(std::get<0>(info.param) == torch::kFloat32 ? "float32" : "bfloat16") +
             (std::get<1>(info.param) == Kernel::kPanels ? "_panels" : "_onednn");
    });

TEST(PackedLinearPackTest, LeavesWhatItCannotPackToThePlainPath) {
  for (Kernel kernel : {Kernel::kAuto, Kernel::kPanels, Kernel::kOneDnn}) {
    EXPECT_EQ(PackedLinear::Pack(torch::randn({8, 8}, torch::kFloat64), kernel), nullptr);
    EXPECT_EQ(PackedLinear::Pack(torch::randn({8, 8}).t(), kernel), nullptr);  // not contiguous
    EXPECT_EQ(PackedLinear::Pack(torch::randn({8}), kernel), nullptr);
  }
}

// Automatic choice: the panel kernels wherever they run.
TEST(PackedLinearPackTest, ChoosesThePanelKernelsWhereTheyRun) {
  for (torch::ScalarType dtype : {torch::kFloat32, torch::kBFloat16}) {
    const auto packed = PackedLinear::Pack(torch::randn({8, 8}).to(dtype));
    const PanelType type = dtype == torch::kFloat32 ? PanelType::kFloat32 : PanelType::kBFloat16;
    if (PanelGemmRuns(type)) {
      ASSERT_NE(packed, nullptr);
      EXPECT_EQ(packed->kernel(), Kernel::kPanels);
    } else if (packed != nullptr) {
      EXPECT_EQ(packed->kernel(), Kernel::kOneDnn);
    }
  }
}

// W [n, k] in the panel layout of tensor/panel_gemm.h, as a plain tensor of W's dtype.
torch::Tensor Panels(const torch::Tensor& w, PanelType type) {
  const int64_t n = w.size(0), k = w.size(1), group = PanelGroup(type);
  const int64_t panels = PanelCount(n), groups = (k + group - 1) / group;
  return torch::constant_pad_nd(w, {0, groups * group - k, 0, panels * kPanelWidth - n}, 0)
      .view({panels, kPanelWidth, groups, group})
      .permute({0, 2, 1, 3})
      .contiguous();
}

// y [m, n] through the panel kernels for `isa`.
torch::Tensor PanelProduct(PanelIsa isa, PanelType type, const torch::Tensor& x,
                           const torch::Tensor& panels, int64_t n, const torch::Tensor& bias) {
  torch::Tensor y = torch::empty({x.size(0), n}, x.options());
  PanelGemmWith(isa, type, x.data_ptr(), x.size(0), x.size(1), panels.data_ptr(), n,
                bias.data_ptr<float>(), y.data_ptr(), 0, PanelCount(n));
  return y;
}

// The AVX2 kernels (CPUs without AVX-512 take them; those with it run them too): within rounding
// of the float64 product, a row's bits independent of the rows beside it for every tile shape (1
// to 13 rows; an odd sum and a width off the panel), and on CPUs with AVX-512 float32 gives the
// AVX-512 kernel's bits (each output's FMAs run in the same order).
TEST(PanelGemmTest, Avx2KernelsKeepRowsApartAndAgreeWithAvx512) {
  for (PanelType type : {PanelType::kFloat32, PanelType::kBFloat16}) {
    const PanelIsa isa = PanelGemmIsa(type);
    if (isa == PanelIsa::kNone) continue;
    const torch::ScalarType dtype =
        type == PanelType::kFloat32 ? torch::kFloat32 : torch::kBFloat16;
    torch::manual_seed(21);
    const int64_t n = 100, k = 301;
    const torch::Tensor w = torch::randn({n, k}).to(dtype), bias = torch::randn({n});
    const torch::Tensor panels = Panels(w, type);
    const torch::Tensor x = torch::randn({13, k}).to(dtype);
    const torch::Tensor avx2 = PanelProduct(PanelIsa::kAvx2, type, x, panels, n, bias);
    const torch::Tensor want =
        torch::linear(x.to(torch::kFloat64), w.to(torch::kFloat64), bias.to(torch::kFloat64));
    EXPECT_LE(((avx2.to(torch::kFloat64) - want).abs().max() / want.abs().max()).item<double>(),
              type == PanelType::kFloat32 ? 1e-5 : 1e-2);
    for (int64_t m = 1; m <= 13; ++m) {
      const torch::Tensor part =
          PanelProduct(PanelIsa::kAvx2, type, x.narrow(0, 0, m).contiguous(), panels, n, bias);
      EXPECT_TRUE(torch::equal(part, avx2.narrow(0, 0, m))) << "m = " << m;
    }
    if (isa == PanelIsa::kAvx512 && type == PanelType::kFloat32) {
      const torch::Tensor avx512 = PanelProduct(PanelIsa::kAvx512, type, x, panels, n, bias);
      EXPECT_TRUE(torch::equal(avx2, avx512)) << (avx2 - avx512).abs().max().item<float>();
    }
  }
}

}  // namespace
}  // namespace loramux
