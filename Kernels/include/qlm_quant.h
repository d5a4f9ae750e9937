// Packed low-bit weight formats and their kernels.
//
// A packed matrix W [rows, cols] stores each row as `codes` in superblocks of 64 weights (the row
// is zero-padded to a multiple of 64 columns), plus per-group dequantization parameters:
//   affine: w = scale_g * (q - zero_g)          q in [0, 2^bits), scale/zero f16, per group of G cols
//   lut:    w = scale_r * (lut_r[q] - zero_r)   one 2^bits-entry codebook per row, its entries
//                                               bytes on the row's own 8-bit affine grid (f16 scale/zero)
//   f16:    w = half float                      dense f16 (no codes; used for the output head)
// plus an optional sparse f32-exact residual (outliers, CSR) added in the same pass, and an
// optional column permutation (act-order): the matrix is stored with columns in `perm` order, so
// y = W · x is computed as W_stored · x[perm] — x is gathered once per call, never per element.
//
// Superblock layouts (64 weights; "w[k]" = weight k of the superblock, codes unsigned):
//   bits 2: 16 bytes. byte i (0..15): bits 2k..2k+1 hold w[i + 16k], k = 0..3.
//   bits 3: 24 bytes per superblock, and each row's superblocks in octets (code layout 3):
//           superblocks 8k .. 8k+7 (while all eight exist) share 192 bytes, three 64-byte vectors
//           V0, V1, V2 whose byte j packs weight j of all eight (c_s = w[j] of superblock 8k + s):
//             V0[j] = c_0 | c_1 << 3 | (c_2 & 3) << 6
//             V1[j] = c_3 | c_4 << 3 | (c_5 & 3) << 6
//             V2[j] = c_6 | c_7 << 3 | (c_2 >> 2) << 6 | (c_5 >> 2) << 7
//           so one load of each vector and 1-4 shift/mask ops give 64 weights (17 ops per 512 weights
//           on AVX-512). The last nsb mod 8 superblocks of a row are single 24-byte superblocks:
//           bytes 0..15: the low 2 bits, laid out as for bits 2; bytes 16..23: the high bits as one
//           little-endian 64-bit lane mask, bit j = hi(w[j]). Rows take the same bytes either way.
//           Older files: layout 2 (2026-11-22 .. 2026-12-04) stored every superblock in the
//           single form; layout 1 (before) had byte 16+i, bit k = hi(w[i + 16k]), bit 4+k =
//           hi(w[i + 8 + 16k]). qlm_codes_from_layout converts both.
//   bits 4: 32 bytes. byte i (0..31): low nibble = w[i], high nibble = w[i + 32].
//   bits 8: 64 bytes. byte i = w[i].
// These layouts let a 16-lane SIMD register take 16 consecutive weights with one zero-extending
// load plus shifts and masks; 3-bit is dense (3 bits/weight), not padded to 4.
//
// Why LUT entries are bytes on a per-row grid rather than free f16 values: the integer-activation
// kernel then maps codes to entries with one byte shuffle per 64 weights and multiplies them with
// vpdpbusd exactly as for affine 8-bit, so LUT decodes as fast as affine. The cost in accuracy is
// small: snapping a codebook to 256 levels moves each entry by at most range/510, against
// quantization steps of range/3..range/15 (the quantizers optimise onto the snapped entries).
#ifndef QLM_QUANT_H
#define QLM_QUANT_H

#include <stddef.h>
#include <stdint.h>
#include "qlm_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

#define QLM_SUPERBLOCK 64

typedef enum {
    QLM_FMT_AFFINE = 0,
    QLM_FMT_LUT = 1,
    QLM_FMT_F16 = 2,
} qlm_format;

// A packed matrix. Pointers may point into a memory-mapped file; nothing is owned.
typedef struct {
    int32_t rows, cols;
    int32_t format;             // qlm_format
    int32_t bits;               // 2, 3, 4, 8 (affine); 2, 3, 4 (lut); 16 (f16)
    int32_t group_size;         // affine: 32, 64, 128, or == cols (one group per row); lut/f16: cols
    const uint8_t *codes;       // [rows, qlm_row_bytes(bits, cols)]; f16: [rows, cols] uint16 halves
    const uint16_t *scales;     // affine: [rows, n_groups] f16; lut: [rows] f16
    const uint16_t *zeros;      // affine: [rows, n_groups] f16 (may be fractional; symmetric: 2^(bits-1)); lut: [rows] f16
    const uint8_t *lut;         // lut: [rows, 2^bits] codebook levels in [0, 255]
    const int32_t *perm;        // [cols] or NULL: stored column j holds original column perm[j]
    // Outliers (CSR over stored rows, original column indices), added exactly: y_r += Σ val·x[col].
    int32_t n_outliers;
    const int32_t *out_rowptr;  // [rows + 1] or NULL when n_outliers == 0
    const uint16_t *out_col;    // [n_outliers] original column index (cols <= 65535)
    const float *out_val;       // [n_outliers]
} qlm_qmatrix;

