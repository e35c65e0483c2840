// Which threads run LibTorch's parallel kernels. Torch-free header (gRPC code calls it).
//
// LibTorch, oneDNN and OpenBLAS all run on libgomp, which gives every thread that starts a parallel
// op its own team of OpenMP worker threads, kept until that thread exits. Once a process holds
// more OpenMP threads than CPUs, libgomp stops spinning at its barriers and sleeps in the kernel
// instead, so each of the ~100 parallel ops in a decode step pays futex wake-ups (measured on 2
// CPUs: a bfloat16 batch-32 decode step 26.6 → 31.6 ms, with ~100× the context switches).
//
// So a serving process keeps one team, the scheduler thread's: threads that prepare tensors off
// the hot path (adapter loads, upload commits) run their ops on themselves alone, and the thread
// that loads the model hands its team back when it is done.
#pragma once

namespace loramux {

// From now on, LibTorch (and oneDNN, OpenBLAS) ops called on this thread run on it alone, without
// an OpenMP team. Cheap and idempotent; meant as a thread's first call.
void RunTensorOpsSerially();

// Ends the calling thread's OpenMP team, if it has one (its worker threads exit). A later parallel
// op on this thread starts a new one. Not from inside a parallel region.
void ReleaseThreadTeam();

}  // namespace loramux
