// Packed low-bit GEMV benchmark and quick C-level checker (run.sh builds it with
// -DQLM_BENCH_MAIN; without that define this file compiles to nothing, because SwiftPM compiles
// every .c under Kernels/ into the library).
//
//   qbench check            every format/bits/group/ISA vs qlm_qgemv_ref on ragged shapes
//   qbench bench [quick]    GB/s (qlm_storage_bytes / time) and GFLOP/s (2·rows·cols / time)
//
// Timing: best of several batches (the VM is noisy). "cold" rotates over enough copies of the
// matrix that the working set (>= 256 MiB) streams from DRAM, as in decoding a real model;
// "hot" repeats one copy (cache-resident for the small shapes).
#ifdef QLM_BENCH_MAIN
#define _GNU_SOURCE
#include "qlm_kernels.h"
#include "qlm_quant.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _OPENMP
int omp_get_thread_num(void);
int omp_get_num_threads(void);
#endif

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t rng_s = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {
    rng_s ^= rng_s << 13; rng_s ^= rng_s >> 7; rng_s ^= rng_s << 17;
    return rng_s;
}
static float frand(void) { return (float)(rnd() >> 40) / (float)(1 << 24) * 2.0f - 1.0f; }  // [-1, 1)

typedef struct {
    qlm_qmatrix m;
    uint8_t *codes;
    uint16_t *scales, *zeros;
    uint8_t *lut;
    int32_t *perm, *rowptr;
    uint16_t *ocol;
    float *oval;
} qb_mat;

static void qb_free(qb_mat *q) {
    free(q->codes); free(q->scales); free(q->zeros); free(q->lut);
    free(q->perm); free(q->rowptr); free(q->ocol); free(q->oval);
    memset(q, 0, sizeof *q);
}

// Random matrix. gs <= 0: one group per row. out_per_row: outliers per row (0: none).
static void qb_make(qb_mat *q, int format, int bits, int gs, int rows, int cols, int use_perm, int out_per_row) {
    memset(q, 0, sizeof *q);
    qlm_qmatrix *m = &q->m;
    m->rows = rows; m->cols = cols; m->format = format; m->bits = bits;
    m->group_size = (format == QLM_FMT_AFFINE && gs > 0) ? gs : cols;
    if (format == QLM_FMT_F16) {
        uint16_t *h = malloc(sizeof(uint16_t) * (size_t)rows * (size_t)cols);
        for (size_t i = 0; i < (size_t)rows * (size_t)cols; i++) h[i] = qlm_f32_to_f16(frand());
        q->codes = (uint8_t *)h;
    } else {
        const size_t rb = qlm_row_bytes(bits, cols);
        uint8_t *u = malloc((size_t)rows * (size_t)cols);
        for (size_t i = 0; i < (size_t)rows * (size_t)cols; i++) u[i] = (uint8_t)(rnd() & ((1u << bits) - 1u));
        q->codes = malloc(rb * (size_t)rows);
        qlm_pack_codes(bits, u, q->codes, rows, cols);
        free(u);
    }
    m->codes = q->codes;
    if (format == QLM_FMT_AFFINE) {
        const int ng = qlm_n_groups(m);
        q->scales = malloc(sizeof(uint16_t) * (size_t)rows * (size_t)ng);
        q->zeros = malloc(sizeof(uint16_t) * (size_t)rows * (size_t)ng);
        for (size_t i = 0; i < (size_t)rows * (size_t)ng; i++) {
            q->scales[i] = qlm_f32_to_f16(0.01f + 0.05f * (frand() + 1.0f));
            q->zeros[i] = qlm_f32_to_f16((float)((1 << bits) - 1) * 0.5f * (frand() + 1.0f));
        }
        m->scales = q->scales; m->zeros = q->zeros;
    } else if (format == QLM_FMT_LUT) {
        const int n = 1 << bits;
        q->lut = malloc((size_t)rows * (size_t)n);
        for (size_t i = 0; i < (size_t)rows * (size_t)n; i++) q->lut[i] = (uint8_t)(rnd() & 255u);
        q->scales = malloc(sizeof(uint16_t) * (size_t)rows);
        q->zeros = malloc(sizeof(uint16_t) * (size_t)rows);
        for (int r = 0; r < rows; r++) {
            q->scales[r] = qlm_f32_to_f16(0.001f + 0.004f * (frand() + 1.0f));
            q->zeros[r] = qlm_f32_to_f16(127.5f + 20.0f * frand());
        }
        m->lut = q->lut; m->scales = q->scales; m->zeros = q->zeros;
    }
    if (use_perm) {
        q->perm = malloc(sizeof(int32_t) * (size_t)cols);
        for (int j = 0; j < cols; j++) q->perm[j] = j;
        for (int j = cols - 1; j > 0; j--) {
            const int k = (int)(rnd() % (uint64_t)(j + 1));
            const int32_t t = q->perm[j]; q->perm[j] = q->perm[k]; q->perm[k] = t;
        }
        m->perm = q->perm;
    }
    if (out_per_row > 0) {
        q->rowptr = malloc(sizeof(int32_t) * (size_t)(rows + 1));
        q->ocol = malloc(sizeof(uint16_t) * (size_t)rows * (size_t)out_per_row);
        q->oval = malloc(sizeof(float) * (size_t)rows * (size_t)out_per_row);
        int n = 0;
        for (int r = 0; r < rows; r++) {
            q->rowptr[r] = n;
            const int k = (int)(rnd() % (uint64_t)(out_per_row + 1));
            for (int e = 0; e < k; e++) {
                q->ocol[n] = (uint16_t)(rnd() % (uint64_t)cols);
                q->oval[n] = 4.0f * frand();
                n++;
            }
        }
        q->rowptr[rows] = n;
        m->n_outliers = n; m->out_rowptr = q->rowptr; m->out_col = q->ocol; m->out_val = q->oval;
    }
}

