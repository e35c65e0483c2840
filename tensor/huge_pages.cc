#include "tensor/huge_pages.h"

#include <sys/mman.h>

#include <torch/torch.h>

namespace loramux {

void* MapHugePages(size_t bytes) {
  // Over-map by one huge page, then trim both ends to the aligned span.
  const size_t span = bytes + kHugePageBytes;
  void* raw = ::mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const uintptr_t start = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = (start + kHugePageBytes - 1) & ~(kHugePageBytes - 1);
  if (aligned > start) ::munmap(raw, aligned - start);
  const uintptr_t end = start + span, used_end = aligned + bytes;
  if (end > used_end) ::munmap(reinterpret_cast<void*>(used_end), end - used_end);
  ::madvise(reinterpret_cast<void*>(aligned), bytes, MADV_HUGEPAGE);  // advice; ignore failure
  return reinterpret_cast<void*>(aligned);
}

torch::Tensor EmptyOnHugePages(torch::IntArrayRef sizes, torch::ScalarType dtype) {
  const auto options = torch::TensorOptions().dtype(dtype);
  const size_t bytes = static_cast<size_t>(c10::multiply_integers(sizes)) * c10::elementSize(dtype);
  if (bytes < kHugePageBytes) return torch::empty(sizes, options);
  const size_t mapped = (bytes + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
  void* block = MapHugePages(mapped);
  if (block == nullptr) return torch::empty(sizes, options);
  return torch::from_blob(
      block, sizes, [mapped](void* data) { ::munmap(data, mapped); }, options);
}

}  // namespace loramux
