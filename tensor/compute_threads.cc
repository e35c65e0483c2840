#include "tensor/compute_threads.h"

#include <omp.h>

#include <ATen/Parallel.h>

namespace loramux {

void RunTensorOpsSerially() {
  // ATen sets a thread's OpenMP thread count from at::set_num_threads on the thread's first
  // parallel query; make that happen now so it cannot undo the setting below later.
  at::get_num_threads();
  omp_set_num_threads(1);
}

void ReleaseThreadTeam() { omp_pause_resource_all(omp_pause_soft); }

}  // namespace loramux
