// Packed low-bit weights (qlm_quant.h): sizes, pack/unpack, dequantisation, the scalar GEMV
// kernel and reference, the GEMV driver (x gather/padding, ISA dispatch, OpenMP over rows,
// outliers) and the prefill GEMM (dequantised row tiles + sgemm).
//
// Dequantised values are defined exactly as the kernels compute them, in f32:
//   affine: w = s * ((float)q - z)    (s, z converted from f16; one subtraction, one product)
//   lut:    w = s * ((float)lut[q] - z)  (the row's s, z from f16; lut entries are bytes)
//   f16:    w = (float)half
// Every path (scalar, AVX2, AVX-512, NEON) produces these exact weights and differs from
// "dequantize, then f32 dot" only in the order of the summation. Outliers are added after the
// dense dot product as Σ val·x[col] (original x, original column), in CSR order.
#include "qlm_quant_impl.h"
#include "qlm_omp.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#pragma STDC FP_CONTRACT OFF

// ---------------------------------------------------------------------------------------------
// Sizes
// ---------------------------------------------------------------------------------------------
static inline int valid_bits(int format, int bits) {
    switch (format) {
    case QLM_FMT_AFFINE: return bits == 2 || bits == 3 || bits == 4 || bits == 8;
    case QLM_FMT_LUT: return bits == 2 || bits == 3 || bits == 4;
    case QLM_FMT_F16: return bits == 16;
    default: return 0;
    }
}

size_t qlm_row_bytes(int bits, int cols) {
    if (cols <= 0) return 0;
    if (bits == 16) return (size_t)2 * (size_t)cols;
    const size_t nsb = ((size_t)cols + QLM_SUPERBLOCK - 1) / QLM_SUPERBLOCK;
    return nsb * (size_t)qlm_sb_bytes(bits);
}

int qlm_n_groups(const qlm_qmatrix *m) {
    if (m->format != QLM_FMT_AFFINE) return 1;
    if (m->cols <= 0) return 0;
    const int g = m->group_size > 0 && m->group_size < m->cols ? m->group_size : m->cols;
    return (m->cols + g - 1) / g;
}

// Exact storage in bits of everything the matrix stores.
static double storage_bits(const qlm_qmatrix *m) {
    const double rows = (double)m->rows, cols = (double)m->cols;
    double bits = rows * 8.0 * (double)qlm_row_bytes(m->bits, m->cols);  // codes (f16: halves)
    if (m->format == QLM_FMT_AFFINE) bits += rows * (double)qlm_n_groups(m) * 32.0;  // f16 scale + zero
    if (m->format == QLM_FMT_LUT) bits += rows * ((double)(1 << m->bits) * 8.0 + 32.0);  // byte codebook + f16 scale, zero
    if (m->n_outliers > 0) bits += (rows + 1.0) * 32.0 + (double)m->n_outliers * (16.0 + 32.0);
    if (m->perm) bits += cols * 32.0;
    return bits;
}

double qlm_bits_per_weight(const qlm_qmatrix *m) {
    if (m->rows <= 0 || m->cols <= 0) return 0.0;
    return storage_bits(m) / ((double)m->rows * (double)m->cols);
}

size_t qlm_storage_bytes(const qlm_qmatrix *m) {
    if (m->rows <= 0 || m->cols <= 0) return 0;
    return (size_t)(storage_bits(m) / 8.0);
}

// ---------------------------------------------------------------------------------------------
// Superblock pack / unpack (layouts in qlm_quant.h)
// ---------------------------------------------------------------------------------------------
static void sb_pack(int bits, const uint8_t w[64], uint8_t *d) {
    switch (bits) {
    case 2:
    case 3:
        for (int i = 0; i < 16; i++)
            d[i] = (uint8_t)((w[i] & 3) | (w[i + 16] & 3) << 2 | (w[i + 32] & 3) << 4 | (w[i + 48] & 3) << 6);
        if (bits == 3)
            for (int i = 0; i < 8; i++) {
                unsigned b = 0;
                for (int l = 0; l < 8; l++) b |= (unsigned)((w[8 * i + l] >> 2) & 1) << l;
                d[16 + i] = (uint8_t)b;  // byte i of the little-endian mask: bits 8i .. 8i+7
            }
        break;
    case 4:
        for (int i = 0; i < 32; i++) d[i] = (uint8_t)((w[i] & 15) | (w[i + 32] & 15) << 4);
        break;
    case 8:
        memcpy(d, w, 64);
        break;
    }
}

static inline void sb_unpack(int bits, const uint8_t *s, uint8_t w[64]) {
    switch (bits) {
    case 2:
    case 3:
        for (int i = 0; i < 16; i++) {
            const unsigned b = s[i];
            w[i] = b & 3;
            w[i + 16] = (b >> 2) & 3;
            w[i + 32] = (b >> 4) & 3;
            w[i + 48] = (b >> 6) & 3;
        }
        if (bits == 3)
            for (int j = 0; j < 64; j++) w[j] |= (uint8_t)(((s[16 + j / 8] >> (j % 8)) & 1) << 2);
        break;
    case 4:
        for (int i = 0; i < 32; i++) {
            w[i] = s[i] & 15;
            w[i + 32] = s[i] >> 4;
        }
        break;
    case 8:
        memcpy(w, s, 64);
        break;
    }
}

// 3-bit octets (code layout 3): eight superblocks' codes c_0..c_7 of byte lane j packed into bytes j of
// three 64-byte vectors (qlm_quant.h).
static void octet3_pack(const uint8_t *q, uint8_t *d) {  // q: 512 codes, superblock s at q + 64·s
    for (int j = 0; j < 64; j++) {
        unsigned c[8];
        for (int s = 0; s < 8; s++) c[s] = q[64 * s + j] & 7u;
        d[j] = (uint8_t)(c[0] | c[1] << 3 | (c[2] & 3) << 6);
        d[64 + j] = (uint8_t)(c[3] | c[4] << 3 | (c[5] & 3) << 6);
        d[128 + j] = (uint8_t)(c[6] | c[7] << 3 | (c[2] >> 2) << 6 | (c[5] >> 2) << 7);
    }
}

