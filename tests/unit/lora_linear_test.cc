// The adapter side path against an exact float64 reference of DESIGN.md's maths: every path
// (fused CPU kernel, gathered batched GEMMs, per-segment GEMMs) on one batch that mixes base rows,
// LoRA adapters of two ranks, per-row DoRA at unit and other scales, per-column (seed) DoRA and
// runs of 1, 3 and 6 tokens — in float32, float64 and bfloat16.
#include <algorithm>
#include <cmath>
#include <limits>

#include <gtest/gtest.h>

#include <torch/torch.h>

#include "adapters/adapter_weights.h"
#include "adapters/bgmv_cpu.h"
#include "adapters/lora_linear.h"

namespace loramux {
namespace {

constexpr int64_t kIn = 48, kOut = 40, kTokens = 16;  // not multiples of the kernels' vector widths
using Kind = ModuleAdapter::Kind;

// One module (index 0) of `kind` and `rank`, with random factors; DoRA gains come from random
// magnitude and norm terms, so GainAt(c) is defined for every request scale c.
std::shared_ptr<AdapterWeights> RandomAdapter(Kind kind, int64_t rank, double scale,
                                              torch::ScalarType dtype) {
  auto m = std::make_unique<ModuleAdapter>();
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  m->kind = kind;
  m->rank = rank;
  m->scale = scale;
  m->a = (torch::randn({rank, kIn}, f64) * 0.3).to(dtype);
  m->b_t = (torch::randn({rank, kOut}, f64) * 0.3).to(dtype);
  if (kind != Kind::kLora) {
    const int64_t n = kind == Kind::kDoraRow ? kOut : kIn;
    m->magnitude = torch::rand({n}, f64) + 0.5;
    m->norm_terms = torch::stack({torch::rand({n}, f64) + 1.0, torch::rand({n}, f64) * 0.2 - 0.1,
                                  torch::rand({n}, f64) * 0.5});
    const torch::Tensor& t = m->norm_terms;  // ||W + c·sBA||² = t0 + 2c·t1 + c²·t2
    m->gain = (m->magnitude / (t[0] + 2 * t[1] + t[2]).sqrt()).to(dtype);
  }
  std::vector<std::unique_ptr<ModuleAdapter>> modules;
  modules.push_back(std::move(m));
  return AdapterWeights::FromModules("random", std::move(modules));
}

// y for one row in float64, straight from DESIGN.md.
torch::Tensor ReferenceRow(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                           const ModuleAdapter* m, double c) {
  const torch::Tensor x64 = x.to(torch::kFloat64), w64 = w.to(torch::kFloat64),
                      b64 = b.to(torch::kFloat64);
  if (m == nullptr) return torch::mv(w64, x64) + b64;
  const torch::Tensor delta_w =  // c·s·B A  [out, in]
      c * m->scale * torch::mm(m->b_t.to(torch::kFloat64).t(), m->a.to(torch::kFloat64));
  const torch::Tensor g =
      m->kind == Kind::kLora
          ? torch::Tensor()
          : m->magnitude /
                (m->norm_terms[0] + 2 * c * m->norm_terms[1] + c * c * m->norm_terms[2]).sqrt();
  switch (m->kind) {
    case Kind::kLora: return torch::mv(w64 + delta_w, x64) + b64;
    case Kind::kDoraRow: return g * torch::mv(w64 + delta_w, x64) + b64;
    case Kind::kDoraCol: return torch::mv(w64 + delta_w, g * x64) + b64;
  }
  return {};
}

const char* PathName(DeltaPath path) {
  switch (path) {
    case DeltaPath::kAuto: return "auto";
    case DeltaPath::kSegmentGemms: return "segment GEMMs";
    case DeltaPath::kGathered: return "gathered";
  }
  return "?";
}

class LoraLinearTest : public ::testing::TestWithParam<torch::ScalarType> {
 protected:
  void SetUp() override {
    torch::manual_seed(7);
    const torch::ScalarType dtype = GetParam();
    lora4_ = RandomAdapter(Kind::kLora, 4, 0.5, dtype);
    lora4b_ = RandomAdapter(Kind::kLora, 4, 1.25, dtype);
    lora8_ = RandomAdapter(Kind::kLora, 8, 2.0, dtype);
    dora4_ = RandomAdapter(Kind::kDoraRow, 4, 1.0, dtype);
    dora_col_ = RandomAdapter(Kind::kDoraCol, 4, 0.75, dtype);
    x_ = torch::randn({kTokens, kIn}).to(dtype);
    base_.weight = (torch::randn({kOut, kIn}) * 0.2).to(dtype);
    base_.bias = torch::randn({kOut}).to(dtype);
    // Rows 0 and 15 are base-only; the rest mix adapters, scales and run lengths.
    segments_ = {{lora4_.get(), 1.0, 1, 2},     {lora8_.get(), 0.5, 2, 3},
                 {dora4_.get(), 1.0, 3, 4},     {dora4_.get(), 0.7, 4, 5},
                 {lora4b_.get(), 1.0, 5, 8},    {lora8_.get(), 1.0, 8, 14},
                 {dora_col_.get(), 1.0, 14, 15}};
  }

