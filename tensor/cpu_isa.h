// Per-ISA code for hand-written CPU kernels. The project builds for baseline x86-64 (SSE2), which
// would leave most of an AVX2/AVX-512 unit idle: a kernel's entry points carry LORAMUX_ISA_CLONES
// (GCC compiles one clone per ISA and picks at load time; x86-64-v3 also brings F16C), and
// everything they call is LORAMUX_INLINE, so each clone gets its own vector code (an out-of-line
// helper would be compiled once, for the baseline).
//
// Not under ThreadSanitizer: the clones' ifunc resolver runs while the dynamic loader relocates
// the program, before the TSan runtime starts, and its instrumented code crashes there.
#pragma once

#define LORAMUX_INLINE inline __attribute__((always_inline))

#if defined(__SANITIZE_THREAD__) || !defined(__x86_64__)
#define LORAMUX_ISA_CLONES
#else
#define LORAMUX_ISA_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
