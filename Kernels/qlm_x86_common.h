// Private x86 helpers shared by the f32 and packed GEMV kernels (one copy, same summation order).
#ifndef QLM_X86_COMMON_H
#define QLM_X86_COMMON_H
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <stddef.h>

// Horizontal sum of 16 floats (fixed order: halves, quarters, pairs).
__attribute__((target("avx512f,avx2"), always_inline)) static inline float qlm_hsum512(__m512 v) {
    __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v),
                              _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// Software prefetch (into L2: an L1 prefetch this far ahead would evict the lines still in use)
// distance in bytes: whole row blocks, at least QLM_QPF_MIN bytes ahead, at most QLM_QPF_MAXBLK blocks.
#ifndef QLM_QPF_MIN
#define QLM_QPF_MIN 16384
#endif
#ifndef QLM_QPF_MAXBLK
#define QLM_QPF_MAXBLK 8
#endif
static inline size_t qlm_pf_distance(size_t block_bytes) {
    size_t k = (QLM_QPF_MIN + block_bytes - 1) / block_bytes;
    if (k > QLM_QPF_MAXBLK) k = QLM_QPF_MAXBLK;
    return k * block_bytes;
}
#endif
#endif