  torch::Tensor Reference() const {
    std::vector<torch::Tensor> rows;
    for (int64_t t = 0; t < kTokens; ++t) {
      const AdapterSegment* seg = nullptr;
      for (const AdapterSegment& s : segments_) {
        if (t >= s.begin && t < s.end) seg = &s;
      }
      rows.push_back(ReferenceRow(x_[t], base_.weight, base_.bias,
                                  seg ? seg->adapter->module(0) : nullptr, seg ? seg->scale : 1.0));
    }
    return torch::stack(rows);
  }

  double Tolerance() const {
    switch (GetParam()) {
      case torch::kFloat64: return 1e-12;
      case torch::kFloat32: return 1e-5;
      default: return 2e-2;  // bfloat16: relative to the reference's norm
    }
  }

  std::shared_ptr<AdapterWeights> lora4_, lora4b_, lora8_, dora4_, dora_col_;
  torch::Tensor x_;
  LinearWeights base_;
  std::vector<AdapterSegment> segments_;
};

TEST_P(LoraLinearTest, EveryPathMatchesTheExactMaths) {
  const torch::Tensor want = Reference();
  for (DeltaPath path : {DeltaPath::kAuto, DeltaPath::kGathered, DeltaPath::kSegmentGemms}) {
    const torch::Tensor got = AdaptedLinear(x_, base_, 0, segments_, path).to(torch::kFloat64);
    const double error = (got - want).norm().item<double>() / want.norm().item<double>();
    EXPECT_LE(error, Tolerance()) << PathName(path) << ", max error per row "
                                  << (got - want).abs().amax(1);
    // Base-only rows are exactly the base linear, untouched by any path.
    const torch::Tensor base = torch::linear(x_, base_.weight, base_.bias).to(torch::kFloat64);
    for (int64_t row : {0, 15})
      EXPECT_TRUE(torch::equal(got[row], base[row])) << PathName(path) << row;
  }
}

// A copy of `adapter`'s module 0 whose factors are rounded to `storage` and kept in `keep`
// (16-bit storage kept as is, or the same values widened to float32); gains stay float32.
std::shared_ptr<AdapterWeights> Rounded(const AdapterWeights& adapter, torch::ScalarType storage,
                                        torch::ScalarType keep) {
  const ModuleAdapter& m = *adapter.module(0);
  auto copy = std::make_unique<ModuleAdapter>(m);
  copy->a = m.a.to(storage).to(keep);
  copy->b_t = m.b_t.to(storage).to(keep);
  if (m.gain.defined()) copy->gain = m.gain.clone();
  std::vector<std::unique_ptr<ModuleAdapter>> modules;
  modules.push_back(std::move(copy));
  return AdapterWeights::FromModules("rounded", std::move(modules));
}

TEST(SixteenBitFactorsTest, WidenExactlyOnEveryPath) {
  torch::manual_seed(11);
  std::vector<std::shared_ptr<AdapterWeights>> f32 = {
      RandomAdapter(Kind::kLora, 4, 0.5, torch::kFloat32),
      RandomAdapter(Kind::kLora, 8, 2.0, torch::kFloat32),
      RandomAdapter(Kind::kDoraRow, 4, 1.0, torch::kFloat32)};
  // Values float16 handles at its edges: subnormals, the smallest normal, its largest value, -0.
  float* a = f32[0]->module(0)->a.data_ptr<float>();
  const float edges[] = {0x1p-24f, -0x1p-24f, 0x3ffp-24f, 0x1p-14f, 65504.0f, -0.0f, 1e-30f};
  std::copy(std::begin(edges), std::end(edges), a);
  LinearWeights base{torch::randn({kOut, kIn}), torch::randn({kOut})};
  const torch::Tensor x = torch::randn({kTokens, kIn});
  for (torch::ScalarType storage : {torch::kBFloat16, torch::kFloat16}) {
    std::vector<std::shared_ptr<AdapterWeights>> kept, widened;
    std::vector<AdapterSegment> kept_segments, widened_segments;
    for (size_t i = 0; i < f32.size(); ++i) {
      kept.push_back(Rounded(*f32[i], storage, storage));
      widened.push_back(Rounded(*f32[i], storage, torch::kFloat32));
      ASSERT_EQ(kept.back()->module(0)->a.scalar_type(), storage);
      const ModuleAdapter& wide = *widened.back()->module(0);
      ASSERT_EQ(2 * (widened.back()->bytes() - kept.back()->bytes()),  // the factors' bytes halve
                (wide.a.numel() + wide.b_t.numel()) * 4);
      const int64_t begin = static_cast<int64_t>(i) * 5;  // runs of 1 token and of 5 (prefill)
      for (auto [list, out] : {std::pair{&kept, &kept_segments}, {&widened, &widened_segments}}) {
        out->push_back({list->back().get(), 0.75, begin, begin + 1});
        out->push_back({list->back().get(), 1.0, begin + 1, begin + 5});
      }
    }
    for (DeltaPath path : {DeltaPath::kAuto, DeltaPath::kGathered, DeltaPath::kSegmentGemms}) {
      const torch::Tensor got = AdaptedLinear(x, base, 0, kept_segments, path);
      const torch::Tensor want = AdaptedLinear(x, base, 0, widened_segments, path);
      EXPECT_TRUE(torch::equal(got, want))
          << c10::toString(storage) << " " << PathName(path) << ": max difference "
          << (got - want).abs().max().item<float>();
    }
  }
}

// The kernel widens every finite 16-bit pattern exactly as LibTorch converts it: with in = rank =
// 1, A = [1] and x = [1], the output row is B^T's row itself, widened.
TEST(SixteenBitFactorsTest, KernelWidensEveryFiniteValueExactly) {
  for (auto [dtype, type] : {std::pair{torch::kBFloat16, FactorType::kBFloat16},
                             std::pair{torch::kFloat16, FactorType::kFloat16}}) {
    const torch::Tensor patterns = torch::arange(0, 1 << 16, torch::kInt32).to(torch::kInt16);
    const torch::Tensor all = patterns.view(dtype);  // reinterpret the bits
    const torch::Tensor b_t = all.index({torch::isfinite(all.to(torch::kFloat32))}).contiguous();
    const torch::Tensor a = torch::ones({1}, dtype);
    const float x = 1.0f;
    torch::Tensor y = torch::zeros({b_t.numel()});
    BgmvSegment segment{a.data_ptr(), b_t.data_ptr(), type, nullptr, 1, 1.0f, 0, 1};
    BgmvCpu(&x, y.data_ptr<float>(), nullptr, 1, b_t.numel(), {segment});
    const torch::Tensor want = b_t.to(torch::kFloat32);
    // Values compare equal (-0 added to the zeroed row reads +0, as it should).
    EXPECT_EQ(torch::nonzero(y != want).size(0), 0) << c10::toString(dtype);
    EXPECT_GT(b_t.numel(), 63000);
  }
}

// bfloat16 activations go through the kernel without float32 copies of x and y (LoRA and DoRA rows,
// a bias, one long segment that the kernel splits across threads and single-row ones, a rank and
// widths that are not multiples of the vector width): the bits of widening them, running the
// float32 kernel and rounding; or, where the CPU multiplies bfloat16 natively, the same values
// within the error of rounding the rank-sized intermediate to bfloat16 (as PEFT's bfloat16 layers
// do) and one bfloat16 step.
TEST(SixteenBitFactorsTest, Bfloat16ActivationsGiveTheWidenedKernelsValues) {
  torch::manual_seed(11);
  const int64_t in = 96, out = 80, rank = 7, tokens = 13;
  const torch::Tensor x = torch::randn({tokens, in}).to(torch::kBFloat16);
  const torch::Tensor y0 = torch::randn({tokens, out}).to(torch::kBFloat16);
  const torch::Tensor bias = torch::randn({out});
  const torch::Tensor a = (torch::randn({rank, in}) * 0.3).to(torch::kBFloat16);
  const torch::Tensor b_t = (torch::randn({rank, out}) * 0.3).to(torch::kBFloat16);
  const torch::Tensor gain = 1 + 0.1 * torch::randn({out});
  const std::vector<BgmvSegment> segments = {
      {a.data_ptr(), b_t.data_ptr(), FactorType::kBFloat16, nullptr, rank, 0.5f, 0, 11},
      {a.data_ptr(), b_t.data_ptr(), FactorType::kBFloat16, gain.data_ptr<float>(), rank, 2.0f, 11,
       12}};
  torch::Tensor got = y0.clone();
  BgmvCpuBFloat16(static_cast<const uint16_t*>(x.data_ptr()),
                  static_cast<uint16_t*>(got.data_ptr()), bias.data_ptr<float>(), in, out,
                  segments);
  const torch::Tensor x32 = x.to(torch::kFloat32);
  torch::Tensor y32 = y0.to(torch::kFloat32);
  BgmvCpu(x32.data_ptr<float>(), y32.data_ptr<float>(), bias.data_ptr<float>(), in, out, segments);
  if (BgmvCpuMultipliesBFloat16Natively()) {
    // The native kernel rounds each row's u = c·A x to bfloat16 before the up projection (relative
    // error at most 2^-8 per rank, scaled by B^T and DoRA's gain), sums in its own float32 order,
    // and rounds once to bfloat16 (the result and the widened kernel's rounded value are at most
    // one bfloat16 step, 2^-7 relative, apart).
    torch::Tensor scale = torch::full({tokens, 1}, 0.5f), gains = torch::ones({tokens, out});
    scale[11] = 2.0f;
    gains[11] = gain.abs();
    const torch::Tensor u = (x32.matmul(a.to(torch::kFloat32).t()) * scale).abs();
    const torch::Tensor u_rounding =
        u.matmul(b_t.to(torch::kFloat32).abs()) * gains * std::ldexp(1.0, -8);
    const torch::Tensor bound = y32.abs() * std::ldexp(1.0, -7) + u_rounding * 1.01 + 1e-6;
    const torch::Tensor error = (got.to(torch::kFloat32) - y32).abs();
    EXPECT_TRUE((error <= bound).all().item<bool>()) << (error - bound).max().item<float>();
    // Most results are much closer than the bound.
    EXPECT_LT(error.mean().item<float>(), 0.25 * bound.mean().item<float>());
  } else {
    EXPECT_TRUE(torch::equal(got, y32.to(torch::kBFloat16)));
  }
  EXPECT_TRUE(torch::equal(got.narrow(0, 12, 1), y0.narrow(0, 12, 1)));  // row in no segment
  EXPECT_FALSE(torch::equal(got.narrow(0, 0, 11), y0.narrow(0, 0, 11)));
  // A row's bits do not depend on its segment-mates: each row alone gives the same bits.
  for (int64_t row = 0; row < 12; ++row) {
    const BgmvSegment& of = row < 11 ? segments[0] : segments[1];
    BgmvSegment alone = of;
    alone.begin = row;
    alone.end = row + 1;
    torch::Tensor single = y0.clone();
    BgmvCpuBFloat16(static_cast<const uint16_t*>(x.data_ptr()),
                    static_cast<uint16_t*>(single.data_ptr()), bias.data_ptr<float>(), in, out,
                    {alone});
    EXPECT_TRUE(torch::equal(single.narrow(0, row, 1), got.narrow(0, row, 1))) << "row " << row;
  }
}

// Special values pass through the kernel's rounding as c10::BFloat16's does: infinities stay,
// NaN stays NaN, subnormal results are kept (not flushed).
TEST(SixteenBitFactorsTest, Bfloat16RoundingKeepsSpecialValues) {
  const int64_t in = 32, out = 48, rank = 4;
  const torch::Tensor x = torch::zeros({1, in}).to(torch::kBFloat16);  // delta 0: y passes through
  torch::Tensor y = torch::zeros({1, out});
  y[0][0] = std::numeric_limits<float>::infinity();
  y[0][1] = -std::numeric_limits<float>::infinity();
  y[0][2] = std::numeric_limits<float>::quiet_NaN();
  y[0][3] = 1e-39f;  // a bfloat16 subnormal
  y[0][4] = -3.5f;
  y = y.to(torch::kBFloat16);
  const torch::Tensor a = torch::ones({rank, in}).to(torch::kBFloat16);
  const torch::Tensor b_t = torch::ones({rank, out}).to(torch::kBFloat16);
  torch::Tensor got = y.clone();
  BgmvCpuBFloat16(
      static_cast<const uint16_t*>(x.data_ptr()), static_cast<uint16_t*>(got.data_ptr()), nullptr,
      in, out, {{a.data_ptr(), b_t.data_ptr(), FactorType::kBFloat16, nullptr, rank, 1.0f, 0, 1}});
  const torch::Tensor g = got.to(torch::kFloat32), want = y.to(torch::kFloat32);
  EXPECT_TRUE(std::isinf(g[0][0].item<float>()) && g[0][0].item<float>() > 0);
  EXPECT_TRUE(std::isinf(g[0][1].item<float>()) && g[0][1].item<float>() < 0);
  EXPECT_TRUE(std::isnan(g[0][2].item<float>()));
  EXPECT_EQ(g[0][3].item<float>(), want[0][3].item<float>());
  EXPECT_NE(g[0][3].item<float>(), 0.0f);
  EXPECT_EQ(g[0][4].item<float>(), -3.5f);
}

// Decode rows take the decode path however many of them share an adapter (the scheduler merges
// neighbours of one adapter into one segment): each row's delta is the same bits as alone.
TEST_P(LoraLinearTest, ManyDecodeRowsOfOneAdapterGetEachRowsOwnBits) {
  if (GetParam() == torch::kFloat64) GTEST_SKIP() << "float64 has no decode kernel";
  const torch::ScalarType dtype = GetParam();
  const LinearWeights base{(torch::randn({kOut, kIn}) * 0.2).to(dtype), torch::Tensor()};
  const torch::Tensor x = torch::randn({kTokens, kIn}).to(dtype);
  // The base output row by row for both: the BLAS behind an unpacked weight may give a row other
  // bits in a bigger call (OpenBLAS's Haswell kernels do), and this test is about the deltas.
  const auto base_rows = [&](const torch::Tensor& rows) {
    std::vector<torch::Tensor> out;
    for (int64_t r = 0; r < rows.size(0); ++r)
      out.push_back(BaseLinear(rows.narrow(0, r, 1), base));
    return torch::cat(out);
  };
  for (auto adapter : {lora8_, RandomAdapter(Kind::kDoraRow, 4, 1.0, dtype)}) {
    torch::Tensor together = base_rows(x);
    AddAdapterDeltas(x, together, base, 0, {{adapter.get(), 1.0, 0, kTokens, /*decode=*/true}});
    for (int64_t row : {int64_t{0}, int64_t{7}, kTokens - 1}) {
      const torch::Tensor x_row = x.narrow(0, row, 1).contiguous();
      torch::Tensor alone = base_rows(x_row);
      AddAdapterDeltas(x_row, alone, base, 0, {{adapter.get(), 1.0, 0, 1, /*decode=*/true}});
      EXPECT_TRUE(torch::equal(together.narrow(0, row, 1), alone)) << row;
    }
  }
}

// On the CPU a prefill run short enough for the fused kernel (any length in float32, up to 256
// tokens in bfloat16) gives each row its own bits: a prompt's rows do not depend on how the
// scheduler cut it into chunks.
TEST_P(LoraLinearTest, PrefillRowsDoNotDependOnTheChunking) {
  if (GetParam() == torch::kFloat64) GTEST_SKIP() << "float64 has no fused kernel";
  const torch::ScalarType dtype = GetParam();
  const LinearWeights base{(torch::randn({kOut, kIn}) * 0.2).to(dtype),
                           torch::randn({kOut}).to(dtype)};
  const int64_t tokens = 40;
  const torch::Tensor x = torch::randn({tokens, kIn}).to(dtype);
  for (auto adapter : {lora8_, RandomAdapter(Kind::kDoraRow, 4, 1.0, dtype)}) {
    const torch::Tensor whole = AdaptedLinear(x, base, 0, {{adapter.get(), 1.0, 0, tokens}});
    const torch::Tensor cut = AdaptedLinear(x, base, 0,
                                            {{adapter.get(), 1.0, 0, 17},
                                             {adapter.get(), 1.0, 17, 18},
                                             {adapter.get(), 1.0, 18, tokens}});
    EXPECT_TRUE(torch::equal(whole, cut));
    // And the values are the exact maths' within the dtype's rounding.
    std::vector<torch::Tensor> rows;
    for (int64_t t = 0; t < tokens; ++t) {
      rows.push_back(ReferenceRow(x[t], base.weight, base.bias, adapter->module(0), 1.0));
    }
    const torch::Tensor want = torch::stack(rows);
    const double error =
        (whole.to(torch::kFloat64) - want).norm().item<double>() / want.norm().item<double>();
    EXPECT_LE(error, Tolerance());
  }
}

// The portable kernel (CPUs without AVX-512) and the one this CPU takes give the same values
// within float32 summation-order error, for LoRA and DoRA rows with a bias, rows of one adapter
// side by side, a long run, float32 and 16-bit factors, widths and ranks off the vector width; and
// the portable kernel too gives each row its own bits.
TEST(BgmvCpuTest, PortableKernelMatchesTheOneThisCpuTakes) {
  torch::manual_seed(5);
  const int64_t in = 100, out = 70, rank = 6, tokens = 23;
  const torch::Tensor x = torch::randn({tokens, in});
  const torch::Tensor y0 = torch::randn({tokens, out});
  const torch::Tensor bias = torch::randn({out});
  const torch::Tensor gain = 1 + 0.1 * torch::randn({out});
  const torch::Tensor a = torch::randn({rank, in}) * 0.3, b_t = torch::randn({rank, out}) * 0.3;
  const torch::Tensor a16 = a.to(torch::kFloat16), b16 = b_t.to(torch::kFloat16);
  const std::vector<BgmvSegment> segments = {
      {a.data_ptr(), b_t.data_ptr(), FactorType::kFloat32, nullptr, rank, 0.5f, 0, 1},
      {a.data_ptr(), b_t.data_ptr(), FactorType::kFloat32, nullptr, rank, 0.5f, 1, 3},
      {a16.data_ptr(), b16.data_ptr(), FactorType::kFloat16, nullptr, rank, 2.0f, 3, 4},
      {a.data_ptr(), b_t.data_ptr(), FactorType::kFloat32, gain.data_ptr<float>(), rank, 1.0f, 4,
       5},
      {a.data_ptr(), b_t.data_ptr(), FactorType::kFloat32, nullptr, 5, 1.5f, 6, tokens}};
  torch::Tensor fast = y0.clone(), portable = y0.clone();
  BgmvCpu(x.data_ptr<float>(), fast.data_ptr<float>(), bias.data_ptr<float>(), in, out, segments);
  BgmvCpuPortable(x.data_ptr<float>(), portable.data_ptr<float>(), bias.data_ptr<float>(), in, out,
                  segments);
  EXPECT_TRUE(torch::allclose(fast, portable, 1e-5, 1e-5))
      << (fast - portable).abs().max().item<float>();
  EXPECT_TRUE(torch::equal(portable[5], y0[5]));  // a row in no segment
  EXPECT_FALSE(torch::equal(portable[0], y0[0]));
  for (int64_t row : {int64_t{0}, int64_t{2}, int64_t{4}, int64_t{9}, tokens - 1}) {
    const BgmvSegment& of =
        *std::find_if(segments.begin(), segments.end(),
                      [&](const BgmvSegment& s) { return s.begin <= row && row < s.end; });
    BgmvSegment alone = of;
    alone.begin = row;
    alone.end = row + 1;
    torch::Tensor single = y0.clone();
    BgmvCpuPortable(x.data_ptr<float>(), single.data_ptr<float>(), bias.data_ptr<float>(), in, out,
                    {alone});
    EXPECT_TRUE(torch::equal(single[row], portable[row])) << "row " << row;
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, LoraLinearTest,
                         ::testing::Values(torch::kFloat32, torch::kFloat64, torch::kBFloat16),
                         [](const auto& info) { return std::string(c10::toString(info.param)); });

}  // namespace
}  // namespace loramux
