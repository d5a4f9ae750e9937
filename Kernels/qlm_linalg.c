// Linear algebra and hot loops for the per-layer quantization solvers (see qlm_linalg.h).
#include "qlm_linalg.h"
#include "qlm_kernels.h"
#include "qlm_omp.h"
#include "qlm_blas.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef __APPLE__
#include <Accelerate/Accelerate.h>
#else
#include <cblas.h>
// LAPACK (Fortran ABI) as shipped inside OpenBLAS.
void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info);
void dtrtri_(const char *uplo, const char *diag, const int *n, double *a, const int *lda, int *info);
#endif

// Hot loops get AVX-512 / AVX2+FMA clones picked at load time (ifunc) on x86-64 Linux.
#if defined(__x86_64__) && defined(__linux__) && defined(__clang__)
#define QLM_HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define QLM_HOT
#endif

// ---------------------------------------------------------------------------------------------
// BLAS wrappers
// ---------------------------------------------------------------------------------------------
void qlm_la_sgemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
                  const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] = beta == 0 ? 0 : beta * C[(size_t)i * ldc + j];
        return;
    }
    qlm_blas_shared_begin();
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    qlm_blas_shared_end();
}

void qlm_la_dgemm(int transA, int transB, int M, int N, int K, double alpha, const double *A, int lda,
                  const double *B, int ldb, double beta, double *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] = beta == 0 ? 0 : beta * C[(size_t)i * ldc + j];
        return;
    }
    qlm_blas_shared_begin();
    cblas_dgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    qlm_blas_shared_end();
}

// ---------------------------------------------------------------------------------------------
// U = upper Cholesky factor of A⁻¹.
// With J the reversal: J A J = L Lᵀ (L lower) ⇒ A = Ũ Ũᵀ with Ũ = J L J upper
// ⇒ A⁻¹ = Ũ⁻ᵀ Ũ⁻¹ = (Ũ⁻¹)ᵀ (Ũ⁻¹), and Ũ⁻¹ is upper with a positive diagonal: U = Ũ⁻¹.
// Row-major A viewed column-major is Aᵀ = A, so LAPACK sees the same matrix.
// ---------------------------------------------------------------------------------------------
int qlm_chol_inverse_upper(double *A, int n) {
    if (n <= 0) return 0;
    const size_t nn = (size_t)n * n;
    double *B = (double *)malloc(nn * sizeof(double));
    if (!B) return -1;
    // B = J A J: reversing both indices of a row-major array reverses the array.
    for (size_t i = 0; i < nn; i++) B[i] = A[nn - 1 - i];
    int info = 0;
#ifdef __APPLE__
    __CLPK_integer nn_ = n, info_ = 0;   // Accelerate's CLAPACK prototypes (non-const char *)
    dpotrf_((char *)"L", &nn_, B, &nn_, &info_);
    info = (int)info_;
#else
    qlm_blas_shared_begin();
    dpotrf_("L", &n, B, &n, &info);
    qlm_blas_shared_end();
#endif
    if (info != 0) { free(B); return info; }
    // Column-major B(i, j) (i >= j) = L(i, j), stored at B[i + j n].
    // Row-major Ũ[p][q] = L(n−1−p, n−1−q) for p <= q.
    for (int p = 0; p < n; p++) {
        double *row = A + (size_t)p * n;
        for (int q = 0; q < p; q++) row[q] = 0;
        for (int q = p; q < n; q++) row[q] = B[(size_t)(n - 1 - p) + (size_t)(n - 1 - q) * n];
    }
    free(B);
    // Row-major upper Ũ is column-major lower Ũᵀ; its inverse in place is (Ũ⁻¹)ᵀ column-major,
    // i.e. Ũ⁻¹ row-major.
#ifdef __APPLE__
    __CLPK_integer n2 = n, info2 = 0;
    dtrtri_((char *)"L", (char *)"N", &n2, A, &n2, &info2);
    info = (int)info2;
#else
    qlm_blas_shared_begin();
    dtrtri_("L", "N", &n, A, &n, &info);
    qlm_blas_shared_end();
#endif
    if (info != 0) return info;
    for (int p = 0; p < n; p++)
        for (int q = 0; q < p; q++) A[(size_t)p * n + q] = 0;
    return 0;
}

