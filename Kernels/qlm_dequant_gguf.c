// f16/bf16 conversions and dequantisation of the GGUF block formats (load time only).
// Conversions are bit-exact IEEE 754 (subnormals, ±inf, NaN payloads preserved where they fit),
// rounding to nearest even on the way down. Portable scalar code, OpenMP over blocks for large n.
#include "qlm_kernels.h"
#include "qlm_omp.h"

#include <string.h>

// d·q + m must not be fused into an FMA on some targets and not on others.
#pragma STDC FP_CONTRACT OFF

_Static_assert(sizeof(qlm_block_q8_0) == 34, "qlm_block_q8_0 must be 34 bytes (ggml layout)");
_Static_assert(sizeof(qlm_block_q4_0) == 18, "qlm_block_q4_0 must be 18 bytes (ggml layout)");
_Static_assert(sizeof(qlm_block_q4_1) == 20, "qlm_block_q4_1 must be 20 bytes (ggml layout)");
_Static_assert(sizeof(float) == 4 && sizeof(uint32_t) == 4, "32-bit float expected");

static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

// ---------------------------------------------------------------------------------------------
// Scalar conversions
// ---------------------------------------------------------------------------------------------
float qlm_f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu;
    const uint32_t mant = h & 0x3ffu;
    if (exp == 0) {
        // zero or subnormal: mant · 2^-24, exact in f32
        const float v = (float)mant * 0x1p-24f;
        return u2f(f2u(v) | sign);
    }
    if (exp == 31) return u2f(sign | 0x7f800000u | (mant << 13));  // inf / NaN (payload kept)
    return u2f(sign | ((exp + (127 - 15)) << 23) | (mant << 13));
}

uint16_t qlm_f32_to_f16(float f) {
    uint32_t x = f2u(f);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    x &= 0x7fffffffu;
    if (x >= 0x7f800000u) {
        if (x == 0x7f800000u) return sign | 0x7c00u;  // inf
        uint16_t m = (uint16_t)((x >> 13) & 0x3ffu);  // NaN: keep the top payload bits ...
        if (m == 0) m = 0x200u;                       // ... but never turn into inf
        return sign | 0x7c00u | m;
    }
    if (x >= 0x477ff000u) return sign | 0x7c00u;  // ≥ 65520 rounds (to even) past 65504 → inf
    if (x < 0x38800000u) {
        // Below the smallest normal f16 (2^-14): the sum with 0.5 has an ulp of 2^-24, so the
        // FPU rounds to the f16 subnormal grid (nearest even); 0x400 is the smallest normal.
        const float v = u2f(x) + 0.5f;
        return sign | (uint16_t)(f2u(v) - f2u(0.5f));
    }
    const uint32_t odd = (x >> 13) & 1u;
    x += ((uint32_t)(15 - 127) << 23) + 0xfffu + odd;
    return sign | (uint16_t)(x >> 13);
}

float qlm_bf16_to_f32(uint16_t h) { return u2f((uint32_t)h << 16); }

uint16_t qlm_f32_to_bf16(float f) {
    const uint32_t x = f2u(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) {  // NaN: truncate, keep it a NaN
        uint16_t h = (uint16_t)(x >> 16);
        if ((h & 0x7fu) == 0) h |= 0x40u;
        return h;
    }
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

// ---------------------------------------------------------------------------------------------
// Bulk conversions / dequantisation
// ---------------------------------------------------------------------------------------------
// Work items (elements) below which a parallel region does not pay.
#define QLM_DQ_PAR_ELEMS ((size_t)1 << 18)

static inline int par_threads(size_t elems) {
#ifdef _OPENMP
    if (elems >= QLM_DQ_PAR_ELEMS && !omp_in_parallel()) return qlm_get_threads();
#else
    (void)elems;
#endif
    return 1;
}

void qlm_dequant_f16(const uint16_t *src, float *dst, size_t n) {
    const int nt = par_threads(n);
    (void)nt;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (size_t i = 0; i < n; i++) dst[i] = qlm_f16_to_f32(src[i]);
}

void qlm_dequant_bf16(const uint16_t *src, float *dst, size_t n) {
    const int nt = par_threads(n);
    (void)nt;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (size_t i = 0; i < n; i++) dst[i] = u2f((uint32_t)src[i] << 16);
}

void qlm_quant_f16(const float *src, uint16_t *dst, size_t n) {
    const int nt = par_threads(n);
    (void)nt;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (size_t i = 0; i < n; i++) dst[i] = qlm_f32_to_f16(src[i]);
}

void qlm_quant_bf16(const float *src, uint16_t *dst, size_t n) {
    const int nt = par_threads(n);
    (void)nt;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (size_t i = 0; i < n; i++) dst[i] = qlm_f32_to_bf16(src[i]);
}

// Blocks are read through memcpy: GGUF data may sit at any 2-byte offset inside a mapping.
static inline uint16_t load_u16(const unsigned char *p) { uint16_t v; memcpy(&v, p, 2); return v; }

void qlm_dequant_q8_0(const void *src, float *dst, size_t n) {
    const unsigned char *base = (const unsigned char *)src;
    const size_t nb = n / QLM_QK;
    const int nt = par_threads((size_t)nb * QLM_QK);
    (void)nt;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (size_t b = 0; b < nb; b++) {
        const unsigned char *blk = base + b * sizeof(qlm_block_q8_0);
        const float d = qlm_f16_to_f32(load_u16(blk + offsetof(qlm_block_q8_0, d)));
        const int8_t *qs = (const int8_t *)(blk + offsetof(qlm_block_q8_0, qs));
        float *o = dst + b * QLM_QK;
        for (int j = 0; j < QLM_QK; j++) o[j] = d * (float)qs[j];
    }
}

void qlm_dequant_q4_0(const void *src, float *dst, size_t n) {
    const unsigned char *base = (const unsigned char *)src;
    const size_t nb = n / QLM_QK;
    const int nt = par_threads((size_t)nb * QLM_QK);
    (void)nt;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (size_t b = 0; b < nb; b++) {
        const unsigned char *blk = base + b * sizeof(qlm_block_q4_0);
        const float d = qlm_f16_to_f32(load_u16(blk + offsetof(qlm_block_q4_0, d)));
        const uint8_t *qs = blk + offsetof(qlm_block_q4_0, qs);
        float *o = dst + b * QLM_QK;
        for (int j = 0; j < QLM_QK / 2; j++) {
            o[j] = d * (float)((int)(qs[j] & 0x0f) - 8);
            o[j + QLM_QK / 2] = d * (float)((int)(qs[j] >> 4) - 8);
        }
    }
}

void qlm_dequant_q4_1(const void *src, float *dst, size_t n) {
    const unsigned char *base = (const unsigned char *)src;
    const size_t nb = n / QLM_QK;
    const int nt = par_threads((size_t)nb * QLM_QK);
    (void)nt;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (size_t b = 0; b < nb; b++) {
        const unsigned char *blk = base + b * sizeof(qlm_block_q4_1);
        const float d = qlm_f16_to_f32(load_u16(blk + offsetof(qlm_block_q4_1, d)));
        const float m = qlm_f16_to_f32(load_u16(blk + offsetof(qlm_block_q4_1, m)));
        const uint8_t *qs = blk + offsetof(qlm_block_q4_1, qs);
        float *o = dst + b * QLM_QK;
        for (int j = 0; j < QLM_QK / 2; j++) {
            o[j] = d * (float)(qs[j] & 0x0f) + m;
            o[j + QLM_QK / 2] = d * (float)(qs[j] >> 4) + m;
        }
    }
}
