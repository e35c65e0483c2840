// bfloat16 and IEEE binary16 bit patterns to float32, exactly, for every pattern (zeros,
// subnormals, infinities and NaNs included). Branch-free integer operations, so loops over them
// vectorize and flush-to-zero modes cannot change a result. Forced inline so ISA-cloned callers
// (bgmv_cpu) get them in their own vector code.
#pragma once

#include <cstdint>
#include <cstring>

namespace loramux {

#define LORAMUX_HALF_INLINE inline __attribute__((always_inline))

LORAMUX_HALF_INLINE float FloatFromBits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

LORAMUX_HALF_INLINE uint32_t BitsFromFloat(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  return bits;
}

// bfloat16 is the upper half of a float32.
LORAMUX_HALF_INLINE float BFloat16ToFloat(uint16_t bits) {
  return FloatFromBits(static_cast<uint32_t>(bits) << 16);
}

// Normals: exponent and mantissa shift into float32's places and the exponent is rebiased by
// 127 - 15 = 112. Subnormals and zero: mantissa · 2^-24. Infinities and NaNs: float32's all-ones
// exponent with the mantissa (NaN payload) shifted along.
LORAMUX_HALF_INLINE float HalfToFloat(uint16_t bits) {
  const int32_t magnitude = bits & 0x7fff;
  const uint32_t subnormal = BitsFromFloat(static_cast<float>(magnitude) * 0x1p-24f);
  const uint32_t normal = (static_cast<uint32_t>(magnitude) << 13) + (112u << 23);
  const uint32_t special = 0x7f800000u | ((static_cast<uint32_t>(magnitude) & 0x3ffu) << 13);
  const uint32_t is_subnormal = 0u - static_cast<uint32_t>(magnitude < 0x400);  // all ones or 0
  const uint32_t is_special = 0u - static_cast<uint32_t>(magnitude >= 0x7c00);
  const uint32_t finite = (subnormal & is_subnormal) | (normal & ~is_subnormal);
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  return FloatFromBits((special & is_special) | (finite & ~is_special) | sign);
}

#undef LORAMUX_HALF_INLINE

}  // namespace loramux
