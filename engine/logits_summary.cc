#include "engine/logits_summary.h"

#include <algorithm>
#include <cmath>

#include <ATen/Parallel.h>

#include "tensor/half_float.h"
#include "common/isa_clones.h"

namespace loramux {
namespace {

// One row: the maximum and a finiteness probe in one pass (x - x is 0 for finite x and NaN for
// infinities and NaN, so the probe's sum is 0 exactly when the row is finite), the first index of
// the maximum, then the sum of e^(x - max): float32 terms summed in blocks, the block sums in
// double (a plain float sum of 150,000 terms drifts by ~1e-4 where it is not vectorised; a double
// one does not vectorise). Cloned per ISA (common/isa_clones.h).
LORAMUX_ISA_CLONES LogitsRowSummary SummarizeRow(const float* x, int64_t vocab, bool summarize) {
  LogitsRowSummary out;
  float top = -INFINITY;
  float probe = 0.0f;
#pragma omp simd reduction(max : top) reduction(+ : probe)
  for (int64_t i = 0; i < vocab; ++i) {
    top = x[i] > top ? x[i] : top;
    probe += x[i] - x[i];
  }
  out.finite = probe == 0.0f && vocab > 0;
  if (!out.finite || !summarize) return out;
  constexpr int64_t kBlock = 256;
  int64_t argmax = -1;
  for (int64_t begin = 0; argmax < 0; begin += kBlock) {  // the maximum is in the row
    const int64_t end = std::min(vocab, begin + kBlock);
    int hit = 0;
#pragma omp simd reduction(| : hit)
    for (int64_t i = begin; i < end; ++i) hit |= x[i] == top;
    if (hit) {
      argmax = begin;
      while (x[argmax] != top) ++argmax;
    }
  }
  double sum = 0.0;
  for (int64_t begin = 0; begin < vocab; begin += kBlock) {
    const int64_t end = std::min(vocab, begin + kBlock);
    float block = 0.0f;
#pragma omp simd reduction(+ : block)
    for (int64_t i = begin; i < end; ++i) block += FastExp(x[i] - top);
    sum += static_cast<double>(block);
  }
  out.argmax = static_cast<int32_t>(argmax);
  out.log_normalizer = static_cast<double>(top) + std::log(sum);
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
