// Transformer ops in f32: norms, RoPE, SwiGLU, attention, and the BLAS entry points.
// These are small next to the GEMVs (decode) and GEMMs (prefill); they are written plainly so
// the compiler vectorises them, and parallelised over rows/heads where that pays.
#include "qlm_kernels.h"
#include "qlm_omp.h"
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#ifdef __APPLE__
#include <Accelerate/Accelerate.h>
#else
#include <cblas.h>
#endif
#include "qlm_blas.h"

// ---------------------------------------------------------------------------------------------
// Vectorised exp for softmax, SwiGLU and log-sum-exp. glibc's scalar expf costs ~5-10 ns; a
// 2048-token window needs ~10^9 of them (attention + NLL over the vocabulary), so these matter.
// Cephes-style: x = n·ln2 + r, |r| <= ln2/2, degree-6 polynomial; max error ~2 ulp on [-87, 88].
// ---------------------------------------------------------------------------------------------
#if defined(__x86_64__)
#include <immintrin.h>
#define EXP_HI 88.3762626647949f
#define EXP_LO -87.3365447505531f
#define LOG2E 1.44269504088896341f
#define LN2_HI 0.693359375f
#define LN2_LO -2.12194440e-4f
#define P0 1.9875691500E-4f
#define P1 1.3981999507E-3f
#define P2 8.3334519073E-3f
#define P3 4.1665795894E-2f
#define P4 1.6666665459E-1f
#define P5 5.0000001201E-1f

__attribute__((target("avx512f"))) static inline __m512 exp16(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(EXP_LO)), _mm512_set1_ps(EXP_HI));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
    __m512 p = _mm512_set1_ps(P0);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(P1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(P2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(P3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(P4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(P5));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

__attribute__((target("avx2,fma"))) static inline __m256 exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(EXP_LO)), _mm256_set1_ps(EXP_HI));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    __m256 p = _mm256_set1_ps(P0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P5));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// x[i] = exp((x[i] - shift) * scale); returns the sum (f32 lanes, then double).
__attribute__((target("avx512f"))) static double exp_shift_sum_avx512(float *x, int n, float shift, float scale, int store) {
    const __m512 vs = _mm512_set1_ps(shift), vk = _mm512_set1_ps(scale);
    __m512 acc = _mm512_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 e = exp16(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i), vs), vk));
        if (store) _mm512_storeu_ps(x + i, e);
        acc = _mm512_add_ps(acc, e);
    }
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        const __m512 e = exp16(_mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vs), vk));
        if (store) _mm512_mask_storeu_ps(x + i, m, e);
        acc = _mm512_add_ps(acc, _mm512_maskz_mov_ps(m, e));
    }
    return (double)_mm512_reduce_add_ps(acc);
}

__attribute__((target("avx2,fma"))) static double exp_shift_sum_avx2(float *x, int n, float shift, float scale, int store) {
    const __m256 vs = _mm256_set1_ps(shift), vk = _mm256_set1_ps(scale);
    __m256 acc = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 e = exp8(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vs), vk));
        if (store) _mm256_storeu_ps(x + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    float lanes[8] __attribute__((aligned(32)));  // one 32-byte store, 8 loads: never split across a cache line
    _mm256_storeu_ps(lanes, acc);
    double s = 0.0;
    for (int k = 0; k < 8; k++) s += lanes[k];
    for (; i < n; i++) {
        const float e = expf((x[i] - shift) * scale);
        if (store) x[i] = e;
        s += e;
    }
    return s;
}

