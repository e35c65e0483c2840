// The adapter factor arena and its one-pass copy: every dtype converts exactly as LibTorch does,
// transposes are exact for every shape (vector tiles and scalar edges), any non-finite value is
// caught wherever it sits, and large arenas are huge-page aligned and reused after free.
#include <cmath>
#include <cstring>
#include <limits>

#include <random>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "adapters/factor_arena.h"
#include "tensor/half_float.h"

namespace loramux {
namespace {

// A TensorView over `t` (contiguous, kept alive by the caller) with `offset` bytes of padding
// before it in `storage`, so the data starts at an address that is not 4-byte aligned.
TensorView ViewOf(const torch::Tensor& t, DType dtype, std::string& storage, size_t offset = 1) {
  const size_t nbytes = t.numel() * t.element_size();
  storage.assign(offset, '\0');
  storage.append(static_cast<const char*>(t.data_ptr()), nbytes);
  TensorView v;
  v.name = "t";
  v.dtype = dtype;
  v.shape = t.sizes().vec();
  v.data = reinterpret_cast<const uint8_t*>(storage.data()) + offset;
  v.nbytes = nbytes;
  return v;
}

std::vector<float> Copy(const TensorView& view, bool transpose, bool* finite = nullptr) {
  std::vector<float> out(view.numel());
  const bool ok = CopyFactor(view, transpose, out.data());
  if (finite) *finite = ok;
  return out;
}

std::vector<float> Values(const torch::Tensor& t) {
  const torch::Tensor c = t.to(torch::kFloat32).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

// Every bfloat16 and binary16 bit pattern — zeros, subnormals, infinities — widens to the float32
// bits LibTorch gives; NaNs stay NaNs (the hardware conversion LibTorch uses also quiets them).
TEST(HalfFloatTest, EveryPatternWidensAsLibTorchDoes) {
  const torch::Tensor patterns = torch::arange(0, 1 << 16, torch::kInt32).to(torch::kInt16);
  for (auto dtype : {torch::kBFloat16, torch::kFloat16}) {
    const torch::Tensor want = patterns.view(dtype).to(torch::kFloat32).view(torch::kInt32);
    const int16_t* bits = patterns.data_ptr<int16_t>();
    int64_t wrong = 0;
    for (int64_t i = 0; i < patterns.numel(); ++i) {
      const uint16_t h = static_cast<uint16_t>(bits[i]);
      const float got = dtype == torch::kBFloat16 ? BFloat16ToFloat(h) : HalfToFloat(h);
      const uint32_t want_bits = static_cast<uint32_t>(want[i].item<int32_t>());
      wrong +=
          std::isnan(FloatFromBits(want_bits)) ? !std::isnan(got) : BitsFromFloat(got) != want_bits;
    }
    EXPECT_EQ(wrong, 0) << c10::toString(dtype);
  }
}

// float32 -> bfloat16 rounds to nearest even, as LibTorch: over random bits (all exponents, so
// subnormals, infinities and NaNs too) and the halfway cases.
TEST(HalfFloatTest, NarrowingToBfloat16RoundsAsLibTorchDoes) {
  std::mt19937 rng(7);
  std::vector<uint32_t> inputs = {0u,          0x80000000u, 0x7f800000u, 0xff800000u, 0x7f7fffffu,
                                  0x3f808000u, 0x3f818000u, 0x7fc00001u, 0xffa00000u};
  for (int i = 0; i < 200000; ++i) inputs.push_back(rng());
  int64_t wrong = 0;
  for (uint32_t bits : inputs) {
    const float f = FloatFromBits(bits);
    const uint16_t got = FloatToBFloat16(f);
    const uint16_t want = c10::BFloat16(f).x;
    wrong += std::isnan(f) ? !std::isnan(BFloat16ToFloat(got)) : got != want;
  }
  EXPECT_EQ(wrong, 0);
}

// FastExp: within 3 ulp of e^x over the range the fused steps use; NaN stays NaN.
TEST(HalfFloatTest, FastExpIsWithinThreeUlpOfExp) {
  double worst = 0;
  for (float x = -87.0f; x <= 88.0f; x += 0.000731f) {
    const double want = std::exp(static_cast<double>(x));
    const double ulp =
        std::nextafter(static_cast<float>(want), INFINITY) - static_cast<float>(want);
    worst = std::max(worst, std::abs(FastExp(x) - want) / ulp);
  }
  EXPECT_LE(worst, 3.0);
  EXPECT_TRUE(std::isnan(FastExp(NAN)));
  EXPECT_EQ(FastExp(0.0f), 1.0f);
  EXPECT_LT(FastExp(-1000.0f), 1e-37f);  // clamped: ~1e-38, harmless in softmax sums
}

TEST(FactorArenaTest, TransposesEveryShapeExactly) {
  // Multiples of the 8x8 tile, ragged edges on either side, single rows and columns.
  for (auto [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{
           {8, 8}, {16, 24}, {13, 37}, {1, 5}, {5, 1}, {2816, 16}, {9, 7}, {64, 3}}) {
    const torch::Tensor t = torch::randn({rows, cols});
    std::string storage;
    const TensorView v = ViewOf(t, DType::kF32, storage);
    bool finite = false;
    EXPECT_EQ(Copy(v, /*transpose=*/true, &finite), Values(t.t())) << rows << "x" << cols;
    EXPECT_TRUE(finite);
    EXPECT_EQ(Copy(v, /*transpose=*/false), Values(t)) << rows << "x" << cols;
  }
}

TEST(FactorArenaTest, ConvertsHalfBfloatAndDoubleAsTorchDoes) {
  // Normal, subnormal, signed zero and extreme values of each type.
  const torch::Tensor base = torch::tensor({0.0f, -0.0f, 1.0f, -2.5f, 6.0e-8f, 3.0e-5f, 65504.0f,
                                            -1.0e-3f, 3.14159f, 1.0e30f, -7.0e-39f, 123.456f});
  for (auto [dtype, torch_dtype] :
       std::vector<std::pair<DType, torch::ScalarType>>{{DType::kF16, torch::kFloat16},
                                                        {DType::kBF16, torch::kBFloat16},
                                                        {DType::kF64, torch::kFloat64},
                                                        {DType::kF32, torch::kFloat32}}) {
    torch::Tensor t = base.to(torch_dtype);
    if (dtype == DType::kF16) t = t.masked_fill(t.isinf(), 1.0);  // 1e30 overflows half
    std::string storage;
    const torch::Tensor grid = t.reshape({3, 4}).contiguous();
    const TensorView v = ViewOf(grid, dtype, storage);
    EXPECT_EQ(Copy(v, false), Values(grid)) << DTypeName(dtype);
    EXPECT_EQ(Copy(v, true), Values(grid.t())) << DTypeName(dtype);
  }
}

TEST(FactorArenaTest, FindsNonFiniteValuesAnywhere) {
  const float kBad[] = {std::numeric_limits<float>::quiet_NaN(),
                        std::numeric_limits<float>::infinity(),
                        -std::numeric_limits<float>::infinity()};
  const int64_t rows = 19, cols = 21;  // tiles plus edges in both directions
  for (float bad : kBad) {
    for (int64_t at : {int64_t{0}, int64_t{9}, cols * 8 + 3, rows * cols - 1, cols * 17 + 20}) {
      torch::Tensor t = torch::randn({rows, cols});
      t.view(-1)[at] = bad;
      std::string storage;
      const TensorView v = ViewOf(t, DType::kF32, storage);
      bool finite = true;
      Copy(v, true, &finite);
      EXPECT_FALSE(finite) << bad << " at " << at << " (transposed)";
      finite = true;
      Copy(v, false, &finite);
      EXPECT_FALSE(finite) << bad << " at " << at;
    }
  }
  // float64 values beyond float32's range do not fit a float32 factor.
  const torch::Tensor wide = torch::tensor({1.0, 1.0e300}, torch::kFloat64).reshape({1, 2});
  std::string storage;
  bool finite = true;
  Copy(ViewOf(wide, DType::kF64, storage), false, &finite);
  EXPECT_FALSE(finite);
  // Half and bfloat infinities.
  for (auto [dtype, torch_dtype] : std::vector<std::pair<DType, torch::ScalarType>>{
           {DType::kF16, torch::kFloat16}, {DType::kBF16, torch::kBFloat16}}) {
    const torch::Tensor t =
        torch::tensor({1.0f, std::numeric_limits<float>::infinity()}).to(torch_dtype);
    finite = true;
    Copy(ViewOf(t.reshape({1, 2}).contiguous(), dtype, storage), true, &finite);
    EXPECT_FALSE(finite) << DTypeName(dtype);
  }
}

TEST(FactorArenaTest, LargeArenasAreHugePageAlignedAndReused) {
  const size_t floats = (size_t{5} << 20) / sizeof(float);  // 5 MiB
  float* first = nullptr;
  {
    FactorArena arena(floats);
    ASSERT_TRUE(arena.huge_pages());
    first = arena.data();
    EXPECT_EQ(reinterpret_cast<uintptr_t>(first) % (size_t{2} << 20), 0u);
    std::memset(arena.data(), 0x3f, floats * sizeof(float));  // the whole span is writable
  }
  FactorArena again(floats);
  EXPECT_EQ(again.data(), first);  // the freed block came back from the pool
  FactorArena small(100);
  EXPECT_FALSE(small.huge_pages());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(small.data()) % 64, 0u);
}

}  // namespace
}  // namespace loramux
