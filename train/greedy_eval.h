// Greedy exact-match accuracy of a model (with an adapter or not) on held-out JSONL examples, with
// the training forward (no KV cache; each step re-runs the prefix, fine for short answers). The
// demo script prints it after each training run; the server-side accuracy test is the check.
#pragma once

#include <cstdint>
#include <vector>

#include "train/train_data.h"
#include "train/trainable_model.h"

namespace loramux {

struct GreedyEval {
  int64_t correct = 0;
  int64_t total = 0;
};

// Generates from each example's prompt until EOS (any of `eos`) or as many tokens as its
// completion plus one, and counts completions equal to the example's (EOS included when it has
// one).
GreedyEval EvaluateGreedy(const TrainableModel& model, const std::vector<TrainExample>& examples,
                          const std::vector<int64_t>& eos);

}  // namespace loramux
