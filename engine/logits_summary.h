// What a step needs from each row of its logits, for a whole batch in one vectorised pass per
// row: whether the row is finite and, for rows that pick a token, its argmax and log normaliser
// (the LogitsRow the sampler takes). Torch-free header.
//
// Threads: rows are split over LibTorch's intra-op threads; a row's results depend on that row
// alone, never on its batch-mates.
#pragma once

#include <cstdint>
#include <vector>

namespace loramux {

struct LogitsRowSummary {
  bool finite = false;        // every value is a finite number (no NaN, no infinity)
  int32_t argmax = 0;         // the lowest id of the maximum; set for finite summarised rows
  double log_normalizer = 0;  // log(sum_i exp(logits[i])); likewise
};

// logits [rows, vocab] float32, row-major, on the host. summarize[r]: whether row r needs its
// argmax and log normaliser (others are only checked for finiteness).
std::vector<LogitsRowSummary> SummarizeLogitsRows(const float* logits, int64_t rows, int64_t vocab,
                                                  const std::vector<bool>& summarize);

}  // namespace loramux
