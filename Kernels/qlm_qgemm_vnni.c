// Prefill GEMM with 16-bit integer activations: Y[T, rows] = X[T, cols] · Wᵀ (+ beta·Y) for affine
// and LUT matrices on AVX-512 VNNI (qlm_qgemm_i16 in qlm_quant.h). Outliers (CSR) are summed per
// row with the exact x, in CSR order, 16 tokens per vector (qg_outlier_sums), and added to the sums.
//
// Why: the f32 path dequantises row tiles and calls sgemm, which runs at this machine's f32 FMA
// peak (16 multiply-adds per instruction). Here the codes stay bytes and one vpdpbusd does 64 byte
// products; with the activations split into two bytes (as in the decode GEMV, qlm_qgemv_vnni.c)
// that is 32 multiply-adds per instruction, twice sgemm's.
//
// Activations: each token's x (stored column order, zero-padded to cols_pad) is quantised per
// segment exactly as for the decode GEMV (qlm_act_i16_prepare: segments of qlm_act_i16_segment
// columns, d = max|x| / 16383, xi = round(x / d) = 128·xh + xl), so prefill and decode multiply
// W by the same x̂. Per token t, row r and segment s:
//   acc  = Σ_k q[r,k]·xh[t,k]·128 + Σ_k q[r,k]·xl[t,k]      (exact in int32: |acc| < 2^30)
//   f    = fma(−z[r,s], isum[t,s], (float)acc)               (zero point: Σ (q − z)·xi)
//   y   += fma(s[r,s]·d[t,s], f, y)                          (f32, segments in order)
// The portable twin (qlm_qgemm_i16_ref, qlm_quant.c) does the same operations in the same order,
// so the two agree bit for bit; tests check that, and that both equal the f32 reference applied to
// x̂ up to rounding.
//
// Weights: a panel of 32 rows is unpacked once (codes → bytes, LUT codes → codebook bytes) into
// [cols_pad / 4][32 rows][4] bytes, so one 64-byte load holds 4 consecutive columns of 16 rows and
// one vpdpbusd with a broadcast of 4 activation bytes adds them into 16 row sums; the panel (at
// most 32 × 1536 bytes on this model) stays in L1/L2 while every token streams past it.
// Register block: 6 tokens × 32 rows, high and low activation bytes in separate accumulators
// (24 zmm), combined once per segment.
#if defined(__x86_64__) || defined(__i386__)
#include "qlm_quant_impl.h"
#include "qlm_x86_common.h"
#include "qlm_omp.h"

#include <immintrin.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#pragma STDC FP_CONTRACT OFF

#define QG512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
#define QGINL __attribute__((always_inline)) static inline

enum { QG_NR = 32, QG_MR = 6 };

typedef int32_t qg_i32u __attribute__((aligned(1), may_alias));

// One panel of QG_NR rows, unpacked.
typedef struct {
    uint8_t *codes;  // [cols_pad / 4][QG_NR][4] code bytes (LUT: codebook bytes); rows past the matrix: 0
    float *sc, *zc;  // [nseg][QG_NR] scale and zero point of the group holding each segment (0 past the matrix)
} qg_panel;

// The activations of all T tokens, quantised (built once per call).
typedef struct {
    const int8_t *xh, *xl;  // [T][cols_pad]
    const float *d;         // [T][nseg] segment scales
    const float *sx;        // [T][nseg] Σ xi per segment, as float (exact: |Σ| < 2^23)
    int cols_pad, seg, nseg;
} qg_acts;