// QB_FORMATS="lut4,affine4 g128" limits the bench and the ceiling to these formats.
static int qb_format_selected(const char *name) {
    const char *only = getenv("QB_FORMATS");
    return !only || !*only || strstr(only, name) != NULL;
}

// QB_PATHS="avx512+i16,avx2" limits the ceiling to these paths (names as in its header; exact match
// per comma-separated entry, so "avx512" does not select "avx512+i16").
static int qb_path_selected(const char *name) {
    const char *only = getenv("QB_PATHS");
    if (!only || !*only) return 1;
    const size_t n = strlen(name);
    for (const char *p = only; *p;) {
        const char *e = strchr(p, ',');
        const size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && strncmp(p, name, n) == 0) return 1;
        if (!e) break;
        p = e + 1;
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------
// check
// ---------------------------------------------------------------------------------------------
// 1 (and a FAIL line) when y differs from ref by more than f32 rounding, relative to Σ_j |w_rj·x_j|
// (w: the dequantized weights, x: the activations both were computed from).
static int report_rel_err(const qlm_qmatrix *m, const float *x, const float *y, const float *ref, const char *path,
                          const char *what) {
    const int rows = m->rows, cols = m->cols;
    float *w = malloc(sizeof(float) * (size_t)cols * (size_t)rows);
    qlm_qmatrix_dequant_rows(m, 0, rows, w);
    double worst = 0;
    for (int r = 0; r < rows; r++) {
        double mag = 0;
        for (int j = 0; j < cols; j++) mag += fabs((double)w[(size_t)r * cols + j] * x[j]);
        const double e = fabs((double)y[r] - (double)ref[r]) / (mag > 1e-30 ? mag : 1e-30);
        if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
    }
    free(w);
    const double tol = 1.2e-7 * (4.0 * sqrt((double)cols) + 8.0);
    const int bad = !(worst <= tol);
    if (bad) printf("FAIL %-10s %s: rel err %.3g (tol %.3g)\n", path, what, worst, tol);
    return bad;
}

// The kernel of `isa` (f32 activations, the current setting) against the scalar reference.
static int check_one(const qb_mat *q, qlm_isa isa, const char *what) {
    const qlm_qmatrix *m = &q->m;
    float *x = malloc(sizeof(float) * (size_t)m->cols), *y = malloc(sizeof(float) * (size_t)m->rows);
    float *ref = malloc(sizeof(float) * (size_t)m->rows);
    float *scratch = malloc(sizeof(float) * (qlm_qgemv_scratch_floats(m) + 1));
    for (int j = 0; j < m->cols; j++) x[j] = frand();
    for (int r = 0; r < m->rows; r++) y[r] = NAN;
    qlm_qgemv_isa(isa, m, x, y, scratch);
    qlm_qgemv_ref(m, x, ref);
    const int bad = report_rel_err(m, x, y, ref, qlm_isa_name(isa), what);
    free(x); free(y); free(ref); free(scratch);
    return bad;
}

// The integer-activation kernel of `isa` (QLM_ACT_I16) against the reference applied to the
// activations it multiplies by, x̂ (qlm_qgemv_act_i16_roundtrip): the integer sums are exact, so
// only f32 rounding separates them. Matrices with outliers are left to the Swift tests (the driver
// adds those with x, not x̂).
static int check_one_i16(const qb_mat *q, qlm_isa isa, const char *what) {
    const qlm_qmatrix *m = &q->m;
    float *x = malloc(sizeof(float) * (size_t)m->cols), *xh = malloc(sizeof(float) * (size_t)m->cols);
    float *y = malloc(sizeof(float) * (size_t)m->rows), *ref = malloc(sizeof(float) * (size_t)m->rows);
    float *scratch = malloc(sizeof(float) * (qlm_qgemv_scratch_floats(m) + 1));
    for (int j = 0; j < m->cols; j++) x[j] = frand();
    for (int r = 0; r < m->rows; r++) y[r] = NAN;
    qlm_qgemv_set_act(QLM_ACT_I16);
    qlm_qgemv_act_i16_roundtrip(m, x, xh, 1);
    qlm_qgemv_isa(isa, m, x, y, scratch);
    qlm_qgemv_set_act(QLM_ACT_F32);
    qlm_qgemv_ref(m, xh, ref);
    char path[32];
    snprintf(path, sizeof path, "%s+i16", qlm_isa_name(isa));
    const int bad = report_rel_err(m, xh, y, ref, path, what);
    free(x); free(xh); free(y); free(ref); free(scratch);
    return bad;
}

static int run_check(void) {
    static const qlm_isa isas[] = {QLM_ISA_SCALAR, QLM_ISA_AVX2, QLM_ISA_AVX512, QLM_ISA_NEON};
    static const int rowsv[] = {1, 3, 7, 33, 100};
    static const int colsv[] = {16, 31, 64, 100, 130, 576};
    struct { int format, bits; } fmts[] = {
        {QLM_FMT_AFFINE, 2}, {QLM_FMT_AFFINE, 3}, {QLM_FMT_AFFINE, 4}, {QLM_FMT_AFFINE, 8},
        {QLM_FMT_LUT, 2}, {QLM_FMT_LUT, 3}, {QLM_FMT_LUT, 4}, {QLM_FMT_F16, 16}};
    static const int gsv[] = {32, 64, 128, 0, 48};
    int fails = 0, runs = 0;
    qlm_qgemv_set_act(QLM_ACT_F32);  // f32 activations, except in check_one_i16
    for (size_t f = 0; f < sizeof fmts / sizeof fmts[0]; f++)
        for (size_t g = 0; g < (fmts[f].format == QLM_FMT_AFFINE ? 5u : 1u); g++)
            for (size_t ri = 0; ri < 5; ri++)
                for (size_t ci = 0; ci < 6; ci++)
                    for (int variant = 0; variant < 4; variant++) {
                        qb_mat q;
                        qb_make(&q, fmts[f].format, fmts[f].bits, gsv[g], rowsv[ri], colsv[ci], variant & 1,
                                (variant & 2) ? 3 : 0);
                        char what[128];
                        snprintf(what, sizeof what, "fmt %d bits %d gs %d %dx%d perm %d out %d", fmts[f].format,
                                 fmts[f].bits, gsv[g], rowsv[ri], colsv[ci], variant & 1, (variant >> 1) & 1);
                        for (size_t i = 0; i < 4; i++) {
                            if (!qlm_isa_supported(isas[i])) continue;
                            fails += check_one(&q, isas[i], what);
                            runs++;
                            if (!(variant & 2) && qlm_qgemv_i16_kernel_exists_on(isas[i], &q.m)) {
                                fails += check_one_i16(&q, isas[i], what);
                                runs++;
                            }
                        }
                        qb_free(&q);
                    }
    printf("check: %d passed, %d failed\n", runs - fails, fails);
    return fails != 0;
}

// ---------------------------------------------------------------------------------------------
// bench
// ---------------------------------------------------------------------------------------------
// Streaming-read roofline: sum of a large buffer split over the threads.
#if defined(__x86_64__)
__attribute__((target("avx2"))) static float stream_sum(const float *buf, size_t a, size_t b) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = a; i + 32 <= b; i += 32) {
        s0 = _mm256_add_ps(s0, _mm256_load_ps(buf + i));
        s1 = _mm256_add_ps(s1, _mm256_load_ps(buf + i + 8));
        s2 = _mm256_add_ps(s2, _mm256_load_ps(buf + i + 16));
        s3 = _mm256_add_ps(s3, _mm256_load_ps(buf + i + 24));
    }
    float tmp[8];
    _mm256_storeu_ps(tmp, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    return ((tmp[0] + tmp[1]) + (tmp[2] + tmp[3])) + ((tmp[4] + tmp[5]) + (tmp[6] + tmp[7]));
}
#else
static float stream_sum(const float *buf, size_t a, size_t b) {
    float tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (size_t i = a; i + 8 <= b; i += 8)
        for (int k = 0; k < 8; k++) tmp[k] += buf[i + k];
    return ((tmp[0] + tmp[1]) + (tmp[2] + tmp[3])) + ((tmp[4] + tmp[5]) + (tmp[6] + tmp[7]));
}
#endif