// Bytes of packed codes per row (superblock-padded).
size_t qlm_row_bytes(int bits, int cols);
int qlm_n_groups(const qlm_qmatrix *m);
// Exact storage in bits (codes incl. padding, scales, zeros, LUT, outliers, permutation) / rows·cols.
double qlm_bits_per_weight(const qlm_qmatrix *m);
size_t qlm_storage_bytes(const qlm_qmatrix *m);

// Pack unpacked codes q[rows, cols] (one uint8 per weight, < 2^bits) into dst[rows, row_bytes].
void qlm_pack_codes(int bits, const uint8_t *q, uint8_t *dst, int rows, int cols);
// Inverse of qlm_pack_codes (exact round trip).
void qlm_unpack_codes(int bits, const uint8_t *src, uint8_t *q, int rows, int cols);
// Codes of superblock b (64 bytes, padding included) of one packed row of nsb superblocks.
void qlm_sb_codes(int bits, const uint8_t *row, int nsb, int b, uint8_t w[64]);
// The code layout version qlm_pack_codes writes (see the layouts above).
#define QLM_CODE_LAYOUT 3
// The oldest layout whose bytes equal the current ones for this width (what a file records, so a qlm
// that predates a layout change of another width still reads it): 3 for 3-bit, 2 otherwise.
int qlm_code_layout_for_bits(int bits);
// Packed codes written with code layout `layout` (1 .. QLM_CODE_LAYOUT) → the current layout (only
// 3-bit codes differ; other bit widths are copied). src and dst hold rows · qlm_row_bytes(bits, cols)
// bytes and may not overlap. Returns 0, or -1 for an unknown layout (or no memory).
int qlm_codes_from_layout(int layout, int bits, const uint8_t *src, uint8_t *dst, int rows, int cols);

// Dequantize rows [r0, r1) into out[(r1 - r0), cols] in ORIGINAL column order, outliers included.
void qlm_qmatrix_dequant_rows(const qlm_qmatrix *m, int r0, int r1, float *out);

// y[rows] = W · x[cols] on the active ISA, OpenMP over rows (never call from a parallel region).
// `scratch` holds at least qlm_qgemv_scratch_floats(m) floats (padded/permuted x, group sums).
size_t qlm_qgemv_scratch_floats(const qlm_qmatrix *m);
void qlm_qgemv(const qlm_qmatrix *m, const float *x, float *y, float *scratch);
void qlm_qgemv_isa(qlm_isa isa, const qlm_qmatrix *m, const float *x, float *y, float *scratch);
// y_k = W_k · x for n ≤ QLM_QGEMV_MULTI_MAX matrices that share the input x (decode: Q, K and V;
// gate and up), in one parallel region: one fork/join instead of n, and matrices too small to be
// split alone (K, V: below QLM_QGEMV_MIN_PARALLEL weights) still use every thread. Each y_k is
// bit-identical to qlm_qgemv(m_k, x, y_k) (row results do not depend on the partition).
// `scratch` holds at least qlm_qgemv_multi_scratch_floats(n, ms) floats.
#define QLM_QGEMV_MULTI_MAX 8
size_t qlm_qgemv_multi_scratch_floats(int n, const qlm_qmatrix *const *ms);
void qlm_qgemv_multi(int n, const qlm_qmatrix *const *ms, const float *x, float *const *ys, float *scratch);
void qlm_qgemv_multi_isa(qlm_isa isa, int n, const qlm_qmatrix *const *ms, const float *x, float *const *ys, float *scratch);
// Activation precision of the decode GEMV where an integer kernel exists (affine and LUT formats
// on AVX-512 VNNI + VBMI + GFNI, on AVX2 and on NEON with the dot product extension; f16 and the
// other paths keep f32 activations):
//   QLM_ACT_I16: x is quantised per segment of 128 values (64 / 32 for groups of 64·k / 32) to 15 bits
//                (x̂ = d·xi, d = max|x|/16383) and dotted with the codes by vpdpbusd (AVX2:
//                vpmaddubsw + vpmaddwd; NEON: sdot);
//   QLM_ACT_F32: the f32 kernels.
// Default: I16 where supported; env QLM_ACT=f32|i16 or qlm_qgemv_set_act overrides.
typedef enum { QLM_ACT_F32 = 0, QLM_ACT_I16 = 1 } qlm_act;
int qlm_act_i16_supported(void);           // some path on this CPU has integer kernels
int qlm_act_i16_supported_on(qlm_isa isa);  // `isa` has them on this CPU
qlm_act qlm_qgemv_act(void);
void qlm_qgemv_set_act(qlm_act a);
// 1 when a GEMV of m on `isa` runs an integer-activation kernel under QLM_ACT_I16 (CPU support included).
int qlm_qgemv_i16_kernel_exists_on(qlm_isa isa, const qlm_qmatrix *m);
int qlm_qgemv_i16_kernel_exists(const qlm_qmatrix *m);  // on QLM_ISA_AVX512