// The 6·M token × 32 row block over all segments; out[t][0..31] receives the f32 sums.
QG512 QGINL void qg_block(const int M, const qg_panel *p, const qg_acts *a, int t0, float *out) {
    const int cp = a->cols_pad, seg = a->seg, nseg = a->nseg;
    for (int i = 0; i < M * QG_NR; i++) out[i] = 0.0f;
    const int8_t *xh[QG_MR], *xl[QG_MR];
    for (int t = 0; t < M; t++) {
        xh[t] = a->xh + (size_t)(t0 + t) * (size_t)cp;
        xl[t] = a->xl + (size_t)(t0 + t) * (size_t)cp;
    }
    for (int s = 0; s < nseg; s++) {
        const int k0 = s * seg, k1 = k0 + seg < cp ? k0 + seg : cp;
        __m512i ah[QG_MR][2], al[QG_MR][2];
        for (int t = 0; t < M; t++) ah[t][0] = ah[t][1] = al[t][0] = al[t][1] = _mm512_setzero_si512();
        const uint8_t *w = p->codes + (size_t)k0 * QG_NR;
        for (int k = k0; k < k1; k += 4, w += 4 * QG_NR) {
            const __m512i w0 = _mm512_load_si512((const void *)w), w1 = _mm512_load_si512((const void *)(w + 64));
            for (int t = 0; t < M; t++) {
                const __m512i bh = _mm512_set1_epi32(*(const qg_i32u *)(xh[t] + k));
                ah[t][0] = _mm512_dpbusd_epi32(ah[t][0], w0, bh);
                ah[t][1] = _mm512_dpbusd_epi32(ah[t][1], w1, bh);
                const __m512i bl = _mm512_set1_epi32(*(const qg_i32u *)(xl[t] + k));
                al[t][0] = _mm512_dpbusd_epi32(al[t][0], w0, bl);
                al[t][1] = _mm512_dpbusd_epi32(al[t][1], w1, bl);
            }
        }
        const float *sc = p->sc + (size_t)s * QG_NR, *zc = p->zc + (size_t)s * QG_NR;
        for (int v = 0; v < 2; v++) {
            const __m512 sv = _mm512_loadu_ps(sc + 16 * v), zv = _mm512_loadu_ps(zc + 16 * v);
            for (int t = 0; t < M; t++) {
                const size_t ds = (size_t)(t0 + t) * (size_t)nseg + (size_t)s;
                const __m512i acc = _mm512_add_epi32(_mm512_slli_epi32(ah[t][v], 7), al[t][v]);
                const __m512 f = _mm512_fnmadd_ps(zv, _mm512_set1_ps(a->sx[ds]), _mm512_cvtepi32_ps(acc));
                const __m512 sd = _mm512_mul_ps(sv, _mm512_set1_ps(a->d[ds]));
                float *o = out + t * QG_NR + 16 * v;
                _mm512_storeu_ps(o, _mm512_fmadd_ps(sd, f, _mm512_loadu_ps(o)));
            }
        }
    }
}

// Row r's codes as bytes, cols_pad of them (LUT: the codebook bytes), one superblock per 64-byte
// vector (layouts in qlm_quant.h): 2-bit: the 16 bytes in each 128-bit lane, lane k shifted right
// by 2k; 3-bit: octets as in qlm_oct3_512, the single superblocks at a row's end as 2-bit plus 4
// under the high-bit lane mask; 4-bit: the 32 bytes in each half, the
// upper half shifted right by 4; then a mask. (The scalar unpack took ~9% of a prefill.)
QG512 static void qg_unpack_row(const qlm_qmatrix *m, int r, uint8_t *row, int cp) {
    const int bits = m->bits, nsb = cp / QLM_SUPERBLOCK, sbb = qlm_sb_bytes(bits);
    const uint8_t *src = m->codes + (size_t)r * qlm_row_bytes(bits, m->cols);
    // Per-16-bit-word shift counts: 2k in 128-bit lane k; 4 in the upper 256 bits.
    const long long w = 0x0001000100010001LL;
    const __m512i sh2 = _mm512_set_epi64(6 * w, 6 * w, 4 * w, 4 * w, 2 * w, 2 * w, 0, 0);
    const __m512i sh4 = _mm512_set_epi64(4 * w, 4 * w, 4 * w, 4 * w, 0, 0, 0, 0);
    const __m512i m2 = _mm512_set1_epi8(3), m4 = _mm512_set1_epi8(15), four = _mm512_set1_epi8(4);
    __m512i table = _mm512_setzero_si512();
    if (m->format == QLM_FMT_LUT) {
        uint8_t t16[16];
        qlm_lut_row_bytes(m, r, t16);
        table = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)t16));
    }
    for (int b = 0; b < nsb; b++, src += sbb) {
        __m512i v;
        if (bits == 3 && qlm_sb3_in_octet(b, nsb)) {  // code layout 3: superblock b & 7 of its octet
            v = qlm_oct3_512(src - (size_t)(b & 7) * 24, b & 7);
        } else if (bits == 8) {
            v = _mm512_loadu_si512((const void *)src);
        } else if (bits == 4) {
            v = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)src));
            v = _mm512_and_si512(_mm512_srlv_epi16(v, sh4), m4);
        } else {
            v = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)src));
            v = _mm512_and_si512(_mm512_srlv_epi16(v, sh2), m2);
            if (bits == 3) {
                uint64_t hi;
                memcpy(&hi, src + 16, sizeof hi);
                v = _mm512_mask_add_epi8(v, (__mmask64)hi, v, four);
            }
        }
        if (m->format == QLM_FMT_LUT) v = _mm512_shuffle_epi8(table, v);
        _mm512_storeu_si512((void *)(row + (size_t)b * QLM_SUPERBLOCK), v);
    }
}