double qlm_quad_trace(const float *W, const float *What, const double *H, int rows, int cols) {
    if (rows <= 0 || cols <= 0) return 0;
    const int chunk = 64;
    double *D = (double *)malloc((size_t)chunk * cols * sizeof(double));
    double *DH = (double *)malloc((size_t)chunk * cols * sizeof(double));
    double total = 0;
    for (int r0 = 0; r0 < rows; r0 += chunk) {
        const int m = rows - r0 < chunk ? rows - r0 : chunk;
        for (int i = 0; i < m; i++)
            for (int j = 0; j < cols; j++) {
                const size_t k = (size_t)(r0 + i) * cols + j;
                D[(size_t)i * cols + j] = (double)W[k] - (double)What[k];
            }
        qlm_la_dgemm(0, 0, m, cols, cols, 1.0, D, cols, H, cols, 0.0, DH, cols);
        for (size_t k = 0; k < (size_t)m * cols; k++) total += D[k] * DH[k];
    }
    free(D);
    free(DH);
    return total;
}

double qlm_sym_lambda_max(const double *A, int n, int iters) {
    if (n <= 0) return 0;
    double *v = (double *)malloc((size_t)n * sizeof(double));
    double *w = (double *)malloc((size_t)n * sizeof(double));
    // Deterministic start with components of every sign pattern-free magnitude.
    double nrm = 0;
    for (int i = 0; i < n; i++) { v[i] = 1.0 + 0.01 * (double)((i * 7919) % 101) / 101.0; nrm += v[i] * v[i]; }
    nrm = sqrt(nrm);
    for (int i = 0; i < n; i++) v[i] /= nrm;
    double lambda = 0;
    for (int it = 0; it < iters; it++) {
        qlm_blas_shared_begin();
        cblas_dgemv(CblasRowMajor, CblasNoTrans, n, n, 1.0, A, n, v, 1, 0.0, w, 1);
        qlm_blas_shared_end();
        double rq = 0, wn = 0;
        for (int i = 0; i < n; i++) { rq += v[i] * w[i]; wn += w[i] * w[i]; }
        lambda = rq;
        wn = sqrt(wn);
        if (wn == 0) break;
        for (int i = 0; i < n; i++) v[i] = w[i] / wn;
    }
    free(v);
    free(w);
    return lambda;
}

// Quickselect (3-way partition): the value at position k (0-based) of x sorted descending.
static float select_kth_largest(float *x, ptrdiff_t n, ptrdiff_t k) {
    ptrdiff_t lo = 0, hi = n - 1;
    while (lo < hi) {
        const ptrdiff_t mid = lo + (hi - lo) / 2;
        const float a = x[lo], b = x[mid], c = x[hi];
        const float pivot = (a > b) ? ((b > c) ? b : (a > c ? c : a)) : ((a > c) ? a : (b > c ? c : b));
        // [lo, lt) > pivot, [lt, gt] == pivot, (gt, hi] < pivot
        ptrdiff_t lt = lo, i = lo, gt = hi;
        while (i <= gt) {
            const float v = x[i];
            if (v > pivot) { x[i] = x[lt]; x[lt] = v; lt++; i++; }
            else if (v < pivot) { x[i] = x[gt]; x[gt] = v; gt--; }
            else i++;
        }
        if (k < lt) hi = lt - 1;
        else if (k > gt) lo = gt + 1;
        else return pivot;
    }
    return x[lo];
}

