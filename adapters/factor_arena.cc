#include "adapters/factor_arena.h"

#include <sys/mman.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <type_traits>

#include "tensor/half_float.h"
#include "tensor/huge_pages.h"

namespace loramux {
namespace {

// Arenas from this size on come from the pool, in steps of kPoolStep below 2 MiB (at most a
// quarter wasted) and of whole huge pages above; smaller ones come from malloc.
constexpr size_t kPooledMin = size_t{256} << 10;
constexpr size_t kPoolStep = size_t{64} << 10;

size_t RoundUp(size_t bytes, size_t step) { return (bytes + step - 1) / step * step; }
size_t PoolBlockBytes(size_t bytes) {
  return bytes >= kHugePageBytes ? RoundUp(bytes, kHugePageBytes) : RoundUp(bytes, kPoolStep);
}

// Maps `bytes` (a PoolBlockBytes size); blocks of 2 MiB or more are 2 MiB aligned and advised for
// huge pages. nullptr on failure.
void* MapBlock(size_t bytes) {
  if (bytes >= kHugePageBytes) return MapHugePages(bytes);
  void* block = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return block == MAP_FAILED ? nullptr : block;
}

// Freed huge-page blocks kept for the next arena of the same size class, like a caching
// allocator: reusing a block skips the page faults and the kernel's zeroing of fresh pages, which
// otherwise cost as much as copying the factors. Holds at most kMaxPooledBytes; the oldest
// blocks are unmapped first. Thread-safe.
class BlockPool {
 public:
  static BlockPool& Global() {
    static BlockPool* pool = new BlockPool();  // never destroyed: arenas may outlive statics
    return *pool;
  }

  // A block of exactly `bytes` (a PoolBlockBytes size), reused when one is pooled.
  void* Take(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto it = blocks_.begin(); it != blocks_.end(); ++it) {
        if (it->second.bytes != bytes) continue;
        void* block = it->second.data;
        pooled_bytes_ -= bytes;
        blocks_.erase(it);
        return block;
      }
    }
    return MapBlock(bytes);
  }

  void Give(void* block, size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    blocks_.emplace(++clock_, Block{block, bytes});
    pooled_bytes_ += bytes;
    while (pooled_bytes_ > kMaxPooledBytes) {
      auto oldest = blocks_.begin();
      ::munmap(oldest->second.data, oldest->second.bytes);
      pooled_bytes_ -= oldest->second.bytes;
      blocks_.erase(oldest);
    }
  }

 private:
  static constexpr size_t kMaxPooledBytes = size_t{256} << 20;
  struct Block {
    void* data;
    size_t bytes;
  };
  std::mutex mu_;
  std::map<uint64_t, Block> blocks_;  // by age
  uint64_t clock_ = 0;
  size_t pooled_bytes_ = 0;
};

// Element i of a little-endian array of T at an arbitrary address, as float (float and double
// directly; BF16 and F16 below).
template <typename T>
struct Load {
  static float At(const uint8_t* p, int64_t i) {
    T v;
    std::memcpy(&v, p + i * sizeof(T), sizeof(T));
    return static_cast<float>(v);
  }
};
struct BF16 {};
template <>
struct Load<BF16> {
  static float At(const uint8_t* p, int64_t i) {
    uint16_t h;
    std::memcpy(&h, p + i * 2, 2);
    return BFloat16ToFloat(h);
  }
};
struct F16 {};
template <>
struct Load<F16> {
  static float At(const uint8_t* p, int64_t i) {
    uint16_t h;
    std::memcpy(&h, p + i * 2, 2);
    return HalfToFloat(h);
  }
};

// 1 when v is NaN or infinite (exponent bits all set); branch-free so the loops vectorize.
inline uint32_t NonFinite(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  return (bits & 0x7f800000u) == 0x7f800000u;
}

// Copies rows [r0, r1) x cols [c0, c1) of a [rows, cols] array into its transpose at dst.
template <typename T>
uint32_t TransposeBlock(const uint8_t* src, int64_t rows, int64_t cols, int64_t r0, int64_t r1,
                        int64_t c0, int64_t c1, float* dst) {
  uint32_t bad = 0;
  for (int64_t c = c0; c < c1; ++c) {
    float* out = dst + c * rows;
    for (int64_t r = r0; r < r1; ++r) {
      const float v = Load<T>::At(src, r * cols + c);
      out[r] = v;
      bad |= NonFinite(v);
    }
  }
  return bad;
}