// Unpacks rows [r0, r0 + 32) of m into the panel (rows past the matrix: zero codes and scales).
// `row` holds cols_pad bytes.
QG512 static void qg_fill_panel(const qlm_qmatrix *m, int r0, const qg_acts *a, qg_panel *p, uint8_t *row) {
    const int cp = a->cols_pad, seg = a->seg, nseg = a->nseg, ng = qlm_n_groups(m);
    for (int i = 0; i < QG_NR; i++) {
        const int r = r0 + i;
        if (r >= m->rows) {
            for (int k = 0; k < cp; k += 4) memset(p->codes + (size_t)k * QG_NR + 4 * i, 0, 4);
            for (int s = 0; s < nseg; s++) p->sc[s * QG_NR + i] = p->zc[s * QG_NR + i] = 0.0f;
            continue;
        }
        qg_unpack_row(m, r, row, cp);
        for (int k = 0; k < cp; k += 4) memcpy(p->codes + (size_t)k * QG_NR + 4 * i, row + k, 4);
        for (int s = 0; s < nseg; s++) {
            const int g = qlm_segment_group(m, s, seg);
            p->sc[s * QG_NR + i] = qlm_f16_to_f32(m->scales[(size_t)r * (size_t)ng + (size_t)g]);
            p->zc[s * QG_NR + i] = qlm_f16_to_f32(m->zeros[(size_t)r * (size_t)ng + (size_t)g]);
        }
    }
}

// Grow-only per-thread buffers: prefill calls this ~7 times per layer, and re-allocating megabytes
// each time costs page faults. Never freed (bounded by the largest call a thread has made).
static _Thread_local void *qg_buf;
static _Thread_local size_t qg_cap;
static void *qg_scratch(size_t bytes) {
    if (bytes > qg_cap) {
        free(qg_buf);
        qg_buf = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
        qg_cap = qg_buf ? bytes : 0;
    }
    return qg_buf;
}

// One panel against every token. Its own function: the OpenMP region below is outlined by the
// compiler without this file's target attributes, so the AVX-512 code must not be inlined into it.
// Outlier sums of the panel's rows for every token: os[i][t] = Σ_e val_e · x[t][col_e] (exact x,
// original columns, summed from 0 in CSR order; product and sum rounded separately, as the twin),
// 16 tokens per vector from the transposed activations xt [cols][tp] (tp = T rounded up to 16).
QG512 static void qg_outlier_sums(const qlm_qmatrix *m, int r0, int nr, const float *xt, int tp, float *os) {
    for (int i = 0; i < nr; i++) {
        const int e0 = m->out_rowptr[r0 + i], e1 = m->out_rowptr[r0 + i + 1];
        for (int t = 0; t < tp; t += 16) {
            __m512 acc = _mm512_setzero_ps();
            for (int e = e0; e < e1; e++)
                acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_set1_ps(m->out_val[e]),
                                                       _mm512_load_ps(xt + (size_t)m->out_col[e] * (size_t)tp + t)));
            _mm512_store_ps(os + (size_t)i * (size_t)tp + t, acc);
        }
    }
}