static double read_roofline(int nt) {
    const size_t n = (size_t)64 << 20;  // floats: 256 MiB
    float *buf = aligned_alloc(64, n * sizeof(float));
    for (size_t i = 0; i < n; i++) buf[i] = (float)(i & 7);
    qlm_set_threads(nt);
    double best = 1e30;
    volatile float sink = 0;
    for (int rep = 0; rep < 5; rep++) {
        float total = 0;
        const double t0 = now();
#pragma omp parallel num_threads(nt) reduction(+ : total)
        {
            int t = 0, T = 1;
#ifdef _OPENMP
            t = omp_get_thread_num(); T = omp_get_num_threads();
#endif
            const size_t a = n * (size_t)t / (size_t)T, b = n * (size_t)(t + 1) / (size_t)T;
            total += stream_sum(buf, a, b);
        }
        const double dt = now() - t0;
        sink += total;
        if (dt < best) best = dt;
    }
    free(buf);
    return (double)n * sizeof(float) / best / 1e9;
}

// Best average seconds per GEMV over batches, rotating over `ncopy` matrices.
static double time_gemv(qb_mat *mats, int ncopy, qlm_isa isa, const float *x, float *y, float *scratch, double budget) {
    for (int i = 0; i < ncopy; i++) qlm_qgemv_isa(isa, &mats[i].m, x, y, scratch);  // warm-up
    double best = 1e30, spent = 0;
    int batch = ncopy;
    int batches = 0;
    while ((spent < budget || batches < 3) && batches < 200) {
        const double t0 = now();
        for (int i = 0; i < batch; i++) qlm_qgemv_isa(isa, &mats[i % ncopy].m, x, y, scratch);
        const double dt = now() - t0;
        spent += dt;
        batches++;
        if (dt / batch < best) best = dt / batch;
        if (dt < 0.01 && batch < (1 << 20)) batch *= 2;  // batches of >= ~10 ms
    }
    return best;
}

