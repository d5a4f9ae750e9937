// Private: the contract between the packed-weight driver (qlm_quant.c) and the per-ISA row
// kernels (qlm_qgemv_x86.c, qlm_qgemv_neon.c).
#ifndef QLM_QUANT_IMPL_H
#define QLM_QUANT_IMPL_H

#include "qlm_quant.h"

// 3-bit superblock b of a row of nsb lies in an octet (code layout 3, qlm_quant.h) at
// row + (b & ~7)·24, as superblock b & 7 of it; otherwise it is a single 24-byte superblock at row + 24·b.
static inline int qlm_sb3_in_octet(int b, int nsb) { return b < (nsb & ~7); }
// Where code s (0..7) of an octet lies: vector V_{s/3}, bits qlm_oct3_shift(s) up. Codes 2 and 5
// (qlm_oct3_straddles) hold only their low 2 bits there (bits 6..7); their high bit is bit 6 + s/3 of V2,
// i.e. (V2 >> qlm_oct3_hishift(s)) & 4. Every decoder (scalar and SIMD) follows this one rule.
static inline int qlm_oct3_shift(int s) { return 3 * (s % 3); }
static inline int qlm_oct3_straddles(int s) { return s % 3 == 2; }
static inline int qlm_oct3_hishift(int s) { return 4 + s / 3; }

// What a row kernel needs for one call. The driver fills it once per GEMV.
typedef struct {
    const qlm_qmatrix *m;
    const float *xs;   // x in STORED column order (x[perm[j]]), zero-padded to cols_pad floats
    int cols_pad;      // cols rounded up to a multiple of QLM_SUPERBLOCK
    int nsb;           // superblocks per row (cols_pad / 64)
    size_t rb;         // bytes of codes per row (qlm_row_bytes)
    int n_groups;      // affine: groups per row; otherwise 1
    int gchunks;       // affine: 16-column chunks per group (group_size / 16); 0 when one group
                       // covers the whole (padded) row
    // Integer-activation kernels only (qlm_qgemv_vnni.c), filled by qlm_act_i16_prepare:
    const int8_t *xh, *xl;  // [cols_pad] xs quantised per segment: xi = 128·xh + xl
    const float *xd;        // [cols_pad / seg] segment scales: x̂ = xd · xi
    const float *gsum;      // [n_groups] Σ x̂ over each group (zero-point term)
    const int32_t *seggroup; // [segments] group of each activation segment (groups of 64·k columns)
    const int *isum;         // [segments] Σ xi over each activation segment
    const int16_t *x16;      // [cols_pad] xi = 128·xh + xl (AVX2 kernels for weight bytes up to 255)
    const int32_t *sbgroup;  // [nsb] group of each superblock (AVX-512 2-bit kernels)
    const int32_t *sbseg;    // [nsb] activation segment of each superblock (likewise)
} qlm_qctx;

// Computes the dense part y[r] = W_stored[r] · xs for r in [r0, r1) (outliers are added by the
// driver). r0 is a multiple of 4; a row's result must not depend on r0/r1 (bit-identical across
// thread partitions).
typedef void (*qlm_qrows_fn)(const qlm_qctx *c, float *y, int r0, int r1);

// Per-ISA kernel selection; NULL when the path has no kernel for this matrix (the driver then
// uses the portable scalar kernel). The SIMD kernels require n_groups == 1 or group_size % 16 == 0.
qlm_qrows_fn qlm_qrows_pick_avx512(const qlm_qmatrix *m);
qlm_qrows_fn qlm_qrows_pick_avx2(const qlm_qmatrix *m);
qlm_qrows_fn qlm_qrows_pick_neon(const qlm_qmatrix *m);
#if defined(__aarch64__)
int qlm_cpu_has_neon_dotprod(void);
qlm_qrows_fn qlm_qrows_pick_neon_i16(const qlm_qmatrix *m);  // NULL: no integer kernel for this matrix
#endif

// Prefill dequantisation of one stored row r into out[cols] (STORED column order, no outliers),
// bit-identical to the scalar dequantisation. NULL when the path has none for this matrix
// (affine with several groups whose size is not a multiple of 16): the scalar code is used.
typedef void (*qlm_dqrow_fn)(const qlm_qmatrix *m, int r, float *out);
qlm_dqrow_fn qlm_dqrow_pick_avx512(const qlm_qmatrix *m);
qlm_dqrow_fn qlm_dqrow_pick_avx2(const qlm_qmatrix *m);