__attribute__((target("avx512f"))) static void swiglu_avx512(float *h, const float *g, const float *u, size_t n) {
    size_t i = 0;
    const __m512 one = _mm512_set1_ps(1.0f);
    for (; i + 16 <= n; i += 16) {
        const __m512 x = _mm512_loadu_ps(g + i);
        const __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), x));
        _mm512_storeu_ps(h + i, _mm512_mul_ps(_mm512_div_ps(x, _mm512_add_ps(one, e)), _mm512_loadu_ps(u + i)));
    }
    for (; i < n; i++) h[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

__attribute__((target("avx2,fma"))) static void swiglu_avx2(float *h, const float *g, const float *u, size_t n) {
    size_t i = 0;
    const __m256 one = _mm256_set1_ps(1.0f);
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_loadu_ps(g + i);
        const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
        _mm256_storeu_ps(h + i, _mm256_mul_ps(_mm256_div_ps(x, _mm256_add_ps(one, e)), _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++) h[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}
#endif

static double exp_shift_sum_scalar(float *x, int n, float shift, float scale, int store) {
    double s = 0.0;
    for (int i = 0; i < n; i++) {
        const float e = expf((x[i] - shift) * scale);
        if (store) x[i] = e;
        s += e;
    }
    return s;
}

// Dispatch on the active ISA (NEON and scalar take the portable loop).
static double exp_shift_sum(float *x, int n, float shift, float scale, int store) {
#if defined(__x86_64__)
    switch (qlm_isa_active()) {
    case QLM_ISA_AVX512: return exp_shift_sum_avx512(x, n, shift, scale, store);
    case QLM_ISA_AVX2: return exp_shift_sum_avx2(x, n, shift, scale, store);
    default: break;
    }
#endif
    return exp_shift_sum_scalar(x, n, shift, scale, store);
}

static float max_f32(const float *x, int n) {
    float m0 = -INFINITY, m1 = -INFINITY, m2 = -INFINITY, m3 = -INFINITY;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        m0 = x[i] > m0 ? x[i] : m0; m1 = x[i + 1] > m1 ? x[i + 1] : m1;
        m2 = x[i + 2] > m2 ? x[i + 2] : m2; m3 = x[i + 3] > m3 ? x[i + 3] : m3;
    }
    for (; i < n; i++) m0 = x[i] > m0 ? x[i] : m0;
    m0 = m1 > m0 ? m1 : m0; m2 = m3 > m2 ? m3 : m2;
    return m2 > m0 ? m2 : m0;
}

double qlm_exp_shift_sum_ref(float *x, int n, float shift, float scale) { return exp_shift_sum_scalar(x, n, shift, scale, 1); }
double qlm_exp_shift_sum(float *x, int n, float shift, float scale) { return exp_shift_sum(x, n, shift, scale, 1); }

void qlm_sgemm_nt(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                  float *C, int ldc, float beta) {
    qlm_blas_shared_begin();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
    qlm_blas_shared_end();
}

void qlm_sgemm_nn(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                  float *C, int ldc, float beta) {
    qlm_blas_shared_begin();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
    qlm_blas_shared_end();
}

void qlm_rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    float ss = 0.0f;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    const float inv = 1.0f / sqrtf(ss / (float)n + eps);
    for (int i = 0; i < n; i++) out[i] = x[i] * inv * w[i];
}

void qlm_rmsnorm_rows(float *out, const float *x, const float *w, int T, int n, float eps) {
    for (int t = 0; t < T; t++) qlm_rmsnorm(out + (size_t)t * n, x + (size_t)t * n, w, n, eps);
}

void qlm_rope_table(float *cs, float *sn, int T, int half, int pos0, const float *inv_freq) {
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < half; i++) {
            // Angle in double: positions times frequencies near 1 lose digits in f32.
            const double a = (double)(pos0 + t) * (double)inv_freq[i];
            cs[(size_t)t * half + i] = (float)cos(a);
            sn[(size_t)t * half + i] = (float)sin(a);
        }
    }
}

void qlm_rope(float *x, int T, int n_heads, int head_dim, const float *cs, const float *sn) {
    const int half = head_dim / 2;
    for (int t = 0; t < T; t++) {
        const float *c = cs + (size_t)t * half, *s = sn + (size_t)t * half;
        float *row = x + (size_t)t * n_heads * head_dim;
        for (int h = 0; h < n_heads; h++) {
            float *v = row + (size_t)h * head_dim;
            for (int i = 0; i < half; i++) {
                const float a = v[i], b = v[i + half];
                v[i] = a * c[i] - b * s[i];
                v[i + half] = b * c[i] + a * s[i];
            }
        }
    }
}

void qlm_swiglu_ref(float *h, const float *g, const float *u, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const float x = g[i];
        h[i] = x / (1.0f + expf(-x)) * u[i];
    }
}

void qlm_swiglu(float *h, const float *g, const float *u, size_t n) {
#if defined(__x86_64__)
    const qlm_isa isa = qlm_isa_active();
    if (isa == QLM_ISA_AVX512 || isa == QLM_ISA_AVX2) {
        if (isa == QLM_ISA_AVX512) swiglu_avx512(h, g, u, n);
        else swiglu_avx2(h, g, u, n);
        return;
    }
#endif
    qlm_swiglu_ref(h, g, u, n);
}

void qlm_softmax(float *x, int n) {
    const float mx = max_f32(x, n);
    const float inv = (float)(1.0 / exp_shift_sum(x, n, mx, 1.0f, 1));
    for (int i = 0; i < n; i++) x[i] *= inv;
}

double qlm_nll_from_logits_ref(const float *logits, int n, int target) {
    float mx = -INFINITY;
    for (int i = 0; i < n; i++) mx = logits[i] > mx ? logits[i] : mx;
    double s = 0.0;
    for (int i = 0; i < n; i++) s += exp((double)(logits[i] - mx));
    return log(s) + (double)mx - (double)logits[target];
}

double qlm_nll_from_logits(const float *logits, int n, int target) {
    const float mx = max_f32(logits, n);
    // store = 0: the logits are only read.
    const double s = exp_shift_sum((float *)logits, n, mx, 1.0f, 0);
    return log(s) + (double)mx - (double)logits[target];
}

// Prefill attention goes through BLAS: the query heads sharing one KV head (GQA group) are packed
// into one matrix so each BLAS call is large, and queries go in chunks so the causal upper
// triangle beyond each chunk is never computed (about half the work of a full T×T score matrix).
// Nothing here uses OpenMP: prefill runs on BLAS threads only, so the two thread pools never
// spin against each other on the same cores.
#define QLM_ATTN_CHUNK 256
#define QLM_ATTN_BLAS_MIN_T 16