// One panel against every token. Its own function: the OpenMP region below is outlined by the
// compiler without this file's target attributes, so the AVX-512 code must not be inlined into it.
// xt/os: transposed activations and the panel's outlier sums (NULL without outliers).
QG512 __attribute__((noinline)) static void qg_panel_all_tokens(const qlm_qmatrix *m, const qg_acts *a, qg_panel *p,
                                                                  uint8_t *row, int r0, const float *xt, float *os,
                                                                  float *Y, int T, float beta) {
    const int rows = m->rows, nr = rows - r0 < QG_NR ? rows - r0 : QG_NR, tp = (T + 15) & ~15;
    float out[QG_MR * QG_NR] __attribute__((aligned(64)));  // whole-vector stores, element loads: see qlm_qgemv_vnni.c (sd)
    qg_fill_panel(m, r0, a, p, row);
    if (os) qg_outlier_sums(m, r0, nr, xt, tp, os);
    for (int t0 = 0; t0 < T; t0 += QG_MR) {
        const int M = T - t0 < QG_MR ? T - t0 : QG_MR;
        switch (M) {
        case 6: qg_block(6, p, a, t0, out); break;
        case 5: qg_block(5, p, a, t0, out); break;
        case 4: qg_block(4, p, a, t0, out); break;
        case 3: qg_block(3, p, a, t0, out); break;
        case 2: qg_block(2, p, a, t0, out); break;
        default: qg_block(1, p, a, t0, out); break;
        }
        if (os)
            for (int t = 0; t < M; t++)
                for (int i = 0; i < nr; i++) out[t * QG_NR + i] += os[(size_t)i * (size_t)tp + (size_t)(t0 + t)];
        for (int t = 0; t < M; t++) {
            float *y = Y + (size_t)(t0 + t) * (size_t)rows + (size_t)r0;
            const float *o = out + t * QG_NR;
            if (beta == 0.0f)
                for (int i = 0; i < nr; i++) y[i] = o[i];
            else
                for (int i = 0; i < nr; i++) y[i] = o[i] + beta * y[i];
        }
    }
}

int qlm_qgemm_i16_vnni_supported(const qlm_qmatrix *m) {
    if (!qlm_cpu_has_vnni_gfni()) return 0;
    if (m->format != QLM_FMT_AFFINE && m->format != QLM_FMT_LUT) return 0;
    if (m->rows <= 0 || m->cols <= 0) return 0;
    // Segments must not straddle groups (as for the decode kernels).
    return qlm_n_groups(m) <= 1 || m->group_size % qlm_act_i16_segment(m) == 0;
}