// Integer activations (qlm_qgemv_vnni.c; x86 only).
int qlm_cpu_has_vnni_gfni(void);
qlm_qrows_fn qlm_qrows_pick_vnni(const qlm_qmatrix *m);  // NULL: no integer kernel for this matrix
int qlm_act_i16_segment(const qlm_qmatrix *m);           // 128, 64 or 32 columns per activation scale
// The prefill GEMM with integer activations (qlm_qgemm_vnni.c).
int qlm_qgemm_i16_vnni_supported(const qlm_qmatrix *m);
void qlm_qgemm_i16_vnni(const qlm_qmatrix *m, const float *X, float *Y, int T, float beta);
void qlm_act_i16_prepare_avx512(const float *xs, int cols_pad, int seg, int8_t *xh, int8_t *xl, float *d, int *isum);
// Activation byte order the AVX-512 integer kernel for m expects: 1 = stored order, 2 = pairs of
// superblocks swizzled (qlm_act_i16_swizzle), 4 = quads of superblocks swizzled.
int qlm_vnni_act_blocks(const qlm_qmatrix *m);
// Reorders xh or xl in place for the AVX-512 pair (k = 2) and quad (k = 4) kernels; the layouts
// are described at the definition (qlm_quant.c).
void qlm_act_i16_swizzle(int8_t *x, int nsb, int k);
// The AVX2 integer kernels (qlm_qgemv_avx2i.c): affine 2/3/4/8-bit and LUT, same activations.
int qlm_cpu_has_avx2_int(void);
qlm_qrows_fn qlm_qrows_pick_avx2i(const qlm_qmatrix *m);  // NULL: no integer kernel for this matrix
void qlm_act_i16_prepare_avx2(const float *xs, int cols_pad, int seg, int8_t *xh, int8_t *xl, float *d, int *isum);

// Bytes of one 64-weight superblock for `bits` (2 → 16, 3 → 24, 4 → 32, 8 → 64), 0 if unsupported.
static inline int qlm_sb_bytes(int bits) {
    switch (bits) {
    case 2: return 16;
    case 3: return 24;
    case 4: return 32;
    case 8: return 64;
    default: return 0;
    }
}

// Columns rounded up to whole superblocks: every kernel's row length.
static inline int qlm_cols_pad(int cols) { return (cols + QLM_SUPERBLOCK - 1) / QLM_SUPERBLOCK * QLM_SUPERBLOCK; }

// x in STORED column order (x[perm[j]]), zero-padded to cols_pad: xs[cols_pad].
static inline void qlm_x_stored(const qlm_qmatrix *m, const float *x, int cols_pad, float *xs) {
    if (m->perm)
        for (int j = 0; j < m->cols; j++) xs[j] = x[m->perm[j]];
    else
        for (int j = 0; j < m->cols; j++) xs[j] = x[j];
    for (int j = m->cols; j < cols_pad; j++) xs[j] = 0.0f;
}

// The affine group holding activation segment k (segments of `seg` columns; the last group also
// covers the padding). One group per row (and LUT): 0.
static inline int qlm_segment_group(const qlm_qmatrix *m, int k, int seg) {
    const int ng = qlm_n_groups(m);
    if (ng <= 1) return 0;
    const int g = (int)((long long)k * seg / m->group_size);
    return g < ng - 1 ? g : ng - 1;
}

// Row r of a LUT matrix as f32 values, 16 entries: out[e] = s·(lut[e mod 2^bits] − z) (2- and
// 3-bit codebooks repeat). Every path builds its tables from this, so all agree bit for bit.
static inline void qlm_lut_row_values(const qlm_qmatrix *m, int r, float out[16]) {
    const int n = 1 << m->bits;
    const uint8_t *l = m->lut + (size_t)r * (size_t)n;
    const float s = qlm_f16_to_f32(m->scales[r]), z = qlm_f16_to_f32(m->zeros[r]);
    for (int e = 0; e < 16; e++) out[e] = s * ((float)l[e & (n - 1)] - z);
}

// Row r's codebook bytes as a 16-entry table (2- and 3-bit codebooks repeat), for byte lookups.
static inline void qlm_lut_row_bytes(const qlm_qmatrix *m, int r, uint8_t out[16]) {
    const int n = 1 << m->bits;
    const uint8_t *l = m->lut + (size_t)r * (size_t)n;
    for (int e = 0; e < 16; e++) out[e] = l[e & (n - 1)];
}

// The integer kernels' zero-point term of row r: Σ_g s_g · z_g · gsum_g (gsum: Σ x̂ per group).
static inline float qlm_i16_zero_term(const qlm_qctx *c, int r) {
    const qlm_qmatrix *m = c->m;
    const int ng = c->n_groups;
    const uint16_t *sc = m->scales + (size_t)r * (size_t)ng, *zc = m->zeros + (size_t)r * (size_t)ng;
    float z = 0.0f;
    for (int g = 0; g < ng; g++) z += qlm_f16_to_f32(sc[g]) * qlm_f16_to_f32(zc[g]) * c->gsum[g];
    return z;
}

#endif