// Codes of superblock s (0..7) of the octet at o (the placement rule in qlm_quant_impl.h).
static void octet3_unpack(const uint8_t *o, int s, uint8_t w[64]) {
    const uint8_t *v = o + 64 * (s / 3);
    for (int j = 0; j < 64; j++) {
        const unsigned c = qlm_oct3_straddles(s) ? (unsigned)(v[j] >> 6) | ((unsigned)(o[128 + j] >> qlm_oct3_hishift(s)) & 4u)
                                                 : (unsigned)(v[j] >> qlm_oct3_shift(s));
        w[j] = (uint8_t)(c & 7u);
    }
}

void qlm_sb_codes(int bits, const uint8_t *row, int nsb, int b, uint8_t w[64]) {
    if (bits == 3 && qlm_sb3_in_octet(b, nsb)) octet3_unpack(row + (size_t)(b & ~7) * 24, b & 7, w);
    else sb_unpack(bits, row + (size_t)b * (size_t)qlm_sb_bytes(bits), w);
}

// One row of codes (cols bytes) into its packed form (rb bytes): 3-bit octets while whole ones remain,
// then single superblocks; padding codes are 0.
static void row_pack(int bits, const uint8_t *qr, uint8_t *dr, int cols, int nsb) {
    const int sbb = qlm_sb_bytes(bits);
    for (int b = 0; b < nsb;) {
        const int k = bits == 3 && qlm_sb3_in_octet(b, nsb) ? 8 : 1;  // superblocks in this step
        uint8_t w[512];
        const int j0 = b * 64, n = cols - j0 < 64 * k ? cols - j0 : 64 * k;
        memcpy(w, qr + j0, (size_t)n);
        memset(w + n, 0, (size_t)(64 * k - n));
        if (k == 8) octet3_pack(w, dr + (size_t)b * 24);
        else sb_pack(bits, w, dr + (size_t)b * (size_t)sbb);
        b += k;
    }
}

void qlm_pack_codes(int bits, const uint8_t *q, uint8_t *dst, int rows, int cols) {
    const int sbb = qlm_sb_bytes(bits);
    if (sbb == 0 || rows <= 0 || cols <= 0) return;
    const size_t rb = qlm_row_bytes(bits, cols);
    const int nsb = (int)(rb / (size_t)sbb);
    for (int r = 0; r < rows; r++) row_pack(bits, q + (size_t)r * (size_t)cols, dst + (size_t)r * rb, cols, nsb);
}

// One packed row back to codes; `layout` is the code layout it was written with (1..3).
static void row_unpack(int layout, int bits, const uint8_t *sr, uint8_t *qr, int cols, int nsb) {
    for (int b = 0; b < nsb; b++) {
        uint8_t w[64];
        if (bits == 3 && layout == 1) {  // layout 1: byte 16 + i, bit k = hi(w[i + 16k]), bit 4 + k = hi(w[i + 8 + 16k])
            const uint8_t *p = sr + (size_t)b * 24;
            sb_unpack(2, p, w);
            for (int j = 0; j < 64; j++) {
                const int i = j % 8, k = j / 16, hi4 = (j % 16) / 8;
                w[j] |= (uint8_t)(((p[16 + i] >> (k + 4 * hi4)) & 1) << 2);
            }
        } else if (bits == 3 && layout == 2) {
            sb_unpack(3, sr + (size_t)b * 24, w);
        } else {
            qlm_sb_codes(bits, sr, nsb, b, w);
        }
        const int j0 = b * 64, n = cols - j0 < 64 ? cols - j0 : 64;
        memcpy(qr + j0, w, (size_t)n);
    }
}

void qlm_unpack_codes(int bits, const uint8_t *src, uint8_t *q, int rows, int cols) {
    const int sbb = qlm_sb_bytes(bits);
    if (sbb == 0 || rows <= 0 || cols <= 0) return;
    const size_t rb = qlm_row_bytes(bits, cols);
    const int nsb = (int)(rb / (size_t)sbb);
    for (int r = 0; r < rows; r++) row_unpack(QLM_CODE_LAYOUT, bits, src + (size_t)r * rb, q + (size_t)r * (size_t)cols, cols, nsb);
}

int qlm_code_layout_for_bits(int bits) { return bits == 3 ? QLM_CODE_LAYOUT : 2; }