size_t qlm_attention_scratch_floats(int T, int n_ctx, int n_heads, int n_kv_heads, int head_dim) {
    if (T >= QLM_ATTN_BLAS_MIN_T) {
        const size_t rows = (size_t)(n_heads / n_kv_heads) * (size_t)(T < QLM_ATTN_CHUNK ? T : QLM_ATTN_CHUNK);
        return rows * (size_t)n_ctx + 2 * rows * (size_t)head_dim;
    }
    return (size_t)T * (size_t)n_heads * (size_t)n_ctx;
}

// softmax(scale · s[0..n_valid)) in place.
static void causal_softmax_row(float *s, int n_valid, float scale) {
    const float mx = max_f32(s, n_valid);
    const float inv = (float)(1.0 / exp_shift_sum(s, n_valid, mx, scale, 1));
    for (int j = 0; j < n_valid; j++) s[j] *= inv;
}

// One query against `valid` cached keys: s = softmax(scale · K q), o = Vᵀ s. Decode-time
// attention; the dot products need explicit SIMD because f32 reductions do not auto-vectorise.
// H = 1: K and V rows are f16 (the f16 KV cache), read as their f32 values.
static inline float kv_at(const void *base, size_t i, const int H) {
    return H ? qlm_f16_to_f32(((const uint16_t *)base)[i]) : ((const float *)base)[i];
}

static inline void attend_one_scalar_h(const float *qv, const void *K, const void *V, int kvstride, int valid,
                                       int hd, float scale, float *s, float *o, const int H) {
    for (int j = 0; j < valid; j++) {
        float d = 0.0f;
        for (int i = 0; i < hd; i++) d += qv[i] * kv_at(K, (size_t)j * kvstride + (size_t)i, H);
        s[j] = d;
    }
    causal_softmax_row(s, valid, scale);
    for (int i = 0; i < hd; i++) o[i] = 0.0f;
    for (int j = 0; j < valid; j++) {
        const float p = s[j];
        for (int i = 0; i < hd; i++) o[i] += p * kv_at(V, (size_t)j * kvstride + (size_t)i, H);
    }
}

#if defined(__x86_64__)
// r[u] = Σ lanes of a[u], u = 0..15 (a is clobbered).
__attribute__((target("avx512f"))) static inline __m512 hsum16_avx512(__m512 a[16]) {
    // Level 1: c_i (i < 8) quarters = [a_i q0+q2, a_i q1+q3, a_{i+8} q0+q2, a_{i+8} q1+q3].
    for (int i = 0; i < 8; i++)
        a[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a[i], a[i + 8], 0x44), _mm512_shuffle_f32x4(a[i], a[i + 8], 0xEE));
    // Level 2: d_i (i < 4) quarters = 4-lane partials of a_i, a_{i+8}, a_{i+4}, a_{i+12}.
    for (int i = 0; i < 4; i++)
        a[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a[i], a[i + 4], 0x88), _mm512_shuffle_f32x4(a[i], a[i + 4], 0xDD));
    // Level 3: within each 128-bit quarter k, lane m = full sum of d_m's quarter k.
    const __m512 t0 = _mm512_add_ps(_mm512_unpacklo_ps(a[0], a[1]), _mm512_unpackhi_ps(a[0], a[1]));
    const __m512 t1 = _mm512_add_ps(_mm512_unpacklo_ps(a[2], a[3]), _mm512_unpackhi_ps(a[2], a[3]));
    const __m512 r = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t0), _mm512_castps_pd(t1))),
                                   _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t0), _mm512_castps_pd(t1))));
    // r = sums of a[0..3], a[8..11], a[4..7], a[12..15]: swap the middle quarters.
    return _mm512_shuffle_f32x4(r, r, 0xD8);
}

// NV = hd / 16 as a compile-time constant where possible: with a runtime count the accumulators
// live on the stack and the V loop becomes a store-to-load chain (measured: ~10 cycles per FMA).
// 16 K/V values of row `p` at element offset `off` as f32 (H = 1: f16 rows).
__attribute__((target("avx512f"), always_inline)) static inline __m512 kv_load512(const void *p, size_t off, const int H) {
    return H ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)p + off)))
             : _mm512_loadu_ps((const float *)p + off);
}