// Radix select on the bit patterns of |x| (monotone in |x| for non-NaN floats): two histogram
// passes narrow the k-th largest to one bucket of 2^10 patterns, then quickselect finishes.
float qlm_kth_largest_abs(const float *x, size_t n, size_t k, float *scratch) {
    if (n == 0 || k == 0) return INFINITY;
    if (k > n) k = n;
    uint32_t *keys = (uint32_t *)scratch;
    size_t *hist = (size_t *)calloc(2048, sizeof(size_t));
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, x + i, 4);
        u &= 0x7fffffffu;
        keys[i] = u;
        hist[u >> 20]++;
    }
    // Bucket (top 11 bits) holding the k-th largest; `above` = keys in higher buckets.
    size_t above = 0;
    int b1 = 2047;
    while (b1 > 0 && above + hist[b1] < k) { above += hist[b1]; b1--; }
    memset(hist, 0, 2048 * sizeof(size_t));
    for (size_t i = 0; i < n; i++)
        if ((keys[i] >> 20) == (uint32_t)b1) hist[(keys[i] >> 10) & 1023]++;
    int b2 = 1023;
    while (b2 > 0 && above + hist[b2] < k) { above += hist[b2]; b2--; }
    const uint32_t prefix = ((uint32_t)b1 << 10) | (uint32_t)b2;
    size_t m = 0;
    float *cand = (float *)malloc((hist[b2] > 0 ? hist[b2] : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++)
        if ((keys[i] >> 10) == prefix) { float f; memcpy(&f, keys + i, 4); cand[m++] = f; }
    free(hist);
    const float r = m > 0 ? select_kth_largest(cand, (ptrdiff_t)m, (ptrdiff_t)(k - above) - 1) : 0;
    free(cand);
    return r;
}

// ---------------------------------------------------------------------------------------------
// Grid quantization of one column (all rows)
// ---------------------------------------------------------------------------------------------
#define ROUND_MAGIC 12582912.0f   // 1.5·2^23: (t + M) − M rounds half to even for |t| < 2^22

static inline void quantize_col(const qlm_grid *g, int c, const float *v, float *q, uint8_t *code) {
    const int rows = g->rows;
    if (g->kind == QLM_GRID_AFFINE) {
        const size_t off = (size_t)(c / g->group_size) * rows;
        const float *s = g->scaleT + off, *z = g->zeroT + off;
        const float maxq = (float)g->maxq;
        for (int r = 0; r < rows; r++) {
            float t = v[r] / s[r] + z[r];
            t = fminf(fmaxf(t, -1.0f), maxq + 1.0f);
            t = (t + ROUND_MAGIC) - ROUND_MAGIC;
            t = fminf(fmaxf(t, 0.0f), maxq);
            code[r] = (uint8_t)t;
            q[r] = s[r] * (t - z[r]);
        }
    } else {
        const int K = g->K;
        for (int r = 0; r < rows; r++) {
            const float *m = g->mids + (size_t)r * (K - 1);
            const float x = v[r];
            int k = 0;
            for (int i = 0; i < K - 1; i++) k += x > m[i];
            code[r] = (uint8_t)k;
            q[r] = g->lut[(size_t)r * K + k];
        }
    }
}

void qlm_grid_quantize_col(const qlm_grid *g, int c, const float *v, float *q, uint8_t *code) {
    quantize_col(g, c, v, q, code);
}

QLM_HOT void qlm_gptq_columns(const qlm_grid *g, float *XT, int c0, int c1, int cend, const float *U, int ldu,
                      const uint8_t *keepT, float *ET, int ebase, uint8_t *codesT) {
    const int rows = g->rows;
    float *q = (float *)malloc((size_t)rows * sizeof(float));
    for (int c = c0; c < c1; c++) {
        float *w = XT + (size_t)c * rows;
        uint8_t *code = codesT + (size_t)c * rows;
        quantize_col(g, c, w, q, code);
        if (keepT) {
            const uint8_t *keep = keepT + (size_t)c * rows;
            for (int r = 0; r < rows; r++) if (!keep[r]) q[r] = w[r];
        }
        const float d = U[(size_t)c * ldu + c];
        float *e = ET + (size_t)(c - ebase) * rows;
        for (int r = 0; r < rows; r++) { e[r] = (w[r] - q[r]) / d; w[r] = q[r]; }
        const float *u = U + (size_t)c * ldu;
        for (int c2 = c + 1; c2 < cend; c2++) {
            const float f = u[c2];
            if (f == 0) continue;
            float *x = XT + (size_t)c2 * rows;
            for (int r = 0; r < rows; r++) x[r] -= f * e[r];
        }
    }
    free(q);
}

