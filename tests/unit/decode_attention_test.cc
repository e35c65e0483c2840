// Decode attention straight from the paged cache (model/decode_attention.h) against softmax
// attention in float64 over the same keys and values.
#include "model/decode_attention.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace loramux {
namespace {

constexpr int64_t kHeads = 8, kKvHeads = 2, kHeadDim = 16, kSlots = 200;

// out [heads, hd] for one query q [heads, hd] over keys/values [n, kv_heads, hd], float64.
torch::Tensor Reference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        double scale) {
  const int64_t group = kHeads / kKvHeads;
  const torch::Tensor q64 = q.to(torch::kFloat64), k64 = k.to(torch::kFloat64),
                      v64 = v.to(torch::kFloat64);
  std::vector<torch::Tensor> heads;
  for (int64_t h = 0; h < kHeads; ++h) {
    const torch::Tensor kh = k64.select(1, h / group), vh = v64.select(1, h / group);  // [n, hd]
    const torch::Tensor p = torch::softmax(kh.matmul(q64[h]) * scale, 0);              // [n]
    heads.push_back(p.matmul(vh));
  }
  return torch::stack(heads);
}

class DecodeAttentionTest : public ::testing::TestWithParam<torch::ScalarType> {
 protected:
  void SetUp() override {
    torch::manual_seed(1);
    keys_ = torch::randn({kSlots, kKvHeads, kHeadDim}).to(GetParam());
    values_ = torch::randn({kSlots, kKvHeads, kHeadDim}).to(GetParam());
    q_ = torch::randn({4, kHeads, kHeadDim}).to(GetParam());
    // Three sequences with scattered slots (as a paged cache hands them out).
    const torch::Tensor perm = torch::randperm(kSlots);
    for (int s = 0; s < 3; ++s) {
      slots_.emplace_back(perm.data_ptr<int64_t>() + s * 60,
                          perm.data_ptr<int64_t>() + s * 60 + 60);
    }
  }
  torch::Tensor Expected(int64_t row, int s, int64_t begin, int64_t end) const {
    std::vector<int64_t> visible(slots_[s].begin() + begin, slots_[s].begin() + end);
    const torch::Tensor idx = torch::tensor(visible);
    return Reference(q_[row], keys_.index_select(0, idx), values_.index_select(0, idx), 0.25);
  }
  double Tolerance() const { return GetParam() == torch::kFloat32 ? 1e-5 : 2e-2; }

  torch::Tensor keys_, values_, q_;
  std::vector<std::vector<int64_t>> slots_;
};

TEST_P(DecodeAttentionTest, MatchesSoftmaxAttentionOverEachRowsOwnSlots) {
  torch::Tensor out = torch::zeros_like(q_);
  const std::vector<DecodeContext> contexts = {{0, slots_[0].data(), 0, 60},
                                               {2, slots_[1].data(), 0, 1},
                                               {3, slots_[2].data(), 45, 60}};  // a window of 15
  DecodeAttention(q_, keys_, values_, contexts, 0.25, out);
  EXPECT_LE((out[0].to(torch::kFloat64) - Expected(0, 0, 0, 60)).abs().max().item<double>(),
            Tolerance());
  EXPECT_LE((out[2].to(torch::kFloat64) - Expected(2, 1, 0, 1)).abs().max().item<double>(),
            Tolerance());
  EXPECT_LE((out[3].to(torch::kFloat64) - Expected(3, 2, 45, 60)).abs().max().item<double>(),
            Tolerance());
  EXPECT_TRUE(out[1].eq(0).all().item<bool>());  // rows not named stay untouched
}

TEST_P(DecodeAttentionTest, ARowsResultDoesNotDependOnItsBatchMates) {
  torch::Tensor alone = torch::zeros_like(q_), together = torch::zeros_like(q_);
  DecodeAttention(q_, keys_, values_, {{1, slots_[0].data(), 0, 37}}, 0.25, alone);
  DecodeAttention(
      q_, keys_, values_,
      {{0, slots_[2].data(), 0, 60}, {1, slots_[0].data(), 0, 37}, {3, slots_[1].data(), 3, 50}},
      0.25, together);
  EXPECT_TRUE(torch::equal(alone[1], together[1]));
}

// Head sizes that are not a multiple of the kernel's 16 lanes (a tail summed apart), one and
// several query heads per KV head, contexts shorter and longer than the prefetch distance.
TEST_P(DecodeAttentionTest, AnyHeadSizeAndGroup) {
  for (const int64_t head_dim : {1, 20, 40}) {
    for (const int64_t kv_heads : {1, 2, 8}) {
      const int64_t slots = 40;
      const torch::Tensor keys = torch::randn({slots, kv_heads, head_dim}).to(GetParam());
      const torch::Tensor values = torch::randn({slots, kv_heads, head_dim}).to(GetParam());
      const torch::Tensor q = torch::randn({2, kHeads, head_dim}).to(GetParam());
      torch::Tensor out = torch::zeros_like(q);
      std::vector<int64_t> slots_of(slots);
      for (int64_t j = 0; j < slots; ++j) slots_of[j] = slots - 1 - j;
      DecodeAttention(q, keys, values, {{0, slots_of.data(), 0, 5}, {1, slots_of.data(), 3, 40}},
                      0.3, out);
      const int64_t group = kHeads / kv_heads;
      for (int64_t row = 0; row < 2; ++row) {
        const int64_t begin = row == 0 ? 0 : 3, end = row == 0 ? 5 : 40;
        const torch::Tensor idx =
            torch::tensor(std::vector<int64_t>(slots_of.begin() + begin, slots_of.begin() + end));
        const torch::Tensor k = keys.index_select(0, idx).to(torch::kFloat64);
        const torch::Tensor v = values.index_select(0, idx).to(torch::kFloat64);
        for (int64_t h = 0; h < kHeads; ++h) {
          const torch::Tensor p =
              torch::softmax(k.select(1, h / group).matmul(q[row][h].to(torch::kFloat64)) * 0.3, 0);
          const torch::Tensor expected = p.matmul(v.select(1, h / group));
          EXPECT_LE((out[row][h].to(torch::kFloat64) - expected).abs().max().item<double>(),
                    Tolerance())
              << "head_dim " << head_dim << ", kv_heads " << kv_heads << ", row " << row
              << ", head " << h;
        }
      }
    }
  }
}

TEST_P(DecodeAttentionTest, RefusesMixedDtypes) {
  torch::Tensor out = torch::zeros_like(q_);
  EXPECT_THROW(DecodeAttention(q_.to(torch::kFloat64), keys_, values_, {}, 0.25, out), c10::Error);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, DecodeAttentionTest,
                         ::testing::Values(torch::kFloat32, torch::kBFloat16),
                         [](const auto& info) {
                           return info.param == torch::kFloat32 ? "float32" : "bfloat16";
                         });

}  // namespace
}  // namespace loramux