__attribute__((target("avx512f"), always_inline)) static inline void attend_one_avx512_nv(
    const float *qv, const void *K, const void *V, int kvstride, int valid, const int NV, float scale, float *s, float *o,
    const int H) {
    __m512 qr[16], acc0[16], acc1[16];
    for (int v = 0; v < NV; v++) qr[v] = _mm512_loadu_ps(qv + 16 * v);
    // Scores 16 keys at a time: 16 lane-wise partial dot products, then one transposing
    // reduction tree (3 shuffle levels, ~46 ops) instead of 16 horizontal sums (~7 ops each).
    int j = 0;
    for (; j + 16 <= valid; j += 16) {
        __m512 a[16];
        for (int u = 0; u < 16; u++) {
            const size_t kv = (size_t)(j + u) * kvstride;
            __m512 d = _mm512_mul_ps(qr[0], kv_load512(K, kv, H));
            for (int v = 1; v < NV; v++) d = _mm512_fmadd_ps(qr[v], kv_load512(K, kv + 16 * (size_t)v, H), d);
            a[u] = d;
        }
        _mm512_storeu_ps(s + j, hsum16_avx512(a));
    }
    for (; j < valid; j++) {
        const size_t kv = (size_t)j * kvstride;
        __m512 d = _mm512_mul_ps(qr[0], kv_load512(K, kv, H));
        for (int v = 1; v < NV; v++) d = _mm512_fmadd_ps(qr[v], kv_load512(K, kv + 16 * (size_t)v, H), d);
        s[j] = _mm512_reduce_add_ps(d);
    }
    causal_softmax_row(s, valid, scale);
    // o = Σ_j p_j · v_j with two accumulator sets (even / odd keys) to halve the FMA chains.
    for (int v = 0; v < NV; v++) acc0[v] = acc1[v] = _mm512_setzero_ps();
    j = 0;
    for (; j + 2 <= valid; j += 2) {
        const __m512 p0 = _mm512_set1_ps(s[j]), p1 = _mm512_set1_ps(s[j + 1]);
        const size_t v0 = (size_t)j * kvstride, v1 = v0 + (size_t)kvstride;
        for (int v = 0; v < NV; v++) {
            acc0[v] = _mm512_fmadd_ps(p0, kv_load512(V, v0 + 16 * (size_t)v, H), acc0[v]);
            acc1[v] = _mm512_fmadd_ps(p1, kv_load512(V, v1 + 16 * (size_t)v, H), acc1[v]);
        }
    }
    if (j < valid) {
        const __m512 p0 = _mm512_set1_ps(s[j]);
        const size_t v0 = (size_t)j * kvstride;
        for (int v = 0; v < NV; v++) acc0[v] = _mm512_fmadd_ps(p0, kv_load512(V, v0 + 16 * (size_t)v, H), acc0[v]);
    }
    for (int v = 0; v < NV; v++) _mm512_storeu_ps(o + 16 * v, _mm512_add_ps(acc0[v], acc1[v]));
}

__attribute__((target("avx512f"), always_inline)) static inline void attend_one_avx512_h(
    const float *qv, const void *K, const void *V, int kvstride, int valid, int hd, float scale, float *s, float *o, const int H) {
    switch (hd) {
    case 64: attend_one_avx512_nv(qv, K, V, kvstride, valid, 4, scale, s, o, H); return;
    case 128: attend_one_avx512_nv(qv, K, V, kvstride, valid, 8, scale, s, o, H); return;
    case 32: attend_one_avx512_nv(qv, K, V, kvstride, valid, 2, scale, s, o, H); return;
    case 16: attend_one_avx512_nv(qv, K, V, kvstride, valid, 1, scale, s, o, H); return;
    default: break;
    }
    if (hd % 16 != 0 || hd > 256) { attend_one_scalar_h(qv, K, V, kvstride, valid, hd, scale, s, o, H); return; }
    attend_one_avx512_nv(qv, K, V, kvstride, valid, hd / 16, scale, s, o, H);  // other multiples of 16
}

// One instance per cache precision (H is a compile-time constant inside each).
__attribute__((target("avx512f"))) static void attend_one_avx512(const float *qv, const void *K, const void *V, int kvstride,
                                                                int valid, int hd, float scale, float *s, float *o, int H) {
    if (H) attend_one_avx512_h(qv, K, V, kvstride, valid, hd, scale, s, o, 1);
    else attend_one_avx512_h(qv, K, V, kvstride, valid, hd, scale, s, o, 0);
}