int qlm_codes_from_layout(int layout, int bits, const uint8_t *src, uint8_t *dst, int rows, int cols) {
    if (layout < 1 || layout > QLM_CODE_LAYOUT) return -1;
    const size_t rb = qlm_row_bytes(bits, cols);
    if (rows <= 0 || rb == 0) return 0;
    if (bits != 3 || layout == QLM_CODE_LAYOUT) {  // only 3-bit codes changed between layouts
        memcpy(dst, src, rb * (size_t)rows);
        return 0;
    }
    const int nsb = (int)(rb / 24), cols_pad = nsb * 64;
    uint8_t *q = malloc((size_t)cols_pad);
    if (!q) return -1;
    for (int r = 0; r < rows; r++) {  // codes of the padding too (zeros in every layout), so the round trip is exact
        row_unpack(layout, 3, src + (size_t)r * rb, q, cols_pad, nsb);
        row_pack(3, q, dst + (size_t)r * rb, cols_pad, nsb);
    }
    free(q);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Dequantisation (stored order, then permuted into original order)
// ---------------------------------------------------------------------------------------------
static inline int group_cols(const qlm_qmatrix *m) {
    return m->group_size > 0 && m->group_size < m->cols ? m->group_size : m->cols;
}

// One stored row as f32 weights in STORED column order: out[cols].
static void dequant_row_stored(const qlm_qmatrix *m, int r, float *out) {
    const int cols = m->cols;
    if (m->format == QLM_FMT_F16) {
        const uint16_t *h = (const uint16_t *)(const void *)m->codes + (size_t)r * (size_t)cols;
        for (int j = 0; j < cols; j++) out[j] = qlm_f16_to_f32(h[j]);
        return;
    }
    const int bits = m->bits, sbb = qlm_sb_bytes(bits);
    const size_t rb = qlm_row_bytes(bits, cols);
    const uint8_t *cr = m->codes + (size_t)r * rb;
    const int nsb = (int)(rb / (size_t)sbb);
    float tbl[256];
    int gsz = 0, ng = 1, g = 0, gend = 0;
    const uint16_t *sr = NULL, *zr = NULL;
    if (m->format == QLM_FMT_LUT) {
        qlm_lut_row_values(m, r, tbl);
        gend = cols;
    } else {
        gsz = group_cols(m);
        ng = qlm_n_groups(m);
        sr = m->scales + (size_t)r * (size_t)ng;
        zr = m->zeros + (size_t)r * (size_t)ng;
        g = -1;
    }
    for (int b = 0; b < nsb; b++) {
        uint8_t q[64];
        qlm_sb_codes(bits, cr, nsb, b, q);
        const int j0 = b * 64, n = cols - j0 < 64 ? cols - j0 : 64;
        for (int i = 0; i < n; i++) {
            const int j = j0 + i;
            if (j >= gend) {  // next affine group: rebuild the value table
                g++;
                gend = g + 1 < ng ? (g + 1) * gsz : cols;
                const float s = qlm_f16_to_f32(sr[g]), z = qlm_f16_to_f32(zr[g]);
                const int nv = 1 << bits;
                for (int v = 0; v < nv; v++) tbl[v] = s * ((float)v - z);
            }
            out[j] = tbl[q[i]];
        }
    }
}

// The SIMD row dequantiser of `isa` for this matrix, or NULL (scalar dequant_row_stored).
static qlm_dqrow_fn pick_dqrow(qlm_isa isa, const qlm_qmatrix *m) {
    switch (isa) {
#if defined(__x86_64__) || defined(__i386__)
    case QLM_ISA_AVX512: return qlm_dqrow_pick_avx512(m);
    case QLM_ISA_AVX2: return qlm_dqrow_pick_avx2(m);
#endif
    default: (void)m; return NULL;
    }
}

// Rows [r0, r1) in original column order with outliers; `dq` (NULL: scalar) decodes a stored row.
// Every path writes the same bits: the SIMD decoders compute exactly the scalar weights, and the
// permutation and outliers are applied here, identically for all.
static void dequant_rows_with(qlm_dqrow_fn dq, const qlm_qmatrix *m, int r0, int r1, float *out) {
    const int cols = m->cols;
    if (cols <= 0 || r1 <= r0) return;
    if (!valid_bits(m->format, m->bits)) {
        for (size_t i = 0; i < (size_t)(r1 - r0) * (size_t)cols; i++) out[i] = NAN;
        return;
    }
    float *tmp = m->perm ? (float *)malloc(sizeof(float) * (size_t)cols) : NULL;
    for (int r = r0; r < r1; r++) {
        float *o = out + (size_t)(r - r0) * (size_t)cols;
        float *d = m->perm && tmp ? tmp : o;
        if (dq) dq(m, r, d);
        else dequant_row_stored(m, r, d);
        if (d == tmp) {
            const int32_t *pm = m->perm;
            for (int j = 0; j < cols; j++) o[pm[j]] = tmp[j];
        }
        if (m->n_outliers > 0)
            for (int e = m->out_rowptr[r]; e < m->out_rowptr[r + 1]; e++) o[m->out_col[e]] += m->out_val[e];
    }
    free(tmp);
}

static void dequant_rows_any(const qlm_qmatrix *m, int r0, int r1, float *out) {
    dequant_rows_with(NULL, m, r0, r1, out);
}

// Active ISA (prefill): single-threaded on purpose, the caller owns the parallelism.
static void dequant_rows_active(const qlm_qmatrix *m, int r0, int r1, float *out) {
    const qlm_dqrow_fn dq = valid_bits(m->format, m->bits) ? pick_dqrow(qlm_isa_active(), m) : NULL;
    dequant_rows_with(dq, m, r0, r1, out);
}

static void dequant_rows_affine(const qlm_qmatrix *m, int r0, int r1, float *out) { dequant_rows_active(m, r0, r1, out); }
static void dequant_rows_lut(const qlm_qmatrix *m, int r0, int r1, float *out) { dequant_rows_active(m, r0, r1, out); }
static void dequant_rows_f16(const qlm_qmatrix *m, int r0, int r1, float *out) { dequant_rows_active(m, r0, r1, out); }

void qlm_qmatrix_dequant_rows(const qlm_qmatrix *m, int r0, int r1, float *out) {
    const qlm_format_ops *ops = qlm_format_table((qlm_format)m->format);
    if (ops) ops->dequant_rows(m, r0, r1, out);
    else dequant_rows_any(m, r0, r1, out);
}

// ---------------------------------------------------------------------------------------------
// Reference GEMV: dequantise each row (original order, outliers included), plain f32 dot.
// ---------------------------------------------------------------------------------------------
void qlm_qgemv_ref(const qlm_qmatrix *m, const float *x, float *y) {
    const int rows = m->rows, cols = m->cols;
    if (rows <= 0) return;
    if (cols <= 0) {
        for (int r = 0; r < rows; r++) y[r] = 0.0f;
        return;
    }
    float *w = (float *)malloc(sizeof(float) * (size_t)cols);
    if (!w) return;
    for (int r = 0; r < rows; r++) {
        dequant_rows_any(m, r, r + 1, w);
        float s = 0.0f;
        for (int j = 0; j < cols; j++) s += w[j] * x[j];
        y[r] = s;
    }
    free(w);
}

// ---------------------------------------------------------------------------------------------
// Portable scalar kernel: stored order, padded xs, 8 partial sums per row.
// ---------------------------------------------------------------------------------------------
static void qrows_scalar(const qlm_qctx *c, float *y, int r0, int r1) {
    const qlm_qmatrix *m = c->m;
    const float *xs = c->xs;
    const int cols = m->cols;
    for (int r = r0; r < r1; r++) {
        float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        if (m->format == QLM_FMT_F16) {
            const uint16_t *h = (const uint16_t *)(const void *)m->codes + (size_t)r * (size_t)cols;
            int j = 0;
            for (; j + 8 <= cols; j += 8)
                for (int k = 0; k < 8; k++) s[k] += qlm_f16_to_f32(h[j + k]) * xs[j + k];
            for (int k = 0; j < cols; j++, k++) s[k] += qlm_f16_to_f32(h[j]) * xs[j];
        } else {
            float w[64];
            const int bits = m->bits;
            const uint8_t *cr = m->codes + (size_t)r * c->rb;
            float tbl[256];
            const int nv = 1 << bits;
            int g = -1, gend = 0;
            const int ng = c->n_groups, gcols = group_cols(m);
            if (m->format == QLM_FMT_LUT) {
                qlm_lut_row_values(m, r, tbl);
                gend = c->cols_pad;
            }
            for (int b = 0; b < c->nsb; b++) {
                uint8_t q[64];
                qlm_sb_codes(bits, cr, c->nsb, b, q);
                for (int i = 0; i < 64; i++) {
                    const int j = b * 64 + i;
                    if (j >= gend) {  // next affine group (the last one also covers the padding)
                        g++;
                        gend = g + 1 < ng ? (g + 1) * gcols : c->cols_pad;
                        const float sc = qlm_f16_to_f32(m->scales[(size_t)r * (size_t)ng + (size_t)g]);
                        const float z = qlm_f16_to_f32(m->zeros[(size_t)r * (size_t)ng + (size_t)g]);
                        for (int v = 0; v < nv; v++) tbl[v] = sc * ((float)v - z);
                    }
                    w[i] = tbl[q[i]];
                }
                const float *xb = xs + (size_t)b * 64;
                for (int i = 0; i < 64; i += 8)
                    for (int k = 0; k < 8; k++) s[k] += w[i + k] * xb[i + k];
            }
        }
        y[r] = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
    }
}

// ---------------------------------------------------------------------------------------------
// GEMV driver
// ---------------------------------------------------------------------------------------------

// Scratch: [xs: cols_pad] then, for the integer path, [xh, xl: cols_pad bytes each]
// [d: cols_pad/32] [isum: cols_pad/32 ints] [gsum: n_groups] [seggroup: cols_pad/32 ints] (at most
// cols_pad/32 activation segments) [x16: cols_pad int16] [sbgroup, sbseg: cols_pad/64 ints each].
size_t qlm_qgemv_scratch_floats(const qlm_qmatrix *m) {
    if (m->cols <= 0) return 0;
    const size_t cp = (size_t)qlm_cols_pad(m->cols);
    return cp + cp / 2 + cp / 16 + (size_t)qlm_n_groups(m) + cp / 32 + cp / 2 + cp / 32;
}

// ---------------------------------------------------------------------------------------------
// Integer activations (see qlm_qgemv_vnni.c)
// ---------------------------------------------------------------------------------------------
int qlm_act_i16_supported_on(qlm_isa isa) {
#if defined(__x86_64__) || defined(__i386__)
    if (isa == QLM_ISA_AVX512) return qlm_isa_supported(isa) && qlm_cpu_has_vnni_gfni();
    if (isa == QLM_ISA_AVX2) return qlm_isa_supported(isa) && qlm_cpu_has_avx2_int();
#endif
#if defined(__aarch64__)
    if (isa == QLM_ISA_NEON) return qlm_isa_supported(isa) && qlm_cpu_has_neon_dotprod();
#endif
    (void)isa;
    return 0;
}

int qlm_act_i16_supported(void) {
#if defined(__x86_64__) || defined(__i386__)
    return qlm_cpu_has_vnni_gfni() || qlm_cpu_has_avx2_int();
#elif defined(__aarch64__)
    return qlm_cpu_has_neon_dotprod();
#else
    return 0;
#endif
}

// Segments of 128 values where a group holds whole segments of 128 (or the row is one group),
// else 64 (groups of 64·k), else 32 (groups of 32). The last segment of a row may be short.
int qlm_act_i16_segment(const qlm_qmatrix *m) {
    if (m->format == QLM_FMT_LUT) return 256;
    if (qlm_n_groups(m) <= 1) return 128;
    return m->group_size % 128 == 0 ? 128 : m->group_size % 64 == 0 ? 64 : 32;
}

static _Atomic int g_act = -1;  // -1: not yet resolved
static pthread_once_t g_act_once = PTHREAD_ONCE_INIT;

static void act_init_from_env(void) {
    int a = qlm_act_i16_supported() ? QLM_ACT_I16 : QLM_ACT_F32;
    const char *env = getenv("QLM_ACT");
    if (env && *env) {
        if (strcmp(env, "f32") == 0) a = QLM_ACT_F32;
        else if (strcmp(env, "i16") == 0) {
            if (!qlm_act_i16_supported()) fprintf(stderr, "qlm: QLM_ACT=i16 needs AVX2, AVX-512 VNNI + VBMI + GFNI or NEON dot product; using f32\n");
            else a = QLM_ACT_I16;
        } else fprintf(stderr, "qlm: unknown QLM_ACT=%s (f32|i16); using %s\n", env, a == QLM_ACT_I16 ? "i16" : "f32");
    }
    int expected = -1;  // a qlm_qgemv_set_act that ran first wins
    atomic_compare_exchange_strong(&g_act, &expected, a);
}

qlm_act qlm_qgemv_act(void) {
    int v = atomic_load_explicit(&g_act, memory_order_relaxed);
    if (v >= 0) return (qlm_act)v;
    pthread_once(&g_act_once, act_init_from_env);
    return (qlm_act)atomic_load(&g_act);
}

void qlm_qgemv_set_act(qlm_act a) {
    pthread_once(&g_act_once, act_init_from_env);
    atomic_store(&g_act, (a == QLM_ACT_I16 && qlm_act_i16_supported()) ? QLM_ACT_I16 : QLM_ACT_F32);
}

// Portable twin of qlm_act_i16_prepare_avx512 (identical bytes): per segment of `seg` values,
// d = max|x| / 16383, xi = round-to-nearest-even(x · (16383 / max|x|)), xh = xi >> 7, xl = xi & 127.
// The last segment may be shorter (cols_pad - s0, a multiple of 32).
static void act_i16_prepare_ref(const float *xs, int cols_pad, int seg_full, int8_t *xh, int8_t *xl, float *d, int *isum) {
    for (int s0 = 0, k = 0; s0 < cols_pad; s0 += seg_full, k++) {
        const int seg = cols_pad - s0 < seg_full ? cols_pad - s0 : seg_full;
        float mx = 0.0f;
        int bad = 0;
        for (int j = 0; j < seg; j++) {
            const float a = fabsf(xs[s0 + j]);
            if (!(a < INFINITY)) bad = 1;
            else if (a > mx) mx = a;
        }
        if (bad || mx == 0.0f) {
            d[k] = bad ? NAN : 0.0f;
            memset(xh + s0, 0, (size_t)seg);
            memset(xl + s0, 0, (size_t)seg);
            isum[k] = 0;
            continue;
        }
        const float inv = 16383.0f / mx;
        d[k] = mx / 16383.0f;
        int tot = 0;
        for (int j = 0; j < seg; j++) {
            const int xi = (int)nearbyintf(xs[s0 + j] * inv);
            tot += xi;
            xh[s0 + j] = (int8_t)(xi >> 7);
            xl[s0 + j] = (int8_t)(xi & 127);
        }
        isum[k] = tot;
    }
}

// k = 2: within each whole pair of 64-value superblocks (2p, 2p + 1) of a row, swaps the middle
// quarters: [A0..31 A32..63 B0..31 B32..63] -> [A0..31 B0..31 A32..63 B32..63], the lane order in
// which the AVX-512 4-bit kernels unpack a pair's codes (low nibbles of both, then high); a row's
// odd last superblock stays as it is.
// k = 4: within each whole quad of superblocks, 64-byte block u holds columns 16u..16u+15 of each
// of the four (the 2-bit fields u of the quad's code bytes); the last 1-3 superblocks of a row stay.
void qlm_act_i16_swizzle(int8_t *x, int nsb, int k) {
    int8_t t[256];
    if (k == 2) {
        for (int p = 0; p + 1 < nsb; p += 2) {
            int8_t *q = x + (size_t)p * 64;
            memcpy(t, q + 32, 32);
            memcpy(q + 32, q + 64, 32);
            memcpy(q + 64, t, 32);
        }
        return;
    }
    for (int p = 0; p + 3 < nsb; p += 4) {
        int8_t *q = x + (size_t)p * 64;
        memcpy(t, q, 256);
        for (int u = 0; u < 4; u++)
            for (int s = 0; s < 4; s++) memcpy(q + 64 * u + 16 * s, t + 64 * s + 16 * u, 16);
    }
}

// Fills c->xh/xl/xd/isum/gsum/seggroup from c->xs, using scratch past the first cols_pad floats; also
// c->x16 when want_x16, and with blocks > 1 swizzles xh/xl in pairs or quads of superblocks
// (qlm_act_i16_swizzle; quads also fill c->sbgroup/sbseg).
static void act_i16_prepare(qlm_qctx *c, float *scratch, int use_simd, int want_x16, int blocks) {
    const qlm_qmatrix *m = c->m;
    const int cp = c->cols_pad, seg = qlm_act_i16_segment(m), nseg = (cp + seg - 1) / seg, ng = c->n_groups;
    int8_t *xh = (int8_t *)(void *)(scratch + cp);
    int8_t *xl = xh + cp;
    float *d = scratch + cp + cp / 2;
    int *isum = (int *)(void *)(d + cp / 32);
    float *gsum = (float *)(void *)(isum + cp / 32);
    int32_t *sbg = (int32_t *)(void *)(gsum + ng);
#if defined(__x86_64__) || defined(__i386__)
    if (use_simd && qlm_cpu_has_vnni_gfni()) qlm_act_i16_prepare_avx512(c->xs, cp, seg, xh, xl, d, isum);
    else if (use_simd && qlm_cpu_has_avx2_int()) qlm_act_i16_prepare_avx2(c->xs, cp, seg, xh, xl, d, isum);
    else
#endif
        act_i16_prepare_ref(c->xs, cp, seg, xh, xl, d, isum);
    (void)use_simd;
    const int gsz = group_cols(m);
    for (int g = 0; g < ng; g++) gsum[g] = 0.0f;
    for (int k = 0; k < nseg; k++) gsum[qlm_segment_group(m, k, seg)] += d[k] * (float)isum[k];
    const int kseg = gsz / seg;  // segments per group (groups of 64·k)
    for (int k = 0; k < nseg; k++) sbg[k] = ng > 1 && kseg > 0 ? k / kseg : 0;
    if (want_x16) {  // the AVX2 kernels for weight bytes up to 255
        int16_t *x16 = (int16_t *)(void *)(sbg + cp / 32);
        for (int j = 0; j < cp; j++) x16[j] = (int16_t)(128 * (int)xh[j] + (int)xl[j]);
        c->x16 = x16;
    }
    if (blocks > 1) {  // the AVX-512 4-bit and 2-bit kernels (qlm_qgemv_vnni.c)
        qlm_act_i16_swizzle(xh, c->nsb, blocks);
        qlm_act_i16_swizzle(xl, c->nsb, blocks);
    }
    if (blocks == 4) {
        int32_t *sg = (int32_t *)(void *)((int16_t *)(void *)(sbg + cp / 32) + cp), *ss = sg + c->nsb;
        for (int b = 0; b < c->nsb; b++) {
            int g = ng > 1 ? (int)((long long)b * 64 / gsz) : 0;
            sg[b] = g > ng - 1 ? ng - 1 : g;
            ss[b] = b * 64 / seg;
        }
        c->sbgroup = sg;
        c->sbseg = ss;
    }
    c->xh = xh;
    c->xl = xl;
    c->xd = d;
    c->isum = isum;
    c->gsum = gsum;
    c->seggroup = sbg;
}

// The integer kernel a GEMV on `isa` runs with QLM_ACT_I16, or NULL (f32 kernels).
static qlm_qrows_fn pick_i16_kernel(qlm_isa isa, const qlm_qmatrix *m) {
    if (m->rows <= 0 || m->cols <= 0 || !valid_bits(m->format, m->bits)) return NULL;
#if defined(__x86_64__) || defined(__i386__)
    if (isa == QLM_ISA_AVX512 && qlm_cpu_has_vnni_gfni()) return qlm_qrows_pick_vnni(m);
    if (isa == QLM_ISA_AVX2) return qlm_qrows_pick_avx2i(m);
#endif
#if defined(__aarch64__)
    if (isa == QLM_ISA_NEON) return qlm_qrows_pick_neon_i16(m);
#endif
    (void)isa;
    return NULL;
}

// Superblocks per swizzle block of the activations the integer kernel of `isa` expects (1: none).
static int act_i16_blocks(qlm_isa isa, const qlm_qmatrix *m) {
#if defined(__x86_64__) || defined(__i386__)
    if (isa == QLM_ISA_AVX512) return qlm_vnni_act_blocks(m);
#endif
    (void)isa;
    (void)m;
    return 1;
}

int qlm_qgemv_i16_kernel_exists_on(qlm_isa isa, const qlm_qmatrix *m) {
    return qlm_isa_supported(isa) && pick_i16_kernel(isa, m) != NULL;
}

int qlm_qgemv_i16_kernel_exists(const qlm_qmatrix *m) { return qlm_qgemv_i16_kernel_exists_on(QLM_ISA_AVX512, m); }

void qlm_qgemv_act_i16_roundtrip(const qlm_qmatrix *m, const float *x, float *xhat, int simd) {
    const int cols = m->cols;
    if (cols <= 0) return;
    float *scratch = malloc(sizeof(float) * (qlm_qgemv_scratch_floats(m) + 1));
    if (!scratch) return;
    qlm_qctx c;
    memset(&c, 0, sizeof c);
    c.m = m;
    c.cols_pad = qlm_cols_pad(cols);
    c.nsb = c.cols_pad / QLM_SUPERBLOCK;
    c.n_groups = qlm_n_groups(m);
    qlm_x_stored(m, x, c.cols_pad, scratch);
    c.xs = scratch;
    act_i16_prepare(&c, scratch, simd && qlm_act_i16_supported(), 0, 1);
    const int seg = qlm_act_i16_segment(m);
    for (int j = 0; j < cols; j++) {
        const float v = c.xd[j / seg] * (float)(128 * (int)c.xh[j] + (int)c.xl[j]);
        xhat[m->perm ? m->perm[j] : j] = v;
    }
    free(scratch);
}

static qlm_qrows_fn pick_kernel(qlm_isa isa, const qlm_qmatrix *m) {
    qlm_qrows_fn fn = NULL;
    switch (isa) {
#if defined(__x86_64__) || defined(__i386__)
    case QLM_ISA_AVX512: fn = qlm_qrows_pick_avx512(m); break;
    case QLM_ISA_AVX2: fn = qlm_qrows_pick_avx2(m); break;
#endif
#if defined(__aarch64__)
    case QLM_ISA_NEON: fn = qlm_qrows_pick_neon(m); break;
#endif
    default: break;
    }
    return fn ? fn : qrows_scalar;
}

static void add_outliers(const qlm_qmatrix *m, const float *x, float *y, int r0, int r1) {
    if (m->n_outliers <= 0) return;
    for (int r = r0; r < r1; r++) {
        float s = y[r];
        for (int e = m->out_rowptr[r]; e < m->out_rowptr[r + 1]; e++) s += m->out_val[e] * x[m->out_col[e]];
        y[r] = s;
    }
}

// Below this many weights one thread finishes before a parallel region pays for itself; each
// thread gets at least QLM_QGEMV_MIN_PER_THREAD weights (rows are split in multiples of 4).
#define QLM_QGEMV_MIN_PARALLEL (1 << 17)
#define QLM_QGEMV_MIN_PER_THREAD (1 << 16)

// One GEMV ready to run: its context (activations prepared), kernel, input (for the outliers) and output.
typedef struct {
    qlm_qctx c;
    qlm_qrows_fn fn;
    const float *x;
    float *y;
} qgemv_job;

// Whether a job for m would compute exactly the activations `a` holds (same stored-order x, same
// segments, groups, swizzle and extra copies), so that it can read them instead.
static int act_shareable(const qgemv_job *a, const qlm_qmatrix *m, qlm_isa isa, int want_x16, int blocks) {
    const qlm_qmatrix *am = a->c.m;
    if (!a->c.xh || am->cols != m->cols || (a->c.x16 != NULL) != want_x16 || act_i16_blocks(isa, am) != blocks) return 0;
    if (qlm_act_i16_segment(am) != qlm_act_i16_segment(m) || qlm_n_groups(am) != qlm_n_groups(m) || group_cols(am) != group_cols(m))
        return 0;
    if (am->perm == m->perm) return 1;
    return am->perm && m->perm && memcmp(am->perm, m->perm, sizeof(int32_t) * (size_t)m->cols) == 0;
}

// Prepares y = W·x: x in stored order and, on the integer path, its quantised activations (in scratch,
// or those of one of the jobs `prev[0..nprev)` of the same input x when they are the same: act_shareable).
// Returns 0 when nothing is left to run (no rows; or y already written: no columns, unknown bits).
static int qgemv_prepare(qlm_isa isa, const qlm_qmatrix *m, const float *x, float *y, float *scratch,
                         const qgemv_job *prev, int nprev, qgemv_job *j) {
    const int rows = m->rows, cols = m->cols;
    if (rows <= 0) return 0;
    if (cols <= 0) {
        for (int r = 0; r < rows; r++) y[r] = 0.0f;
        return 0;
    }
    if (!valid_bits(m->format, m->bits)) {
        for (int r = 0; r < rows; r++) y[r] = NAN;
        return 0;
    }
    if (!qlm_isa_supported(isa)) isa = QLM_ISA_SCALAR;
    qlm_qctx c;
    c.m = m;
    c.cols_pad = qlm_cols_pad(cols);
    c.nsb = c.cols_pad / QLM_SUPERBLOCK;
    c.rb = qlm_row_bytes(m->bits, cols);
    c.n_groups = qlm_n_groups(m);
    const int gsz = group_cols(m);
    c.gchunks = (m->format == QLM_FMT_AFFINE && c.n_groups > 1 && gsz % 16 == 0) ? gsz / 16 : 0;
    // x in stored order, zero-padded: kernels never need column tails.
    if (!m->perm && cols == c.cols_pad) {
        c.xs = x;
    } else {
        qlm_x_stored(m, x, c.cols_pad, scratch);
        c.xs = scratch;
    }
    c.xh = c.xl = NULL;
    c.xd = c.gsum = NULL;
    c.seggroup = NULL;
    c.x16 = NULL;
    c.sbgroup = c.sbseg = NULL;
    c.isum = NULL;
    qlm_qrows_fn fn = NULL;
    if (qlm_qgemv_act() == QLM_ACT_I16 && (fn = pick_i16_kernel(isa, m)) != NULL) {
        const int want_x16 = isa == QLM_ISA_AVX2 && (m->bits == 8 || m->format == QLM_FMT_LUT), blocks = act_i16_blocks(isa, m);
        int sh = 0;
        while (sh < nprev && !act_shareable(&prev[sh], m, isa, want_x16, blocks)) sh++;
        if (sh < nprev) {
            const qlm_qctx *a = &prev[sh].c;
            c.xs = a->xs;
            c.xh = a->xh; c.xl = a->xl; c.xd = a->xd; c.gsum = a->gsum; c.seggroup = a->seggroup;
            c.isum = a->isum; c.x16 = a->x16; c.sbgroup = a->sbgroup; c.sbseg = a->sbseg;
        } else {
            act_i16_prepare(&c, scratch, 1, want_x16, blocks);
        }
    }
    if (!fn)
        fn = (m->format == QLM_FMT_AFFINE && c.n_groups > 1 && c.gchunks == 0)
                 ? qrows_scalar  // group size not a multiple of 16: portable path
                 : pick_kernel(isa, m);
    j->c = c;
    j->fn = fn;
    j->x = x;
    j->y = y;
    return 1;
}

// Rows [4·b0, 4·b1) of a job (blocks of 4 rows; the last block may be short).
static void qgemv_run_blocks(const qgemv_job *j, int b0, int b1) {
    const int rows = j->c.m->rows;
    int r0 = b0 * 4, r1 = b1 * 4;
    if (r1 > rows) r1 = rows;
    if (r0 >= r1) return;
    j->fn(&j->c, j->y, r0, r1);
    add_outliers(j->c.m, j->x, j->y, r0, r1);
}

// Threads for `total` weights in `blocks` row blocks: 1 below QLM_QGEMV_MIN_PARALLEL or inside a
// parallel region, else up to qlm_get_threads() with QLM_QGEMV_MIN_PER_THREAD weights and a block each.
static int qgemv_threads(size_t total, int blocks) {
    return qlm_omp_threads(total, QLM_QGEMV_MIN_PARALLEL, QLM_QGEMV_MIN_PER_THREAD, blocks);
}

// Runs n prepared jobs on nt threads: their row blocks, concatenated, are cut into nt contiguous
// ranges (one thread may finish one matrix and start the next: no barrier between them).
static void qgemv_run_jobs(const qgemv_job *jobs, int n, int total_blocks, int nt) {
    if (nt <= 1) {
        for (int k = 0; k < n; k++) qgemv_run_blocks(&jobs[k], 0, (jobs[k].c.m->rows + 3) / 4);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
    {
        const int t = omp_get_thread_num(), tn = omp_get_num_threads();
        const int g0 = (int)((long long)total_blocks * t / tn), g1 = (int)((long long)total_blocks * (t + 1) / tn);
        for (int k = 0, base = 0; k < n && base < g1; k++) {
            const int nb = (jobs[k].c.m->rows + 3) / 4;
            const int b0 = g0 > base ? g0 - base : 0, b1 = g1 - base < nb ? g1 - base : nb;
            if (b0 < b1) qgemv_run_blocks(&jobs[k], b0, b1);
            base += nb;
        }
    }
#endif
}

static void qgemv_driver(qlm_isa isa, const qlm_qmatrix *m, const float *x, float *y, float *scratch) {
    qgemv_job j;
    if (!qgemv_prepare(isa, m, x, y, scratch, NULL, 0, &j)) return;
    const int blocks = (m->rows + 3) / 4;
    qgemv_run_jobs(&j, 1, blocks, qgemv_threads((size_t)m->rows * (size_t)m->cols, blocks));
}

size_t qlm_qgemv_multi_scratch_floats(int n, const qlm_qmatrix *const *ms) {
    size_t s = 0;
    for (int k = 0; k < n; k++) s += (qlm_qgemv_scratch_floats(ms[k]) + 15) & ~(size_t)15;
    return s;
}

void qlm_qgemv_multi_isa(qlm_isa isa, int n, const qlm_qmatrix *const *ms, const float *x, float *const *ys, float *scratch) {
    int direct = n <= QLM_QGEMV_MULTI_MAX;
    for (int k = 0; k < n && direct; k++) {
        const qlm_format_ops *ops = qlm_format_table((qlm_format)ms[k]->format);
        direct = ops && ops->gemv == qgemv_driver;
    }
    if (!direct) {  // a format with its own GEMV entry (none today), or too many: one call each
        for (int k = 0; k < n; k++) {
            qlm_qgemv_isa(isa, ms[k], x, ys[k], scratch);
        }
        return;
    }
    qgemv_job jobs[QLM_QGEMV_MULTI_MAX];
    int nj = 0, blocks = 0;
    size_t total = 0;
    for (int k = 0; k < n; k++) {
        if (qgemv_prepare(isa, ms[k], x, ys[k], scratch, jobs, nj, &jobs[nj])) {
            blocks += (ms[k]->rows + 3) / 4;
            total += (size_t)ms[k]->rows * (size_t)ms[k]->cols;
            nj++;
        }
        scratch += (qlm_qgemv_scratch_floats(ms[k]) + 15) & ~(size_t)15;
    }
    qgemv_run_jobs(jobs, nj, blocks, qgemv_threads(total, blocks));
}

void qlm_qgemv_multi(int n, const qlm_qmatrix *const *ms, const float *x, float *const *ys, float *scratch) {
    qlm_qgemv_multi_isa(qlm_isa_active(), n, ms, x, ys, scratch);
}

void qlm_qgemv_isa(qlm_isa isa, const qlm_qmatrix *m, const float *x, float *y, float *scratch) {
    const qlm_format_ops *ops = qlm_format_table((qlm_format)m->format);
    if (ops) ops->gemv(isa, m, x, y, scratch);
    else qgemv_driver(isa, m, x, y, scratch);
}

void qlm_qgemv(const qlm_qmatrix *m, const float *x, float *y, float *scratch) {
    qlm_qgemv_isa(qlm_isa_active(), m, x, y, scratch);
}

// ---------------------------------------------------------------------------------------------
// Prefill GEMM: Y[T, rows] = X[T, cols] · Wᵀ (+ beta·Y), row tiles of at most ~4 MiB of f32.
// Single-threaded dequantisation on purpose: prefill runs on the BLAS pool only.
// ---------------------------------------------------------------------------------------------
#define QLM_QGEMM_TILE_FLOATS ((size_t)1 << 20)

static int qgemm_tile_rows(const qlm_qmatrix *m) {
    if (m->rows <= 0 || m->cols <= 0) return 0;
    size_t tr = QLM_QGEMM_TILE_FLOATS / (size_t)m->cols;
    if (tr >= 64) tr &= ~(size_t)15;  // whole sgemm panels
    if (tr < 1) tr = 1;
    if (tr > (size_t)m->rows) tr = (size_t)m->rows;
    return (int)tr;
}

size_t qlm_qgemm_tile_floats(const qlm_qmatrix *m) {
    return (size_t)qgemm_tile_rows(m) * (size_t)(m->cols > 0 ? m->cols : 0);
}

void qlm_qgemm(const qlm_qmatrix *m, const float *X, float *Y, int T, float beta, float *tile) {
    const int rows = m->rows, cols = m->cols;
    if (T <= 0 || rows <= 0) return;
    if (cols <= 0) {  // empty inner dimension: Y = beta·Y
        for (int t = 0; t < T; t++)
            for (int r = 0; r < rows; r++) {
                float *p = Y + (size_t)t * (size_t)rows + (size_t)r;
                *p = beta == 0.0f ? 0.0f : beta * *p;
            }
        return;
    }
#if defined(__x86_64__) || defined(__i386__)
    if (qlm_qgemm_uses_i16(m)) {
        qlm_qgemm_i16_vnni(m, X, Y, T, beta);
        return;
    }
#endif
    const int tr = qgemm_tile_rows(m);
    for (int r0 = 0; r0 < rows; r0 += tr) {
        const int r1 = r0 + tr < rows ? r0 + tr : rows;
        qlm_qmatrix_dequant_rows(m, r0, r1, tile);
        // Each tile owns the column block Y[:, r0:r1], so every tile applies the caller's beta.
        qlm_sgemm_nt(T, r1 - r0, cols, X, cols, tile, cols, Y + r0, rows, beta);
    }
}

int qlm_qgemm_i16_available(const qlm_qmatrix *m) {
#if defined(__x86_64__) || defined(__i386__)
    return qlm_qgemm_i16_vnni_supported(m);
#else
    (void)m;
    return 0;
#endif
}

int qlm_qgemm_uses_i16(const qlm_qmatrix *m) {
    return qlm_qgemv_act() == QLM_ACT_I16 && qlm_isa_active() == QLM_ISA_AVX512 && qlm_qgemm_i16_available(m);
}

void qlm_qgemm_i16(const qlm_qmatrix *m, const float *X, float *Y, int T, float beta) {
    if (T <= 0) return;
#if defined(__x86_64__) || defined(__i386__)
    if (qlm_qgemm_i16_available(m)) {
        qlm_qgemm_i16_vnni(m, X, Y, T, beta);
        return;
    }
#endif
    qlm_qgemm_i16_ref(m, X, Y, T, beta);
}

// Portable twin of qlm_qgemm_i16_vnni: per token, the portable activation quantiser (same bytes as
// the AVX-512 one); per row and segment the exact integer sum Σ q·xi = 128·Σ q·xh + Σ q·xl, then
// f = fma(−z, Σ xi, (float)acc) and y = fma(s·d, f, y), segments in order; then the outliers
// (y += Σ val·x[col], the exact x, summed from 0 in CSR order) and beta.
void qlm_qgemm_i16_ref(const qlm_qmatrix *m, const float *X, float *Y, int T, float beta) {
    const int rows = m->rows, cols = m->cols;
    if (T <= 0 || rows <= 0 || cols <= 0) return;
    const int cp = qlm_cols_pad(cols);
    const int seg = qlm_act_i16_segment(m), nseg = (cp + seg - 1) / seg;
    const int ng = qlm_n_groups(m);
    const size_t rb = qlm_row_bytes(m->bits, cols);
    float *xs = malloc(sizeof(float) * (size_t)cp), *d = malloc(sizeof(float) * (size_t)nseg);
    int8_t *xh = malloc((size_t)cp), *xl = malloc((size_t)cp);
    int *isum = malloc(sizeof(int) * (size_t)nseg);
    uint8_t *q = malloc((size_t)rows * (size_t)cp);
    if (!xs || !d || !xh || !xl || !isum || !q) {
        fprintf(stderr, "qlm: out of memory in qlm_qgemm_i16_ref\n");
        abort();
    }
    for (int r = 0; r < rows; r++) {
        uint8_t *qr = q + (size_t)r * (size_t)cp;
        qlm_unpack_codes(m->bits, m->codes + (size_t)r * rb, qr, 1, cp);
        if (m->format == QLM_FMT_LUT)
            for (int k = 0; k < cp; k++) qr[k] = m->lut[((size_t)r << m->bits) + qr[k]];
    }
    for (int t = 0; t < T; t++) {
        const float *x = X + (size_t)t * (size_t)cols;
        qlm_x_stored(m, x, cp, xs);
        act_i16_prepare_ref(xs, cp, seg, xh, xl, d, isum);
        for (int r = 0; r < rows; r++) {
            const uint8_t *qr = q + (size_t)r * (size_t)cp;
            float o = 0.0f;
            for (int s = 0; s < nseg; s++) {
                const int k0 = s * seg, k1 = k0 + seg < cp ? k0 + seg : cp;
                int32_t ah = 0, al = 0;
                for (int k = k0; k < k1; k++) {
                    ah += (int32_t)qr[k] * (int32_t)xh[k];
                    al += (int32_t)qr[k] * (int32_t)xl[k];
                }
                const int g = qlm_segment_group(m, s, seg);
                const float sc = qlm_f16_to_f32(m->scales[(size_t)r * (size_t)ng + (size_t)g]);
                const float zc = qlm_f16_to_f32(m->zeros[(size_t)r * (size_t)ng + (size_t)g]);
                const float f = fmaf(-zc, (float)isum[s], (float)(int32_t)((uint32_t)ah * 128u + (uint32_t)al));
                o = fmaf(sc * d[s], f, o);
            }
            if (m->n_outliers > 0) {
                float so = 0.0f;
                for (int e = m->out_rowptr[r]; e < m->out_rowptr[r + 1]; e++) so += m->out_val[e] * x[m->out_col[e]];
                o += so;
            }
            float *y = Y + (size_t)t * (size_t)rows + (size_t)r;
            *y = beta == 0.0f ? o : o + beta * *y;
        }
    }
    free(xs); free(d); free(xh); free(xl); free(isum); free(q);
}

// ---------------------------------------------------------------------------------------------
// Format table
// ---------------------------------------------------------------------------------------------
static const qlm_format_ops g_format_ops[3] = {
    {QLM_FMT_AFFINE, "affine", qlm_pack_codes, qlm_unpack_codes, qgemv_driver, dequant_rows_affine},
    {QLM_FMT_LUT, "lut", qlm_pack_codes, qlm_unpack_codes, qgemv_driver, dequant_rows_lut},
    // f16 stores plain halves: there are no codes to pack.
    {QLM_FMT_F16, "f16", NULL, NULL, qgemv_driver, dequant_rows_f16},
};

const qlm_format_ops *qlm_format_table(qlm_format f) {
    if ((int)f < 0 || (int)f > 2) return NULL;
    return &g_format_ops[f];
}
