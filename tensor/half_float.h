// bfloat16 and IEEE binary16 bit patterns to float32, exactly, for every pattern (zeros,
// subnormals, infinities and NaNs included), float32 to bfloat16 (rounded to nearest even), and a
// vectorizable e^x. Branch-free integer operations, so loops over them vectorize and
// flush-to-zero modes cannot change a conversion. Forced inline so ISA-cloned callers (bgmv_cpu,
// the model's fused steps) get them in their own vector code.
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

// float32 -> bfloat16 bits, rounding to nearest even (as c10::BFloat16 and the hardware do); NaNs
// become the quiet NaN 0x7fc0 (sign kept). Branch-free, so loops over it vectorize.
LORAMUX_HALF_INLINE uint16_t FloatToBFloat16(float f) {
  const uint32_t bits = BitsFromFloat(f);
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  const uint32_t is_nan = 0u - static_cast<uint32_t>((bits & 0x7fffffffu) > 0x7f800000u);
  return static_cast<uint16_t>((((bits >> 16) | 0x40u) & is_nan) | (rounded & ~is_nan));
}

// e^x to within ~2 ulp for finite x (Cody-Waite reduction and Cephes' degree-6 polynomial), NaN
// for NaN; x is clamped to [-87.3, 88] (results below 2^-126 come out as ~1e-38, not 0 or a
// subnormal). No calls and no float-to-int conversions, so loops over it vectorize (glibc's expf
// does not without -ffast-math).
LORAMUX_HALF_INLINE float FastExp(float x) {
  x = x < -87.3f ? -87.3f : (x > 88.0f ? 88.0f : x);
  constexpr float kShifter = 12582912.0f;  // 1.5 * 2^23: t's low mantissa bits hold round(n)
  const float t = x * 1.44269504088896341f + kShifter;
  const float n = t - kShifter;
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;  // x - n·ln2, in two parts
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const uint32_t exponent = (BitsFromFloat(t) - BitsFromFloat(kShifter) + 127u) << 23;
  return p * FloatFromBits(exponent);
}

#undef LORAMUX_HALF_INLINE

}  // namespace loramux