void qlm_qgemm_i16_vnni(const qlm_qmatrix *m, const float *X, float *Y, int T, float beta) {
    const int rows = m->rows, cols = m->cols;
    const int cp = qlm_cols_pad(cols);
    const int seg = qlm_act_i16_segment(m), nseg = (cp + seg - 1) / seg;
    // Threads share panels of 32 rows; below ~2^20 multiply-adds one thread is faster.
    const int nth = qlm_omp_threads((size_t)T * (size_t)rows * (size_t)cols, (size_t)1 << 20, 1, (rows + QG_NR - 1) / QG_NR);
    // The calling thread's scratch, carved in order (each piece 64-byte aligned): xh, xl [T][cp];
    // d, sx [T][nseg]; with outliers xt [cols][tp] (x transposed, tokens padded to tp = 16·k with
    // zeros); then per worker: xs [cp] floats, panel codes [cp·32], sc, zc [nseg·32], one unpacked
    // row [cp], with outliers os [32][tp].
    const int outl = m->n_outliers > 0, tp = (T + 15) & ~15;
#define QG_ALIGN(n) (((size_t)(n) + 63) & ~(size_t)63)
    const size_t off_xl = QG_ALIGN((size_t)T * cp), off_d = off_xl + QG_ALIGN((size_t)T * cp);
    const size_t off_sx = off_d + QG_ALIGN((size_t)T * nseg * 4), off_xt = off_sx + QG_ALIGN((size_t)T * nseg * 4);
    const size_t off_wk = off_xt + (outl ? QG_ALIGN((size_t)cols * tp * 4) : 0);
    const size_t w_codes = QG_ALIGN((size_t)cp * 4), w_sc = w_codes + QG_ALIGN((size_t)cp * QG_NR);
    const size_t w_zc = w_sc + QG_ALIGN((size_t)nseg * QG_NR * 4), w_row = w_zc + QG_ALIGN((size_t)nseg * QG_NR * 4);
    const size_t w_os = w_row + QG_ALIGN(cp), wk_bytes = w_os + (outl ? QG_ALIGN((size_t)QG_NR * tp * 4) : 0);
#undef QG_ALIGN
    uint8_t *buf = (uint8_t *)qg_scratch(off_wk + (size_t)nth * wk_bytes);
    if (!buf) {  // out of memory: the caller's f32 path still works
        qlm_qgemm_i16_ref(m, X, Y, T, beta);
        return;
    }
    int8_t *xh = (int8_t *)buf, *xl = (int8_t *)(buf + off_xl);
    float *d = (float *)(void *)(buf + off_d), *sx = (float *)(void *)(buf + off_sx);
    float *xt = outl ? (float *)(void *)(buf + off_xt) : NULL;
    const qg_acts a = {xh, xl, d, sx, cp, seg, nseg};
    const int npanels = (rows + QG_NR - 1) / QG_NR;
    _Atomic int next = 0;
#pragma omp parallel num_threads(nth)
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        uint8_t *wk = buf + off_wk + (size_t)tid * wk_bytes;
        float *xs = (float *)(void *)wk;
        qg_panel p = {wk + w_codes, (float *)(void *)(wk + w_sc), (float *)(void *)(wk + w_zc)};
        uint8_t *row = wk + w_row;
        float *os = outl ? (float *)(void *)(wk + w_os) : NULL;
        // 1. Quantise every token's activations (stored column order, padded).
#pragma omp for schedule(static)
        for (int t = 0; t < T; t++) {
            qlm_x_stored(m, X + (size_t)t * (size_t)cols, cp, xs);
            // The integer segment sums land in sx and are converted to float in place.
            float *sxt = sx + (size_t)t * (size_t)nseg;
            qlm_act_i16_prepare_avx512(xs, cp, seg, xh + (size_t)t * (size_t)cp, xl + (size_t)t * (size_t)cp,
                                       d + (size_t)t * (size_t)nseg, (int *)(void *)sxt);
            for (int s = 0; s < nseg; s++) {
                int v;
                memcpy(&v, sxt + s, sizeof v);
                sxt[s] = (float)v;
            }
        }
        // With outliers, x transposed (columns in original order) for the outlier sums.
        if (outl) {
#pragma omp for schedule(static)
            for (int j0 = 0; j0 < cols; j0 += 16) {
                const int j1 = j0 + 16 < cols ? j0 + 16 : cols;
                for (int t = 0; t < tp; t++)
                    for (int j = j0; j < j1; j++) xt[(size_t)j * (size_t)tp + (size_t)t] = t < T ? X[(size_t)t * (size_t)cols + (size_t)j] : 0.0f;
            }
        }
        // 2. Panels of 32 rows: unpack once, then every token.
        // Handed out one at a time (a hand-rolled dynamic schedule: clang's schedule(dynamic) needs a
        // newer libomp than LLVM 14's), so a thread slowed by other load takes fewer.
        for (int pi; (pi = atomic_fetch_add_explicit(&next, 1, memory_order_relaxed)) < npanels;)
            qg_panel_all_tokens(m, &a, &p, row, pi * QG_NR, xt, os, Y, T, beta);
    }
}
#endif