// The G query heads that share one KV head (GQA), in one pass over the keys and values: each K and
// V row is loaded (and, from the f16 cache, converted) once for all G instead of once per head.
// Per query the arithmetic is attend_one_avx512_nv's, in the same order (the same FMA chains, the
// same reduction tree, even / odd value accumulators), so the results are bit-identical to G
// calls of it. q: G rows qstep floats apart; s: G score rows sstep floats apart; o: G outputs
// qstep floats apart. G·NV <= 12 keeps the 2·G·NV value accumulators in registers.
__attribute__((target("avx512f"), always_inline)) static inline void attend_group_avx512_nv(
    const float *q, size_t qstep, const void *K, const void *V, int kvstride, int valid, const int NV, const int G,
    float scale, float *s, size_t sstep, float *o, const int H) {
    __m512 qr[12], acc0[12], acc1[12];  // [g * NV + v]
    for (int g = 0; g < G; g++)
        for (int v = 0; v < NV; v++) qr[g * NV + v] = _mm512_loadu_ps(q + (size_t)g * qstep + 16 * v);
    int j = 0;
    for (; j + 16 <= valid; j += 16) {
        __m512 a[4][16];   // [g][u]: the partial dot products of query g with key j + u
        for (int u = 0; u < 16; u++) {
            const size_t kv = (size_t)(j + u) * kvstride;
            __m512 k[8];
            for (int v = 0; v < NV; v++) k[v] = kv_load512(K, kv + 16 * (size_t)v, H);
            for (int g = 0; g < G; g++) {
                __m512 d = _mm512_mul_ps(qr[g * NV], k[0]);
                for (int v = 1; v < NV; v++) d = _mm512_fmadd_ps(qr[g * NV + v], k[v], d);
                a[g][u] = d;
            }
        }
        for (int g = 0; g < G; g++) _mm512_storeu_ps(s + (size_t)g * sstep + j, hsum16_avx512(a[g]));
    }
    for (; j < valid; j++) {
        const size_t kv = (size_t)j * kvstride;
        __m512 k[8];
        for (int v = 0; v < NV; v++) k[v] = kv_load512(K, kv + 16 * (size_t)v, H);
        for (int g = 0; g < G; g++) {
            __m512 d = _mm512_mul_ps(qr[g * NV], k[0]);
            for (int v = 1; v < NV; v++) d = _mm512_fmadd_ps(qr[g * NV + v], k[v], d);
            s[(size_t)g * sstep + j] = _mm512_reduce_add_ps(d);
        }
    }
    for (int g = 0; g < G; g++) causal_softmax_row(s + (size_t)g * sstep, valid, scale);
    for (int i = 0; i < G * NV; i++) acc0[i] = acc1[i] = _mm512_setzero_ps();
    j = 0;
    for (; j + 2 <= valid; j += 2) {
        const size_t v0 = (size_t)j * kvstride, v1 = v0 + (size_t)kvstride;
        for (int v = 0; v < NV; v++) {
            const __m512 x0 = kv_load512(V, v0 + 16 * (size_t)v, H), x1 = kv_load512(V, v1 + 16 * (size_t)v, H);
            for (int g = 0; g < G; g++) {
                const float *sg = s + (size_t)g * sstep;
                acc0[g * NV + v] = _mm512_fmadd_ps(_mm512_set1_ps(sg[j]), x0, acc0[g * NV + v]);
                acc1[g * NV + v] = _mm512_fmadd_ps(_mm512_set1_ps(sg[j + 1]), x1, acc1[g * NV + v]);
            }
        }
    }
    if (j < valid) {
        const size_t v0 = (size_t)j * kvstride;
        for (int v = 0; v < NV; v++) {
            const __m512 x0 = kv_load512(V, v0 + 16 * (size_t)v, H);
            for (int g = 0; g < G; g++)
                acc0[g * NV + v] = _mm512_fmadd_ps(_mm512_set1_ps(s[(size_t)g * sstep + j]), x0, acc0[g * NV + v]);
        }
    }
    for (int g = 0; g < G; g++)
        for (int v = 0; v < NV; v++)
            _mm512_storeu_ps(o + (size_t)g * qstep + 16 * v, _mm512_add_ps(acc0[g * NV + v], acc1[g * NV + v]));
}

// How many heads of a KV group to hand attend_group_avx512 at once (1: one head at a time):
// head_dim 64 in packs of 3 or 2, head_dim 32 in packs of 4, 3 or 2 (G·NV <= 12), the shapes it
// has instances for.
static int attend_pack(int group, int head_dim) {
    const int max = head_dim == 64 ? 3 : head_dim == 32 ? 4 : 1;
    for (int p = max; p > 1; p--)
        if (group % p == 0) return p;
    return 1;
}

// One instance per cache precision and pack shape (H, NV, G compile-time constants inside each);
// returns 0 for a shape without one (the caller then runs the heads one at a time).
__attribute__((target("avx512f"))) static int attend_group_avx512(const float *q, size_t qstep, const void *K, const void *V,
                                                                  int kvstride, int valid, int hd, int G, float scale, float *s,
                                                                  size_t sstep, float *o, int H) {
#define QLM_GROUP_CASE(NV_, G_)                                                                                        \
    if (hd == 16 * (NV_) && G == (G_)) {                                                                               \
        if (H) attend_group_avx512_nv(q, qstep, K, V, kvstride, valid, NV_, G_, scale, s, sstep, o, 1);                \
        else attend_group_avx512_nv(q, qstep, K, V, kvstride, valid, NV_, G_, scale, s, sstep, o, 0);                  \
        return 1;                                                                                                      \
    }
    QLM_GROUP_CASE(4, 3) QLM_GROUP_CASE(4, 2) QLM_GROUP_CASE(2, 4) QLM_GROUP_CASE(2, 3) QLM_GROUP_CASE(2, 2)
#undef QLM_GROUP_CASE
    return 0;
}

__attribute__((target("avx2,fma,f16c"), always_inline)) static inline __m256 kv_load256(const void *p, size_t off, const int H) {
    return H ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + off)))
             : _mm256_loadu_ps((const float *)p + off);
}