typedef struct { const char *name; int format, bits, gs; } qb_fmt;

// Dense f32 GEMV (qlm_gemv_f32) on the same shape, for calibration: best seconds per call.
static double time_f32(float **W, int ncopy, qlm_isa isa, int rows, int cols, const float *x, float *y, double budget) {
    for (int i = 0; i < ncopy; i++) qlm_gemv_f32_isa(isa, W[i], x, y, rows, cols);
    double best = 1e30, spent = 0;
    int batch = ncopy, batches = 0;
    while ((spent < budget || batches < 3) && batches < 200) {
        const double t0 = now();
        for (int i = 0; i < batch; i++) qlm_gemv_f32_isa(isa, W[i % ncopy], x, y, rows, cols);
        const double dt = now() - t0;
        spent += dt;
        batches++;
        if (dt / batch < best) best = dt / batch;
        if (dt < 0.01 && batch < (1 << 20)) batch *= 2;
    }
    return best;
}

static void run_bench(int quick) {
    const qb_fmt fmts[] = {
        {"affine2 g128", QLM_FMT_AFFINE, 2, 128}, {"affine2 g64", QLM_FMT_AFFINE, 2, 64},
        {"affine3 g128", QLM_FMT_AFFINE, 3, 128}, {"affine3 g64", QLM_FMT_AFFINE, 3, 64},
        {"affine4 g128", QLM_FMT_AFFINE, 4, 128}, {"affine4 g64", QLM_FMT_AFFINE, 4, 64},
        {"affine8 g128", QLM_FMT_AFFINE, 8, 128}, {"affine8 g64", QLM_FMT_AFFINE, 8, 64},
        {"lut2", QLM_FMT_LUT, 2, 0}, {"lut3", QLM_FMT_LUT, 3, 0}, {"lut4", QLM_FMT_LUT, 4, 0},
        {"f16", QLM_FMT_F16, 16, 0},
    };
    int shapes[][2] = {{8192, 8192}, {576, 576}, {1536, 576}, {576, 1536}, {49152, 576}};
    int nshapes = quick ? 1 : 5;
    const char *only_shape = getenv("QB_SHAPE");  // one shape instead, "ROWSxCOLS" (e.g. the head: 49152x576)
    if (only_shape) {
        if (sscanf(only_shape, "%dx%d", &shapes[0][0], &shapes[0][1]) != 2 || shapes[0][0] <= 0 || shapes[0][1] <= 0) {
            fprintf(stderr, "QB_SHAPE must be RxC, e.g. 49152x576\n");
            exit(2);
        }
        nshapes = 1;
    }
    const qlm_isa best = qlm_isa_best();
    const double budget = quick ? 0.15 : 0.25;
    const size_t cold_bytes = (size_t)256 << 20;

    printf("# read roofline (256 MiB streaming sum): 1 thread %.1f GB/s, 2 threads %.1f GB/s\n",
           read_roofline(1), read_roofline(2));
    printf("# GB/s = qlm_storage_bytes / time; GFLOP/s = 2*rows*cols / time; best of batches\n");
    printf("# cold: rotating copies, >= 256 MiB working set (DRAM); hot: one copy (cache-resident if small)\n");
    printf("%-13s %-11s %10s %3s %7s | %8s %8s %7s | %8s %8s\n", "format", "shape", "isa", "thr", "bpw",
           "cold GB/s", "GFLOP/s", "us", "hot GB/s", "GFLOP/s");
    for (int s = 0; s < nshapes; s++) {
        const int rows = shapes[s][0], cols = shapes[s][1];
        float *x = malloc(sizeof(float) * (size_t)cols), *y = malloc(sizeof(float) * (size_t)rows);
        float *scratch = NULL;
        for (int j = 0; j < cols; j++) x[j] = frand();
        for (size_t f = 0; f < sizeof fmts / sizeof fmts[0]; f++) {
            if (!qb_format_selected(fmts[f].name)) continue;
            qb_mat first;
            qb_make(&first, fmts[f].format, fmts[f].bits, fmts[f].gs, rows, cols, 0, 0);
            free(scratch);
            scratch = malloc(sizeof(float) * (qlm_qgemv_scratch_floats(&first.m) + 1));
            const size_t bytes = qlm_storage_bytes(&first.m);
            int ncopy = (int)((cold_bytes + bytes - 1) / bytes);
            if (ncopy < 2) ncopy = 2;
            qb_mat *mats = calloc((size_t)ncopy, sizeof(qb_mat));
            mats[0] = first;
            // Copies own their code bytes, scales, zeros and codebooks (all of them stream from DRAM).
            for (int i = 1; i < ncopy; i++) {
                mats[i] = first;
                const size_t cb = fmts[f].format == QLM_FMT_F16 ? (size_t)rows * (size_t)cols * 2
                                                                 : qlm_row_bytes(fmts[f].bits, cols) * (size_t)rows;
                mats[i].codes = malloc(cb);
                memcpy(mats[i].codes, first.codes, cb);
                mats[i].m.codes = mats[i].codes;
                if (first.scales) {
                    const size_t nb = sizeof(uint16_t) * (size_t)rows * (size_t)qlm_n_groups(&first.m);
                    mats[i].scales = malloc(nb); memcpy(mats[i].scales, first.scales, nb);
                    mats[i].zeros = malloc(nb); memcpy(mats[i].zeros, first.zeros, nb);
                    mats[i].m.scales = mats[i].scales; mats[i].m.zeros = mats[i].zeros;
                }
                mats[i].lut = NULL;
                if (first.lut) {  // the codebooks stream from DRAM in a model too
                    const size_t nb = (size_t)rows << fmts[f].bits;
                    mats[i].lut = malloc(nb); memcpy(mats[i].lut, first.lut, nb);
                    mats[i].m.lut = mats[i].lut;
                }
                mats[i].perm = NULL; mats[i].rowptr = NULL; mats[i].ocol = NULL; mats[i].oval = NULL;
            }
            // Paths: the best ISA with f32 activations, with integer activations where a kernel
            // exists (printed as "<isa>+i16"), and the scalar one on the first shape.
            qlm_isa isas[3] = {best, best, QLM_ISA_SCALAR};
            int acts[3] = {QLM_ACT_F32, QLM_ACT_I16, QLM_ACT_F32};
            const int has_i16 = best == QLM_ISA_AVX512 && qlm_qgemv_i16_kernel_exists(&first.m);
            const int nisa = 3;
            for (int ii = 0; ii < nisa; ii++) {
                if (ii == 1 && !has_i16) continue;
                if (ii == 2 && (s != 0 || best == QLM_ISA_SCALAR)) continue;
                qlm_qgemv_set_act((qlm_act)acts[ii]);
                char isaname[32];
                snprintf(isaname, sizeof isaname, "%s%s", qlm_isa_name(isas[ii]), ii == 1 ? "+i16" : "");
                for (int nt = 1; nt <= 2; nt++) {
                    qlm_set_threads(nt);
                    const double tc = time_gemv(mats, ncopy, isas[ii], x, y, scratch, budget);
                    const double th = time_gemv(mats, 1, isas[ii], x, y, scratch, budget);
                    const double fl = 2.0 * rows * (double)cols;
                    char shp[32];
                    snprintf(shp, sizeof shp, "%dx%d", rows, cols);
                    printf("%-13s %-11s %10s %3d %7.3f | %8.1f %8.1f %7.1f | %8.1f %8.1f\n", fmts[f].name, shp,
                           isaname, nt, qlm_bits_per_weight(&first.m), bytes / tc / 1e9, fl / tc / 1e9,
                           tc * 1e6, bytes / th / 1e9, fl / th / 1e9);
                    fflush(stdout);
                }
            }
            for (int i = 1; i < ncopy; i++) { free(mats[i].codes); free(mats[i].scales); free(mats[i].zeros); free(mats[i].lut); }
            qb_free(&mats[0]);
            free(mats);
        }
        {  // f32 reference row
            const size_t bytes = (size_t)rows * (size_t)cols * sizeof(float);
            int ncopy = (int)((cold_bytes + bytes - 1) / bytes);
            if (ncopy < 2) ncopy = 2;
            float **W = calloc((size_t)ncopy, sizeof(float *));
            for (int i = 0; i < ncopy; i++) {
                W[i] = malloc(bytes);
                for (size_t k = 0; k < (size_t)rows * (size_t)cols; k++) W[i][k] = i == 0 ? frand() : W[0][k];
            }
            for (int nt = 1; nt <= 2; nt++) {
                qlm_set_threads(nt);
                const double tc = time_f32(W, ncopy, best, rows, cols, x, y, budget);
                const double th = time_f32(W, 1, best, rows, cols, x, y, budget);
                const double fl = 2.0 * rows * (double)cols;
                char shp[32];
                snprintf(shp, sizeof shp, "%dx%d", rows, cols);
                printf("%-13s %-11s %10s %3d %7.3f | %8.1f %8.1f %7.1f | %8.1f %8.1f\n", "f32 (dense)", shp,
                       qlm_isa_name(best), nt, 32.0, bytes / tc / 1e9, fl / tc / 1e9, tc * 1e6, bytes / th / 1e9, fl / th / 1e9);
                fflush(stdout);
            }
            for (int i = 0; i < ncopy; i++) free(W[i]);
            free(W);
        }
        free(x); free(y); free(scratch);
    }
}

