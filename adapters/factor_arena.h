// The host memory that holds all low-rank factors of one adapter, and the single pass that fills
// it from a weight file.
//
// FactorArena: one uninitialized float32 block, 64-byte aligned. Blocks of 2 MiB or more are
// mapped 2 MiB aligned and advised for transparent huge pages: the fused decode kernel streams
// every factor of a batch on each step, and huge pages remove most of its TLB misses (measured by
// bench/adapter_bench). Arenas of 256 KiB or more return their memory to a bounded process-wide
// pool (256 MiB) on destruction, so loading after an eviction reuses pages instead of faulting in
// and zeroing new ones. Filled by one thread, then only read.
//
// CopyFactor: converts a floating point TensorView (F32, F16, BF16, F64; any alignment) into
// float32 at `dst`, optionally transposing a [rows, cols] view into [cols, rows], and reports
// whether every value is finite, all in one read of the source bytes. Torch-free.
#pragma once

#include <cstddef>
#include <cstdint>

#include "formats/safetensors.h"

namespace loramux {

class FactorArena {
 public:
  // Room for `floats` values. Throws std::bad_alloc when memory is exhausted.
  explicit FactorArena(size_t floats);
  ~FactorArena();
  FactorArena(const FactorArena&) = delete;
  FactorArena& operator=(const FactorArena&) = delete;

  float* data() const { return data_; }
  size_t size() const { return floats_; }
  bool huge_pages() const { return mapped_bytes_ >= (size_t{2} << 20); }

  // Offsets handed out by a layout are rounded up to this many floats (one cache line).
  static constexpr size_t kAlignFloats = 16;
  static size_t Aligned(size_t floats) {
    return (floats + kAlignFloats - 1) / kAlignFloats * kAlignFloats;
  }

 private:
  float* data_ = nullptr;
  size_t floats_ = 0;
  size_t mapped_bytes_ = 0;  // > 0 when data_ is a pooled block of that many bytes
};

// Writes the numel() values of `view` to dst as float32 (row-major); with `transpose` the 2-D
// view [rows, cols] is written as [cols, rows]. Returns false when a value is NaN or infinite
// (or, from F64, outside float32's range); dst is then partly written. Requires
// IsFloatingDType(view.dtype) and, for `transpose`, a 2-D shape.
bool CopyFactor(const TensorView& view, bool transpose, float* dst);

}  // namespace loramux
