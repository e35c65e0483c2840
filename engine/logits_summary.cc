#include "engine/logits_summary.h"

#include <cmath>

#include <ATen/Parallel.h>

#include "adapters/half_float.h"
#include "common/isa_clones.h"

namespace loramux {
namespace {

// One row: finiteness and maximum in one pass (x - x is 0 exactly for finite x), the first
// index of the maximum, then the sum of e^(x - max). Cloned per ISA (common/isa_clones.h).
LORAMUX_ISA_CLONES LogitsRowSummary SummarizeRow(const float* x, int64_t vocab, bool summarize) {
  LogitsRowSummary out;
  float top = -INFINITY;
  float nonfinite = 0.0f;  // stays 0 while every x - x is 0
#pragma omp simd reduction(max : top) reduction(+ : nonfinite)
  for (int64_t i = 0; i < vocab; ++i) {
    top = std::max(top, x[i]);
    nonfinite += (x[i] - x[i] == 0.0f) ? 0.0f : 1.0f;
  }
  out.finite = nonfinite == 0.0f && vocab > 0;
  if (!out.finite || !summarize) return out;
  int64_t argmax = 0;
  while (x[argmax] != top) ++argmax;
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < vocab; ++i) sum += FastExp(x[i] - top);
  out.argmax = static_cast<int32_t>(argmax);
  out.log_normalizer = static_cast<double>(top) + std::log(static_cast<double>(sum));
  return out;
}

}  // namespace

std::vector<LogitsRowSummary> SummarizeLogitsRows(const float* logits, int64_t rows, int64_t vocab,
                                                  const std::vector<bool>& summarize) {
  std::vector<LogitsRowSummary> out(static_cast<size_t>(rows));
  at::parallel_for(0, rows, 1, [&](int64_t first, int64_t last) {
    for (int64_t r = first; r < last; ++r) {
      out[r] = SummarizeRow(logits + r * vocab, vocab, summarize[r]);
    }
  });
  return out;
}

}  // namespace loramux