// The activations the I16 path multiplies W by, in ORIGINAL column order: xhat[cols] (tests).
// simd = 1: through the SIMD quantiser the kernels use (AVX-512, else AVX2; same bytes), 0: the portable twin.
void qlm_qgemv_act_i16_roundtrip(const qlm_qmatrix *m, const float *x, float *xhat, int simd);

// Scalar reference: dequantize and dot, single thread.
void qlm_qgemv_ref(const qlm_qmatrix *m, const float *x, float *y);

// Y[T, rows] = X[T, cols] · Wᵀ (+ beta·Y): dequantizes row tiles into `tile` and calls sgemm.
// `tile` holds at least qlm_qgemm_tile_floats(m) floats.
// Under QLM_ACT_I16 on the AVX-512 path of a CPU with VNNI, affine and LUT matrices take the
// integer path below instead (no tile is used then).
size_t qlm_qgemm_tile_floats(const qlm_qmatrix *m);
void qlm_qgemm(const qlm_qmatrix *m, const float *X, float *Y, int T, float beta, float *tile);

// Prefill GEMM with integer activations (qlm_qgemm_vnni.c): each token's x is quantised exactly as
// for the decode GEMV (QLM_ACT_I16 above) and multiplied with the code bytes by vpdpbusd, 32 rows ×
// 6 tokens at a time; the result equals the f32 GEMM applied to x̂ up to rounding, plus the
// outliers times the exact x.
int qlm_qgemm_i16_available(const qlm_qmatrix *m);  // this CPU has the kernel for m
// 1 when qlm_qgemm(m, ...) takes it now (activations I16, AVX-512 path active, kernel available):
// the GEMM then runs on the OpenMP threads instead of OpenBLAS's (see qlm_attention's omp_tasks).
int qlm_qgemm_uses_i16(const qlm_qmatrix *m);
// Requires qlm_qgemm_i16_available(m); OpenMP over panels of 32 rows (results do not depend on the
// thread count). Scratch is a grow-only per-thread buffer (T · cols · 2 bytes and a few KB per thread).
void qlm_qgemm_i16(const qlm_qmatrix *m, const float *X, float *Y, int T, float beta);
// Its portable twin: the same integer sums and f32 operations in the same order (bit-identical),
// single thread; for any affine or LUT matrix whose groups hold whole activation segments.
void qlm_qgemm_i16_ref(const qlm_qmatrix *m, const float *X, float *Y, int T, float beta);

// One table mapping each format to its functions (bits-independent entry points above dispatch
// through it).
typedef struct {
    qlm_format format;
    const char *name;
    void (*pack)(int bits, const uint8_t *q, uint8_t *dst, int rows, int cols);
    void (*unpack)(int bits, const uint8_t *src, uint8_t *q, int rows, int cols);
    void (*gemv)(qlm_isa isa, const qlm_qmatrix *m, const float *x, float *y, float *scratch);
    void (*dequant_rows)(const qlm_qmatrix *m, int r0, int r1, float *out);
} qlm_format_ops;
const qlm_format_ops *qlm_format_table(qlm_format f);

#ifdef __cplusplus
}
#endif
#endif