QLM_HOT void qlm_cd_columns(const qlm_grid *g, int round, float *WhT, const float *TT, const uint8_t *dead,
                    int c0, int c1, float *Gblk, const float *S, int lds, float *dDT, uint8_t *codesT) {
    const int rows = g->rows;
    float *u = (float *)malloc((size_t)rows * sizeof(float));
    float *q = (float *)malloc((size_t)rows * sizeof(float));
    for (int c = c0; c < c1; c++) {
        float *wh = WhT + (size_t)c * rows;
        const float *gc = Gblk + (size_t)(c - c0) * rows;
        if (dead && dead[c]) memcpy(u, TT + (size_t)c * rows, (size_t)rows * sizeof(float));
        else for (int r = 0; r < rows; r++) u[r] = wh[r] + gc[r];
        if (round) quantize_col(g, c, u, q, codesT + (size_t)c * rows);
        else memcpy(q, u, (size_t)rows * sizeof(float));
        float *dd = dDT + (size_t)(c - c0) * rows;
        for (int r = 0; r < rows; r++) { dd[r] = wh[r] - q[r]; wh[r] = q[r]; }
        const float *srow = S + (size_t)c * lds;
        for (int c2 = c + 1; c2 < c1; c2++) {
            const float f = srow[c2];
            if (f == 0) continue;
            float *x = Gblk + (size_t)(c2 - c0) * rows;
            for (int r = 0; r < rows; r++) x[r] += f * dd[r];
        }
    }
    free(u);
    free(q);
}

// ---------------------------------------------------------------------------------------------
// LeanQuant affine (min, max) search
// ---------------------------------------------------------------------------------------------
static inline float f16r(float x) { return qlm_f16_to_f32(qlm_f32_to_f16(x)); }
static inline float safe_scale(float s) {
    const float r = f16r(s);
    return r >= 6.1035156e-05f ? r : 6.1035156e-05f;
}
// Mirrors AffineGrid.init(min:max:bits:sym:).
static inline void affine_params(float lo, float hi, int bits, int sym, float *scale, float *zero) {
    if (sym) {
        const float m = fmaxf(fabsf(lo), fabsf(hi));
        *zero = (float)(1 << (bits - 1));
        *scale = safe_scale(m / (float)(1 << (bits - 1)));
    } else {
        *scale = safe_scale((hi - lo) / (float)((1 << bits) - 1));
        *zero = f16r(-lo / *scale);
    }
}

static inline float weighted_err(const float *x, const float *s, int n, float scale, float zero, float maxq) {
#ifdef __clang__
#pragma clang fp reassociate(on)
#endif
    float acc = 0;
    for (int j = 0; j < n; j++) {
        float t = x[j] / scale + zero;
        t = fminf(fmaxf(t, -1.0f), maxq + 1.0f);
        t = (t + ROUND_MAGIC) - ROUND_MAGIC;
        t = fminf(fmaxf(t, 0.0f), maxq);
        const float d = x[j] - scale * (t - zero);
        acc += s[j] * d * d;
    }
    return acc;
}

