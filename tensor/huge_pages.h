// Host memory in transparent huge pages (2 MiB), for the large buffers that every decode step
// streams end to end: the packed base weights (packed_linear), the KV cache, adapter factor arenas.
// With 4 KiB pages a step over a 320 MB model walks ~80,000 pages, and its TLB misses compete with
// the data for the caches; on 2 MiB pages it is 160. Measured on the issue-17 model (bfloat16,
// batch-32 decode, 2 threads) in one process: the same model with its memory on 4 KiB pages and
// collapsed onto huge pages (MADV_COLLAPSE), taking turns, turn order alternated: huge pages
// 1.0 and 1.9 ms faster a step (of 28-30 ms) over two runs; with this code the same pairing
// differs by -0.8 to +0.1 ms (the model is on huge pages already). Batch 1: no difference beyond
// the noise.
//
// The kernel honours the advice when /sys/kernel/mm/transparent_hugepage/enabled is `always` or
// `madvise` (Debian's default) and falls back to small pages silently otherwise. Thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>

#include <torch/types.h>

namespace loramux {

constexpr size_t kHugePageBytes = size_t{2} << 20;

// An anonymous private mapping of `bytes` (a multiple of kHugePageBytes), 2 MiB aligned, zeroed,
// advised for huge pages; nullptr when the mapping fails. Release with ::munmap(block, bytes).
void* MapHugePages(size_t bytes);

// An uninitialized contiguous CPU tensor of `sizes` and `dtype`: on its own huge-page mapping
// (unmapped when the last tensor sharing its storage goes) when it is at least kHugePageBytes,
// from LibTorch's allocator otherwise or when mapping fails.
torch::Tensor EmptyOnHugePages(torch::IntArrayRef sizes, torch::ScalarType dtype);

}  // namespace loramux
