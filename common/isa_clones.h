// LORAMUX_ISA_CLONES: compile a hot loop once per x86-64 level and pick the clone at load time.
// The project builds for baseline x86-64 (SSE2), which would leave most of an AVX2/AVX-512 unit
// idle; x86-64-v3 also brings F16C. Helpers a clone calls must be forced inline
// (LORAMUX_ALWAYS_INLINE) so each clone gets its own vector code.
// Not under ThreadSanitizer: the clones' ifunc resolver runs while the dynamic loader relocates
// the program, before the TSan runtime starts, and its instrumented code crashes there.
#pragma once

#if defined(__SANITIZE_THREAD__)
#define LORAMUX_ISA_CLONES
#else
#define LORAMUX_ISA_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif

#define LORAMUX_ALWAYS_INLINE inline __attribute__((always_inline))
