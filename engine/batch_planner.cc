#include "engine/batch_planner.h"

#include <algorithm>
#include <utility>

namespace loramux {

std::vector<PlannedChunk> PlanStep(absl::Span<const PlannerEntry> entries,
                                   int64_t max_batch_tokens) {
  std::vector<PlannedChunk> plan;
  int64_t budget = max_batch_tokens;
  for (size_t i = 0; i < entries.size(); ++i) {
    if (entries[i].prefilled == entries[i].prompt_len) {
      plan.push_back({i, 1, false});
      --budget;
    }
  }
  for (size_t i = 0; i < entries.size() && budget > 0; ++i) {
    const PlannerEntry& e = entries[i];
    if (e.prefilled >= e.prompt_len) continue;
    const int64_t chunk = std::min(e.prompt_len - e.prefilled, budget);
    plan.push_back({i, chunk, true});
    budget -= chunk;
  }
  std::stable_sort(plan.begin(), plan.end(), [&](const PlannedChunk& a, const PlannedChunk& b) {
    const PlannerEntry& x = entries[a.entry];
    const PlannerEntry& y = entries[b.entry];
    return std::make_pair(x.adapter, x.adapter_scale) < std::make_pair(y.adapter, y.adapter_scale);
  });
  return plan;
}

}  // namespace loramux