__attribute__((target("avx2,fma,f16c"), always_inline)) static inline void attend_one_avx2_h(
    const float *qv, const void *K, const void *V, int kvstride, int valid, int hd, float scale, float *s, float *o, const int H) {
    if (hd % 8 != 0 || hd > 256) { attend_one_scalar_h(qv, K, V, kvstride, valid, hd, scale, s, o, H); return; }
    const int nv = hd / 8;
    __m256 qr[32], acc[32];
    for (int v = 0; v < nv; v++) qr[v] = _mm256_loadu_ps(qv + 8 * v);
    for (int j = 0; j < valid; j++) {
        const size_t kv = (size_t)j * kvstride;
        __m256 d = _mm256_mul_ps(qr[0], kv_load256(K, kv, H));
        for (int v = 1; v < nv; v++) d = _mm256_fmadd_ps(qr[v], kv_load256(K, kv + 8 * (size_t)v, H), d);
        __m128 x = _mm_add_ps(_mm256_castps256_ps128(d), _mm256_extractf128_ps(d, 1));
        x = _mm_add_ps(x, _mm_movehl_ps(x, x));
        x = _mm_add_ss(x, _mm_movehdup_ps(x));
        s[j] = _mm_cvtss_f32(x);
    }
    causal_softmax_row(s, valid, scale);
    for (int v = 0; v < nv; v++) acc[v] = _mm256_setzero_ps();
    for (int j = 0; j < valid; j++) {
        const __m256 p = _mm256_set1_ps(s[j]);
        const size_t vv = (size_t)j * kvstride;
        for (int v = 0; v < nv; v++) acc[v] = _mm256_fmadd_ps(p, kv_load256(V, vv + 8 * (size_t)v, H), acc[v]);
    }
    for (int v = 0; v < nv; v++) _mm256_storeu_ps(o + 8 * v, acc[v]);
}

__attribute__((target("avx2,fma,f16c"))) static void attend_one_avx2(const float *qv, const void *K, const void *V, int kvstride,
                                                                    int valid, int hd, float scale, float *s, float *o, int H) {
    if (H) attend_one_avx2_h(qv, K, V, kvstride, valid, hd, scale, s, o, 1);
    else attend_one_avx2_h(qv, K, V, kvstride, valid, hd, scale, s, o, 0);
}
#endif

// One query's attention on the active ISA; H = 1: K and V rows are f16 (the f16 KV cache).
static void attend_one(qlm_isa isa, const float *qv, const void *K, const void *V, int kvstride, int valid, int hd,
                       float scale, float *s, float *o, const int H) {
#if defined(__x86_64__)
    if (isa == QLM_ISA_AVX512) { attend_one_avx512(qv, K, V, kvstride, valid, hd, scale, s, o, H); return; }
    if (isa == QLM_ISA_AVX2) { attend_one_avx2(qv, K, V, kvstride, valid, hd, scale, s, o, H); return; }
#endif
    (void)isa;
    attend_one_scalar_h(qv, K, V, kvstride, valid, hd, scale, s, o, H);
}

// One decode attention call: T queries at positions pos0.. against the cache (n_ctx = pos0 + T rows).
typedef struct {
    const float *q;
    const char *kcache, *vcache;  // f32 or (H) f16 rows of kvstride values
    float *out, *scratch;         // out [T][n_heads·head_dim]; scratch: scores [T][n_heads][n_ctx]
    int pos0, n_ctx, n_heads, group, head_dim, kvstride, pack, H;
    size_t esize;
    float scale;
    qlm_isa isa;
} attend_dec;

// (Query, head) items [i0, i1), item i = query i / n_heads, head i % n_heads. GQA: the heads of a KV
// head in packs (attend_pack), one pass over its keys and values per pack on AVX-512; a range that
// starts or ends inside a KV head's group takes the heads it has of it as a smaller pack (or one at a
// time). Per head the arithmetic and its order are the same in every pack size, so how the items are
// split does not change the results.
static void attend_decode_items(const attend_dec *a, int i0, int i1) {
    const int qstride = a->n_heads * a->head_dim;
    for (int i = i0; i < i1;) {
        const int t = i / a->n_heads, h = i % a->n_heads;
        int n = a->pack - (h % a->group) % a->pack;  // packs stay aligned within the group (pack divides it)
        if (n > i1 - i) n = i1 - i;
        const float *qv = a->q + (size_t)t * qstride + (size_t)h * a->head_dim;
        const char *K = a->kcache + (size_t)(h / a->group) * (size_t)a->head_dim * a->esize;
        const char *V = a->vcache + (size_t)(h / a->group) * (size_t)a->head_dim * a->esize;
        float *s = a->scratch + ((size_t)t * a->n_heads + h) * (size_t)a->n_ctx;  // [n][pos0+t+1], rows n_ctx apart
        float *o = a->out + (size_t)t * qstride + (size_t)h * a->head_dim;
        const int valid = a->pos0 + t + 1;
        int done = 0;
#if defined(__x86_64__)
        done = n > 1 && attend_group_avx512(qv, (size_t)a->head_dim, K, V, a->kvstride, valid, a->head_dim, n, a->scale, s,
                                            (size_t)a->n_ctx, o, a->H);
#endif
        if (!done)
            for (int k = 0; k < n; k++)
                attend_one(a->isa, qv + (size_t)k * a->head_dim, K, V, a->kvstride, valid, a->head_dim, a->scale,
                           s + (size_t)k * a->n_ctx, o + (size_t)k * a->head_dim, a->H);
        i += n;
    }
}

