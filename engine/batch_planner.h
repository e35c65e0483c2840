// The batch planner: which tokens of which running requests go into the next forward step.
// Pure (no model, no tensors, no locks): the scheduler describes each running request's progress
// and gets the step's chunks back.
//
// Thread-safety: a pure function.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace loramux {

// One running request, as the planner sees it.
struct PlannerEntry {
  int64_t prompt_len = 0;         // prompt tokens to prefill in all
  int64_t prefilled = 0;          // prefilled so far; prefilled == prompt_len: it decodes
  const void* adapter = nullptr;  // identity of its adapter's weights (null: the base)
  double adapter_scale = 1.0;     // with `adapter`, what makes tokens share one segment
};

struct PlannedChunk {
  size_t entry = 0;    // index into the entries given
  int64_t length = 0;  // tokens of it in this step
  bool prefill = false;
};

// One decode token for every decoding entry, then prefill chunks in entry order while
// `max_batch_tokens` lasts (the last chunk is cut to fit; decode tokens are never cut, so a step
// holds at least one token per decoding entry). The chunks are ordered, stably, by adapter and
// scale, so that each adapter's tokens are contiguous: one segment per (adapter, scale).
std::vector<PlannedChunk> PlanStep(absl::Span<const PlannerEntry> entries,
                                   int64_t max_batch_tokens);

}  // namespace loramux
