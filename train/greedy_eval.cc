#include "train/greedy_eval.h"

#include <algorithm>

#include <torch/torch.h>

namespace loramux {

GreedyEval EvaluateGreedy(const TrainableModel& model, const std::vector<TrainExample>& examples,
                          const std::vector<int64_t>& eos) {
  torch::NoGradGuard no_grad;
  GreedyEval result;
  for (const TrainExample& ex : examples) {
    const std::vector<int64_t> want(ex.tokens.begin() + ex.prompt_length, ex.tokens.end());
    std::vector<int64_t> tokens(ex.tokens.begin(), ex.tokens.begin() + ex.prompt_length);
    std::vector<int64_t> got;
    while (got.size() <= want.size()) {
      const torch::Tensor logits = model.Forward(torch::tensor(tokens).unsqueeze(0));
      const int64_t next = logits[0][-1].argmax().item<int64_t>();
      got.push_back(next);
      tokens.push_back(next);
      if (std::find(eos.begin(), eos.end(), next) != eos.end()) break;
    }
    result.correct += got == want;
    ++result.total;
  }
  return result;
}

}  // namespace loramux
