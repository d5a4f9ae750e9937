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

// Runs fn over [0, n) in one contiguous range per thread where n is large enough (qlm_omp_threads),
// else on the calling thread: the KV cache's f32 -> f16 writes are two small calls per layer and
// decoded token.
typedef void (*qlm_range_fn)(const void *src, void *dst, size_t i0, size_t i1);
static void par_range(qlm_range_fn fn, const void *src, void *dst, size_t n, size_t min) {
    const int nt = qlm_omp_threads(n, min, 1, 1 << 30);
    if (nt <= 1) {
        fn(src, dst, 0, n);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
    {
        const size_t t = (size_t)omp_get_thread_num(), m = (size_t)omp_get_num_threads();
        fn(src, dst, n * t / m, n * (t + 1) / m);
    }
#endif
}

static void dequant_f16_range(const void *src, void *dst, size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; i++) ((float *)dst)[i] = qlm_f16_to_f32(((const uint16_t *)src)[i]);
}
static void dequant_bf16_range(const void *src, void *dst, size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; i++) ((float *)dst)[i] = u2f((uint32_t)((const uint16_t *)src)[i] << 16);
}
static void quant_f16_range(const void *src, void *dst, size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; i++) ((uint16_t *)dst)[i] = qlm_f32_to_f16(((const float *)src)[i]);
}
static void quant_bf16_range(const void *src, void *dst, size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; i++) ((uint16_t *)dst)[i] = qlm_f32_to_bf16(((const float *)src)[i]);
}

void qlm_dequant_f16(const uint16_t *src, float *dst, size_t n) { par_range(dequant_f16_range, src, dst, n, QLM_DQ_PAR_ELEMS); }
void qlm_dequant_bf16(const uint16_t *src, float *dst, size_t n) { par_range(dequant_bf16_range, src, dst, n, QLM_DQ_PAR_ELEMS); }
void qlm_quant_f16(const float *src, uint16_t *dst, size_t n) { par_range(quant_f16_range, src, dst, n, QLM_DQ_PAR_ELEMS); }
void qlm_quant_bf16(const float *src, uint16_t *dst, size_t n) { par_range(quant_bf16_range, src, dst, n, QLM_DQ_PAR_ELEMS); }

// Blocks are read through memcpy: GGUF data may sit at any 2-byte offset inside a mapping.
static inline uint16_t load_u16(const unsigned char *p) { uint16_t v; memcpy(&v, p, 2); return v; }

static void dequant_q8_0_range(const void *src, void *out, size_t b0, size_t b1) {
    const unsigned char *base = (const unsigned char *)src;
    float *dst = (float *)out;
    for (size_t b = b0; b < b1; b++) {
        const unsigned char *blk = base + b * sizeof(qlm_block_q8_0);
        const float d = qlm_f16_to_f32(load_u16(blk + offsetof(qlm_block_q8_0, d)));
        const int8_t *qs = (const int8_t *)(blk + offsetof(qlm_block_q8_0, qs));
        float *o = dst + b * QLM_QK;
        for (int j = 0; j < QLM_QK; j++) o[j] = d * (float)qs[j];
    }
}

static void dequant_q4_0_range(const void *src, void *out, size_t b0, size_t b1) {
    const unsigned char *base = (const unsigned char *)src;
    float *dst = (float *)out;
    for (size_t b = b0; b < b1; b++) {
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

static void dequant_q4_1_range(const void *src, void *out, size_t b0, size_t b1) {
    const unsigned char *base = (const unsigned char *)src;
    float *dst = (float *)out;
    for (size_t b = b0; b < b1; b++) {
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

// Blocks of QLM_QK values (the threshold, too, counts blocks).
void qlm_dequant_q8_0(const void *src, float *dst, size_t n) { par_range(dequant_q8_0_range, src, dst, n / QLM_QK, QLM_DQ_PAR_ELEMS / QLM_QK); }
void qlm_dequant_q4_0(const void *src, float *dst, size_t n) { par_range(dequant_q4_0_range, src, dst, n / QLM_QK, QLM_DQ_PAR_ELEMS / QLM_QK); }
void qlm_dequant_q4_1(const void *src, float *dst, size_t n) { par_range(dequant_q4_1_range, src, dst, n / QLM_QK, QLM_DQ_PAR_ELEMS / QLM_QK); }
