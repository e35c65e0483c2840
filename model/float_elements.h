// Element access for the model's fused CPU loops (row_ops, decode_attention): float32 and
// bfloat16 tensors read as float32 (exactly) and written back rounded to nearest even, branch-free
// so the loops vectorize. Forced inline, for the ISA clones (common/isa_clones.h).
#pragma once

#include <c10/util/BFloat16.h>

#include "tensor/half_float.h"
#include "common/isa_clones.h"

namespace loramux {

LORAMUX_ALWAYS_INLINE float Widen(float v) { return v; }
LORAMUX_ALWAYS_INLINE float Widen(c10::BFloat16 v) { return BFloat16ToFloat(v.x); }

// float32 -> T.
template <typename T>
LORAMUX_ALWAYS_INLINE T Narrow(float v);
template <>
LORAMUX_ALWAYS_INLINE float Narrow<float>(float v) {
  return v;
}
template <>
LORAMUX_ALWAYS_INLINE c10::BFloat16 Narrow<c10::BFloat16>(float v) {
  return c10::BFloat16(FloatToBFloat16(v), c10::BFloat16::from_bits());
}

// The value a T holds after rounding v (v itself for float32).
template <typename T>
LORAMUX_ALWAYS_INLINE float Rounded(float v) {
  return Widen(Narrow<T>(v));
}

}  // namespace loramux
