// Private x86 helpers shared by the f32 and packed GEMV kernels (one copy, same summation order).
#ifndef QLM_X86_COMMON_H
#define QLM_X86_COMMON_H
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#include "qlm_quant_impl.h"

// Horizontal sum of 16 floats (fixed order: halves, quarters, pairs).
__attribute__((target("avx512f,avx2"), always_inline)) static inline float qlm_hsum512(__m512 v) {
    __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v),
                              _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// Superblock s (0..7) of the 3-bit octet at o (code layout 3; placement rule in qlm_quant_impl.h) as code
// bytes: 32 lanes (call with o + 32 for lanes 32..63) or all 64.
__attribute__((target("avx2"), always_inline)) static inline __m256i qlm_oct3_256(const uint8_t *o, const int s) {
    const __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(o + 64 * (s / 3)));
    if (!qlm_oct3_straddles(s)) return _mm256_and_si256(_mm256_srli_epi16(v, qlm_oct3_shift(s)), _mm256_set1_epi8(7));
    const __m256i v2 = _mm256_loadu_si256((const __m256i *)(const void *)(o + 128));
    return _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 6), _mm256_set1_epi8(3)),
                           _mm256_and_si256(_mm256_srli_epi16(v2, qlm_oct3_hishift(s)), _mm256_set1_epi8(4)));
}
__attribute__((target("avx512f,avx512bw"), always_inline)) static inline __m512i qlm_oct3_512(const uint8_t *o, const int s) {
    const __m512i v = _mm512_loadu_si512((const void *)(o + 64 * (s / 3)));
    if (!qlm_oct3_straddles(s)) return _mm512_and_si512(_mm512_srli_epi16(v, (unsigned)qlm_oct3_shift(s)), _mm512_set1_epi8(7));
    const __m512i v2 = _mm512_loadu_si512((const void *)(o + 128));
    return _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(v, 6), _mm512_set1_epi8(3)),
                           _mm512_and_si512(_mm512_srli_epi16(v2, (unsigned)qlm_oct3_hishift(s)), _mm512_set1_epi8(4)));
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

// The per-row side arrays (scales, zeros, LUT codebooks) of the 4-row block QLM_META_AHEAD rows
// ahead: they sit in their own arrays, so the codes' prefetch does not cover them, and in a decode
// step they come from DRAM: without this each row block began with a demand miss (LUT-4 decode,
// whose kernel reads the codebook first, was ~10% slower in the model than in the benchmark).
#ifndef QLM_META_AHEAD
#define QLM_META_AHEAD 16
#endif
static inline void qlm_pf_row_meta(const qlm_qmatrix *m, int r, int ng) {
    if (r >= m->rows) return;
    const size_t sb = (size_t)4 * (size_t)ng * sizeof(uint16_t);  // scale (or zero) bytes of 4 rows
    const char *s = (const char *)(m->scales + (size_t)r * (size_t)ng), *z = (const char *)(m->zeros + (size_t)r * (size_t)ng);
    for (size_t o = 0; o < sb + 63; o += 64) {
        _mm_prefetch(s + o, _MM_HINT_T1);
        _mm_prefetch(z + o, _MM_HINT_T1);
    }
    if (m->format == QLM_FMT_LUT && m->lut) {
        const char *l = (const char *)(m->lut + ((size_t)r << m->bits));
        for (size_t o = 0; o < ((size_t)4 << m->bits) + 63; o += 64) _mm_prefetch(l + o, _MM_HINT_T1);
    }
}
#endif
#endif