// Best (lo', hi') for one row's kept values x[0..m) with weights w (see qlm_affine_search).
QLM_HOT void qlm_affine_search_row(const float *x, const float *w, int m, int bits, int sym, float *lo_out, float *hi_out) {
    const float maxq = (float)((1 << bits) - 1);
    float lo = INFINITY, hi = -INFINITY;
    for (int j = 0; j < m; j++) { lo = fminf(lo, x[j]); hi = fmaxf(hi, x[j]); }
    if (m == 0 || !(lo < hi)) {
        if (m == 0) { lo = 0; hi = 0; }
        *lo_out = lo;
        *hi_out = hi;
        return;
    }
    const float range = hi - lo;
    int besta = 0, bestb = 0;
    float best = INFINITY;
    for (int stage = 0; stage < 2; stage++) {
        const int ca = besta, cb = bestb;
        const int a0 = stage == 0 ? 0 : ca - 4, a1 = stage == 0 ? 45 : ca + 4;
        const int b0 = stage == 0 ? 0 : cb - 4, b1 = stage == 0 ? 45 : cb + 4;
        const int step = stage == 0 ? 5 : 1;
        for (int a = a0; a <= a1; a += step) {
            if (a < 0 || a > 49) continue;
            for (int b = b0; b <= b1; b += step) {
                if (b < 0 || b > 49) continue;
                if (stage == 1 && a == ca && b == cb) continue;   // already evaluated
                const float l = lo + (float)a * range / 100.0f;
                const float h = hi - (float)b * range / 100.0f;
                float sc, z;
                affine_params(l, h, bits, sym, &sc, &z);
                const float e = weighted_err(x, w, m, sc, z, maxq);
                if (e < best) { best = e; besta = a; bestb = b; }
            }
        }
    }
    *lo_out = besta == 0 ? lo : lo + (float)besta * range / 100.0f;
    *hi_out = bestb == 0 ? hi : hi - (float)bestb * range / 100.0f;
}

void qlm_affine_search(const float *XT, int rows, int c0, int n, const float *s, const uint8_t *keepT,
                       int bits, int sym, float *lo_out, float *hi_out) {
#ifdef _OPENMP
    const int nt = qlm_get_threads();
#pragma omp parallel num_threads(nt) if (nt > 1 && rows >= 64)
#endif
    {
        float *x = (float *)malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
        float *w = (float *)malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (int r = 0; r < rows; r++) {
            int m = 0;
            for (int j = 0; j < n; j++) {
                const size_t k = (size_t)(c0 + j) * rows + r;
                if (keepT && !keepT[k]) continue;
                x[m] = XT[k];
                w[m] = s[j];
                m++;
            }
            qlm_affine_search_row(x, w, m, bits, sym, lo_out + r, hi_out + r);
        }
        free(x);
        free(w);
    }
}

// ---------------------------------------------------------------------------------------------
// Gᵀ += alpha · S[k0:k1, :]ᵀ · X   (X [k1 − k0, rows]); sparse X goes through row-wise axpys.
// ---------------------------------------------------------------------------------------------
QLM_HOT static void sparse_rows_update(float *GT, int rows, int cols, const float *S, int lds, int k0, int k1,
                                       const float *X, float alpha, float *scratch, uint8_t *touched, int *list) {
    int nt = 0;
    for (int k = k0; k < k1; k++) {
        const float *xk = X + (size_t)(k - k0) * rows;
        const float *sk = S + (size_t)k * lds;
        for (int r = 0; r < rows; r++) {
            const float v = xk[r];
            if (v == 0) continue;
            if (!touched[r]) { touched[r] = 1; list[nt++] = r; }
            float *t = scratch + (size_t)r * cols;
            const float a = alpha * v;
            for (int j = 0; j < cols; j++) t[j] += a * sk[j];
        }
    }
    for (int i = 0; i < nt; i++) {
        const int r = list[i];
        float *t = scratch + (size_t)r * cols;
        for (int j = 0; j < cols; j++) { GT[(size_t)j * rows + r] += t[j]; t[j] = 0; }
        touched[r] = 0;
    }
}

void qlm_update_gt(float *GT, int rows, int cols, const float *S, int lds, int k0, int k1, const float *X,
                   float alpha, float *scratch) {
    if (k1 <= k0) return;
    const size_t total = (size_t)(k1 - k0) * rows;
    size_t nnz = 0;
    for (size_t i = 0; i < total; i++) nnz += X[i] != 0;
    if (nnz == 0) return;
    // An axpy of length cols per nonzero, vs sgemm at roughly 10x the rate per flop.
    if (scratch == NULL || nnz * 8 >= total) {
        qlm_la_sgemm(1, 0, cols, rows, k1 - k0, alpha, S + (size_t)k0 * lds, lds, X, rows, 1, GT, rows);
        return;
    }
    uint8_t *touched = (uint8_t *)calloc((size_t)rows, 1);
    int *list = (int *)malloc((size_t)rows * sizeof(int));
    sparse_rows_update(GT, rows, cols, S, lds, k0, k1, X, alpha, scratch, touched, list);
    free(touched);
    free(list);
}