// Below this many (query head, cached position) pairs per query decode attention stays on the calling
// thread: a fork/join (~1 us here) costs more than half of it.
#define QLM_ATTN_DECODE_PAR_MIN 512

// Decode-time attention (T small): one fused pass per (query, head). With several threads the T ·
// n_heads items are cut into one contiguous range per thread (SmolLM2, 9 heads in packs of 3, 2
// threads: heads 0-3 and 4-8, instead of two packs against one when packs were the work items).
static void attend_decode(const float *q, const void *kcache, const void *vcache, float *out, int T, int pos0,
                          int n_heads, int n_kv_heads, int head_dim, float *scratch, const int H) {
    attend_dec a = {q, (const char *)kcache, (const char *)vcache, out, scratch, pos0, pos0 + T, n_heads,
                    n_heads / n_kv_heads, head_dim, n_kv_heads * head_dim, 1, H,
                    H ? sizeof(uint16_t) : sizeof(float), 1.0f / sqrtf((float)head_dim), qlm_isa_active()};
#if defined(__x86_64__)
    if (a.isa == QLM_ISA_AVX512) a.pack = attend_pack(a.group, head_dim);
#endif
    const int items = T * n_heads;
    const int nt = qlm_omp_threads((size_t)a.n_ctx * (size_t)n_heads, QLM_ATTN_DECODE_PAR_MIN, 1, items);
    if (nt <= 1) {
        attend_decode_items(&a, 0, items);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
    {
        const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
        attend_decode_items(&a, (int)((long)items * tid / nth), (int)((long)items * (tid + 1) / nth));
    }
#endif
}

// Prefill attention of KV head g over queries [t0, t0 + tc): the group's query heads packed as
// rows of one GEMM against the visible keys, causal softmax, one GEMM against the values.
// `scratch` holds qlm_attention_scratch_floats(T, ...) floats.
static void attend_chunk(const float *q, const float *kcache, const float *vcache, float *out, int g, int t0, int tc,
                         int pos0, int n_heads, int n_kv_heads, int head_dim, float *scratch) {
    const int group = n_heads / n_kv_heads;
    const int qstride = n_heads * head_dim;   // row stride of q and out
    const int kvstride = n_kv_heads * head_dim;
    const float scale = 1.0f / sqrtf((float)head_dim);
    const float *K = kcache + (size_t)g * head_dim;
    const float *V = vcache + (size_t)g * head_dim;
    const int rows = group * tc;          // packed row r = head (r / tc), query t0 + r % tc
    const int n_keys = pos0 + t0 + tc;    // keys visible to the last query of the chunk
    float *S = scratch;                                   // [rows, n_keys]
    float *Qp = S + (size_t)rows * n_keys;                // [rows, hd]
    float *Op = Qp + (size_t)rows * head_dim;             // [rows, hd]
    for (int r = 0; r < rows; r++) {
        const int h = g * group + r / tc, t = t0 + r % tc;
        memcpy(Qp + (size_t)r * head_dim, q + (size_t)t * qstride + (size_t)h * head_dim, sizeof(float) * head_dim);
    }
    qlm_sgemm_nt(rows, n_keys, head_dim, Qp, head_dim, K, kvstride, S, n_keys, 0.0f);
    for (int r = 0; r < rows; r++) {
        float *row = S + (size_t)r * n_keys;
        const int valid = pos0 + t0 + r % tc + 1;
        causal_softmax_row(row, valid, scale);
        memset(row + valid, 0, sizeof(float) * (size_t)(n_keys - valid));
    }
    qlm_sgemm_nn(rows, head_dim, n_keys, S, n_keys, V, kvstride, Op, head_dim, 0.0f);
    for (int r = 0; r < rows; r++) {
        const int h = g * group + r / tc, t = t0 + r % tc;
        memcpy(out + (size_t)t * qstride + (size_t)h * head_dim, Op + (size_t)r * head_dim, sizeof(float) * head_dim);
    }
}

// Grow-only scratch of the calling thread for the other threads' prefill attention chunks.
static _Thread_local float *g_attn_extra;
static _Thread_local size_t g_attn_extra_floats;

void qlm_attention(const float *q, const float *kcache, const float *vcache, float *out,
                   int T, int pos0, int n_heads, int n_kv_heads, int head_dim, float *scratch, int omp_tasks) {
    if (T >= QLM_ATTN_BLAS_MIN_T) {
        const int nchunks = (T + QLM_ATTN_CHUNK - 1) / QLM_ATTN_CHUNK, ntasks = n_kv_heads * nchunks;
        int nt = 1;
#if defined(_OPENMP) && defined(__linux__)
        if (omp_tasks) nt = qlm_omp_threads((size_t)ntasks, 1, 1, ntasks);
        const size_t per = qlm_attention_scratch_floats(T, pos0 + T, n_heads, n_kv_heads, head_dim);
        if (nt > 1 && g_attn_extra_floats < per * (size_t)(nt - 1)) {
            free(g_attn_extra);
            g_attn_extra = malloc(sizeof(float) * per * (size_t)(nt - 1));
            g_attn_extra_floats = g_attn_extra ? per * (size_t)(nt - 1) : 0;
            if (!g_attn_extra) nt = 1;
        }
#endif
        if (nt <= 1) {
            for (int g = 0; g < n_kv_heads; g++)
                for (int t0 = 0; t0 < T; t0 += QLM_ATTN_CHUNK)
                    attend_chunk(q, kcache, vcache, out, g, t0, T - t0 < QLM_ATTN_CHUNK ? T - t0 : QLM_ATTN_CHUNK,
                                 pos0, n_heads, n_kv_heads, head_dim, scratch);
            return;
        }
#if defined(_OPENMP) && defined(__linux__)
        // omp_tasks: (KV head, query chunk) tasks on the OpenMP threads, each with a single-threaded
        // sgemm. For callers whose linears run on OpenMP (the integer GEMMs): the softmax between
        // the GEMMs then runs in parallel too, and the two thread pools no longer take turns
        // spinning (perf: ~20% of a 2-thread prefill's samples were spin-waits and sched_yield);
        // w4 g128 prefill 512 at 2 threads 620-819 -> 836-986 tok/s. Where the linears are
        // OpenBLAS sgemm (f32 weights, dequantised tiles) the chunks stay on OpenBLAS's threads:
        // there the same change cost ~15%. Later chunks see more keys: they go first.
        // The drop to 1 thread is process-wide: held exclusively, so no other thread's BLAS call
        // runs (and rounds) on it.
        qlm_blas_exclusive_begin();
        openblas_set_num_threads(1);
        _Atomic int next = 0;
        float *const extra = g_attn_extra;  // the workers' own copies of the thread-local are not this one
#pragma omp parallel num_threads(nt)
        {
            qlm_blas_section_enter();
            const int tid = omp_get_thread_num();
            float *sc = tid == 0 ? scratch : extra + per * (size_t)(tid - 1);
            for (int i; (i = atomic_fetch_add_explicit(&next, 1, memory_order_relaxed)) < ntasks;) {
                const int c = nchunks - 1 - i / n_kv_heads, g = i % n_kv_heads, t0 = c * QLM_ATTN_CHUNK;
                attend_chunk(q, kcache, vcache, out, g, t0, T - t0 < QLM_ATTN_CHUNK ? T - t0 : QLM_ATTN_CHUNK, pos0,
                             n_heads, n_kv_heads, head_dim, sc);
            }
            qlm_blas_section_leave();
        }
        openblas_set_num_threads(qlm_get_threads());
        qlm_blas_exclusive_end();
        return;
#endif
    }

    attend_decode(q, kcache, vcache, out, T, pos0, n_heads, n_kv_heads, head_dim, scratch, 0);
}

size_t qlm_attention_kv16_scratch_floats(int T, int n_ctx, int n_heads, int n_kv_heads, int head_dim) {
    const size_t conv = T >= QLM_ATTN_BLAS_MIN_T ? 2 * (size_t)n_ctx * (size_t)n_kv_heads * (size_t)head_dim : 0;
    return conv + qlm_attention_scratch_floats(T, n_ctx, n_heads, n_kv_heads, head_dim);
}

void qlm_attention_kv16(const float *q, const uint16_t *kcache, const uint16_t *vcache, float *out,
                        int T, int pos0, int n_heads, int n_kv_heads, int head_dim, float *scratch, int omp_tasks) {
    const int n_ctx = pos0 + T, kvstride = n_kv_heads * head_dim;
    if (T >= QLM_ATTN_BLAS_MIN_T) {
        // Prefill: widen the visible cache once and reuse the BLAS path (the conversion reads each
        // cached value once; the GEMMs then read it ~T/256 times).
        float *kf = scratch, *vf = kf + (size_t)n_ctx * (size_t)kvstride;
        qlm_dequant_f16(kcache, kf, (size_t)n_ctx * (size_t)kvstride);
        qlm_dequant_f16(vcache, vf, (size_t)n_ctx * (size_t)kvstride);
        qlm_attention(q, kf, vf, out, T, pos0, n_heads, n_kv_heads, head_dim, vf + (size_t)n_ctx * (size_t)kvstride, omp_tasks);
        return;
    }
    attend_decode(q, kcache, vcache, out, T, pos0, n_heads, n_kv_heads, head_dim, scratch, 1);
}

void qlm_nll_rows(const float *logits, int rows, int n, const int32_t *targets, double *out) {
    for (int r = 0; r < rows; r++) out[r] = qlm_nll_from_logits(logits + (size_t)r * n, n, targets[r]);
}

void qlm_ssyrk_t(int n, int k, float alpha, const float *A, int lda, float beta, float *C, int ldc) {
    qlm_blas_shared_begin();
    cblas_ssyrk(CblasRowMajor, CblasLower, CblasTrans, n, k, alpha, A, lda, beta, C, ldc);
    qlm_blas_shared_end();
}