// Decode ceiling: single thread, L2-resident 512x1024 matrix, timed in thread CPU time (so time
// the VM spends running other processes does not count): the rate at which one core can consume
// packed weights, independent of DRAM. Compare with the read roofline per core.
static double thread_cpu(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void run_ceiling(void) {
    const qb_fmt fmts[] = {
        {"affine2 g128", QLM_FMT_AFFINE, 2, 128}, {"affine2 g64", QLM_FMT_AFFINE, 2, 64},
        {"affine3 g128", QLM_FMT_AFFINE, 3, 128}, {"affine3 g64", QLM_FMT_AFFINE, 3, 64},
        {"affine4 g128", QLM_FMT_AFFINE, 4, 128}, {"affine4 g64", QLM_FMT_AFFINE, 4, 64},
        {"affine4 g32", QLM_FMT_AFFINE, 4, 32}, {"affine4 row", QLM_FMT_AFFINE, 4, 0},
        {"affine8 g128", QLM_FMT_AFFINE, 8, 128}, {"affine8 g64", QLM_FMT_AFFINE, 8, 64},
        {"lut2", QLM_FMT_LUT, 2, 0}, {"lut3", QLM_FMT_LUT, 3, 0}, {"lut4", QLM_FMT_LUT, 4, 0},
        {"f16", QLM_FMT_F16, 16, 0},
    };
    int rows = 512, cols = 1024;  // QB_SHAPE=RxC overrides, e.g. 576x576 (a row with an odd superblock count)
    const char *shape = getenv("QB_SHAPE");
    if (shape && *shape && (sscanf(shape, "%dx%d", &rows, &cols) != 2 || rows < 1 || cols < 1 || (size_t)rows * (size_t)cols > ((size_t)1 << 22))) {
        fprintf(stderr, "QB_SHAPE must be RxC with at most 4M weights (L2-resident), e.g. 576x576\n");
        exit(2);
    }
    // Paths: AVX-512 and AVX2 with integer activations (i16, where a kernel exists; "-" otherwise),
    // then every ISA with f32 activations.
    static const qlm_isa isas[] = {QLM_ISA_AVX512, QLM_ISA_AVX512, QLM_ISA_AVX2, QLM_ISA_AVX2, QLM_ISA_NEON, QLM_ISA_SCALAR};
    static const int acts[] = {QLM_ACT_I16, QLM_ACT_F32, QLM_ACT_I16, QLM_ACT_F32, QLM_ACT_F32, QLM_ACT_F32};
    const size_t npath = sizeof isas / sizeof isas[0];
    char names[sizeof isas / sizeof isas[0]][32];  // as printed in the header and matched by QB_PATHS
    int use[sizeof isas / sizeof isas[0]];
    for (size_t i = 0; i < npath; i++) {
        snprintf(names[i], sizeof names[i], "%s%s", qlm_isa_name(isas[i]), acts[i] == QLM_ACT_I16 ? "+i16" : "");
        use[i] = qlm_isa_supported(isas[i]) && (acts[i] != QLM_ACT_I16 || qlm_act_i16_supported()) && qb_path_selected(names[i]);
    }
    qlm_set_threads(1);
    float *x = malloc(sizeof(float) * cols), *y = malloc(sizeof(float) * rows), *scratch = NULL;
    for (int j = 0; j < cols; j++) x[j] = frand();
    printf("# decode ceiling: 1 thread, %dx%d (L2-resident), thread CPU time; Gw/s = 1e9 weights/s\n", rows, cols);
    printf("%-13s", "format");
    for (size_t i = 0; i < npath; i++) {
        if (use[i]) printf(" | %10s Gw/s   GB/s", names[i]);
    }
    printf("\n");
    for (size_t f = 0; f < sizeof fmts / sizeof fmts[0]; f++) {
        if (!qb_format_selected(fmts[f].name)) continue;
        qb_mat q;
        qb_make(&q, fmts[f].format, fmts[f].bits, fmts[f].gs, rows, cols, 0, 0);
        free(scratch);
        scratch = malloc(sizeof(float) * (qlm_qgemv_scratch_floats(&q.m) + 1));
        printf("%-13s", fmts[f].name);
        for (size_t i = 0; i < npath; i++) {
            if (!use[i]) continue;
            if (acts[i] == QLM_ACT_I16 && !qlm_qgemv_i16_kernel_exists_on(isas[i], &q.m)) {
                printf(" | %15s %6s", "-", "-");
                continue;
            }
            qlm_qgemv_set_act((qlm_act)acts[i]);
            const int reps = isas[i] == QLM_ISA_SCALAR ? 3 : 100;
            for (int k = 0; k < 5; k++) qlm_qgemv_isa(isas[i], &q.m, x, y, scratch);
            double best = 1e30;
            for (int b = 0; b < 7; b++) {
                const double t0 = thread_cpu();
                for (int k = 0; k < reps; k++) qlm_qgemv_isa(isas[i], &q.m, x, y, scratch);
                const double dt = (thread_cpu() - t0) / reps;
                if (dt < best) best = dt;
            }
            printf(" | %15.1f %6.1f", (double)rows * cols / best / 1e9, (double)qlm_storage_bytes(&q.m) / best / 1e9);
        }
        printf("\n");
        qb_free(&q);
    }
    free(x); free(y); free(scratch);
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "bench";
    if (strcmp(mode, "check") == 0) return run_check();
    if (strcmp(mode, "ceiling") == 0) {
        run_ceiling();
        return 0;
    }
    run_bench(argc > 2 && strcmp(argv[2], "quick") == 0);
    return 0;
}
#endif  // QLM_BENCH_MAIN