#if defined(__x86_64__)
// float32 transpose in 8x8 register tiles (32-byte loads and stores). A column edge narrower
// than 8 (and so every matrix of rank < 8) is loaded masked into a zero-padded tile, which keeps
// small ranks on the vector path; only the last rows % 8 rows go through TransposeBlock.
// Returns nonzero when a value is not finite.
__attribute__((target("avx2"))) uint32_t TransposeF32Avx2(const uint8_t* src, int64_t rows,
                                                          int64_t cols, float* dst) {
  static const int32_t kLaneMask[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  const __m256i exponent = _mm256_set1_epi32(0x7f800000);
  __m256i bad = _mm256_setzero_si256();
  const int64_t rows8 = rows / 8 * 8;
  for (int64_t r0 = 0; r0 < rows8; r0 += 8) {
    for (int64_t c0 = 0; c0 < cols; c0 += 8) {
      const int64_t width = std::min<int64_t>(8, cols - c0);
      const __m256i mask =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kLaneMask + 8 - width));
      __m256 v[8];
      for (int i = 0; i < 8; ++i) {
        v[i] = _mm256_maskload_ps(reinterpret_cast<const float*>(src + ((r0 + i) * cols + c0) * 4),
                                  mask);
        const __m256i bits = _mm256_and_si256(_mm256_castps_si256(v[i]), exponent);
        bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(bits, exponent));
      }
      const __m256 t0 = _mm256_unpacklo_ps(v[0], v[1]), t1 = _mm256_unpackhi_ps(v[0], v[1]);
      const __m256 t2 = _mm256_unpacklo_ps(v[2], v[3]), t3 = _mm256_unpackhi_ps(v[2], v[3]);
      const __m256 t4 = _mm256_unpacklo_ps(v[4], v[5]), t5 = _mm256_unpackhi_ps(v[4], v[5]);
      const __m256 t6 = _mm256_unpacklo_ps(v[6], v[7]), t7 = _mm256_unpackhi_ps(v[6], v[7]);
      const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
      const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
      const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
      const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
      const __m256 columns[8] = {
          _mm256_permute2f128_ps(s0, s4, 0x20), _mm256_permute2f128_ps(s1, s5, 0x20),
          _mm256_permute2f128_ps(s2, s6, 0x20), _mm256_permute2f128_ps(s3, s7, 0x20),
          _mm256_permute2f128_ps(s0, s4, 0x31), _mm256_permute2f128_ps(s1, s5, 0x31),
          _mm256_permute2f128_ps(s2, s6, 0x31), _mm256_permute2f128_ps(s3, s7, 0x31)};
      for (int i = 0; i < width; ++i) _mm256_storeu_ps(dst + (c0 + i) * rows + r0, columns[i]);
    }
  }
  const uint32_t edge = TransposeBlock<float>(src, rows, cols, rows8, rows, 0, cols, dst);
  return edge | static_cast<uint32_t>(!_mm256_testz_si256(bad, bad));
}
#endif

template <typename T>
bool CopyAs(const uint8_t* src, int64_t rows, int64_t cols, bool transpose, float* dst) {
  uint32_t bad = 0;
  if (!transpose) {
    const int64_t n = rows * cols;
#pragma omp simd reduction(| : bad)
    for (int64_t i = 0; i < n; ++i) {
      const float v = Load<T>::At(src, i);
      dst[i] = v;
      bad |= NonFinite(v);
    }
    return bad == 0;
  }
#if defined(__x86_64__)
  if constexpr (std::is_same_v<T, float>) {
    if (__builtin_cpu_supports("avx2")) return TransposeF32Avx2(src, rows, cols, dst) == 0;
  }
#endif
  // Blocks of source rows stay in L1 while each of their columns is written out contiguously.
  constexpr int64_t kBlockRows = 64;
  for (int64_t r0 = 0; r0 < rows; r0 += kBlockRows) {
    bad |= TransposeBlock<T>(src, rows, cols, r0, std::min(rows, r0 + kBlockRows), 0, cols, dst);
  }
  return bad == 0;
}

}  // namespace

FactorArena::FactorArena(size_t floats) : floats_(floats) {
  const size_t bytes = std::max<size_t>(floats, 1) * sizeof(float);
  if (bytes >= kPooledMin) {
    data_ = static_cast<float*>(BlockPool::Global().Take(PoolBlockBytes(bytes)));
    if (data_ != nullptr) {
      mapped_bytes_ = PoolBlockBytes(bytes);
      return;
    }
  }
  data_ = static_cast<float*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64));
  if (data_ == nullptr) throw std::bad_alloc();
}

FactorArena::~FactorArena() {
  if (mapped_bytes_ > 0)
    BlockPool::Global().Give(data_, mapped_bytes_);
  else
    std::free(data_);
}

bool CopyFactor(const TensorView& view, bool transpose, float* dst) {
  int64_t rows = 1, cols = view.numel();
  if (transpose) {
    rows = view.shape.at(0);
    cols = view.shape.at(1);
  }
  switch (view.dtype) {
    case DType::kF32: return CopyAs<float>(view.data, rows, cols, transpose, dst);
    case DType::kBF16: return CopyAs<BF16>(view.data, rows, cols, transpose, dst);
    case DType::kF16: return CopyAs<F16>(view.data, rows, cols, transpose, dst);
    case DType::kF64: return CopyAs<double>(view.data, rows, cols, transpose, dst);
    default: return false;
  }
}

}  // namespace loramux