// ---------------------------------------------------------------------------------------------
// TesseraQ element-wise steps
// ---------------------------------------------------------------------------------------------
static inline float tq_exp(float x) {  // e^x for |x| <= 87: 2^n · p(r), r = x − n·ln2 in [−ln2/2, ln2/2]
    x = x < -87.0f ? -87.0f : (x > 87.0f ? 87.0f : x);
    const float n = floorf(x * 1.44269504f + 0.5f);
    const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { float f; int32_t i; } u = {.i = ((int32_t)n + 127) << 23};
    return p * u.f;
}

float qlm_sigmoid(float x) { return 1.0f / (1.0f + tq_exp(-x)); }

QLM_HOT void qlm_tq_forward(int rows, int cols, int g, const float *W, const float *base, const float *nu,
                            const int8_t *hard, const float *sp, const float *z, float maxq, float *D, float *dnu,
                            float *qz) {
    const int ng = (cols + g - 1) / g;
    for (int r = 0; r < rows; r++) {
        for (int k = 0; k < ng; k++) {
            const int c0 = k * g, c1 = c0 + g < cols ? c0 + g : cols;
            const float s = sp[(size_t)r * ng + k], zz = z[(size_t)r * ng + k];
            const size_t o = (size_t)r * (size_t)cols;
            for (int c = c0; c < c1; c++) {
                const size_t i = o + (size_t)c;
                const float sg = 1.0f / (1.0f + tq_exp(-nu[i])), raw = 1.2f * sg - 0.1f;
                float h = raw <= 0.0f ? 0.0f : (raw >= 1.0f ? 1.0f : raw);
                float dh = (raw > 0.0f && raw < 1.0f) ? 1.2f * sg * (1.0f - sg) : 0.0f;
                if (hard[i] >= 0) { h = (float)hard[i]; dh = 0.0f; }
                float code = base[i] + h;
                if (code < 0.0f) { code = 0.0f; dh = 0.0f; }
                if (code > maxq) { code = maxq; dh = 0.0f; }
                const float v = code - zz;
                D[i] = s * v - W[i];
                dnu[i] = s * dh;
                qz[i] = v;
            }
        }
    }
}

QLM_HOT void qlm_tq_adam(int rows, int cols, int g, const float *G, const float *dnu, const float *qz, const float *dsp,
                         const int8_t *hard, float *nu, float *m, float *v, float *gF, float lr, float b1, float b2,
                         float c1, float c2, float eps) {
    const int ng = (cols + g - 1) / g;
    for (int r = 0; r < rows; r++) {
        for (int k = 0; k < ng; k++) {
            const int c0 = k * g, c1e = c0 + g < cols ? c0 + g : cols;
            const size_t o = (size_t)r * (size_t)cols;
            float lane[16] = {0};  // Σ G·qz in 16 fixed lanes (vectorises without reassociation)
            int c = c0;
            for (; c + 16 <= c1e; c += 16)
                for (int l = 0; l < 16; l++) lane[l] += G[o + (size_t)c + l] * qz[o + (size_t)c + l];
            for (; c < c1e; c++) lane[c & 15] += G[o + (size_t)c] * qz[o + (size_t)c];
            float acc = 0.0f;
            for (int l = 0; l < 16; l++) acc += lane[l];
            for (c = c0; c < c1e; c++) {
                const size_t i = o + (size_t)c;
                const float gr = G[i] * dnu[i];
                const float mi = b1 * m[i] + (1.0f - b1) * gr, vi = b2 * v[i] + (1.0f - b2) * gr * gr;
                const int soft = hard[i] < 0;
                m[i] = soft ? mi : m[i];
                v[i] = soft ? vi : v[i];
                nu[i] = soft ? nu[i] - lr * (mi * c1) / (sqrtf(vi * c2) + eps) : nu[i];
            }
            gF[(size_t)r * ng + k] += acc * dsp[(size_t)r * ng + k];
        }
    }
}
