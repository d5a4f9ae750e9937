// Dense f32 GEMV y[rows] = W[rows, cols] · x[cols], row-major W.
//
// Decode is bound by memory bandwidth: every weight byte is read exactly once per token, so the
// kernels stream W row by row, 4 rows at a time sharing each load of x, with two independent
// accumulators per row to hide FMA latency. Four interleaved row streams of a few KiB each train
// the hardware prefetchers poorly (measured: ~14 GB/s on 49152x576 vs ~22 GB/s for one stream),
// so while a 4-row block is consumed a block ≥16 KiB ahead is software-prefetched into L2 in
// linear address order, at the same pace (this recovers most of the single-stream bandwidth).
// Ragged column tails use masked loads (AVX-512/AVX2) or a scalar tail (NEON). The 1-row kernel
// of each path performs exactly the same operations in the same order as one row of the 4-row
// kernel, and thread partitions start on multiples of 4 rows, so results are bit-identical for
// every thread count.
#include "qlm_kernels.h"
#include "qlm_omp.h"

#include <stddef.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include "qlm_x86_common.h"
#define QLM_X86 1
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#endif

// Software prefetch of the blocks ahead (see gemv_pf_dist) is used up to this many columns;
// longer rows are long streams the hardware prefetchers follow on their own.
#define QLM_GEMV_PF_MAX_COLS 16384

// Prefetch distance in floats: whole 4-row blocks, at least ~16 KiB ahead (at most 8 blocks).
static inline size_t gemv_pf_dist(int cols) {
    const size_t block = (size_t)4 * (size_t)cols;  // floats
    size_t k = (4096 + block - 1) / block;
    if (k > 8) k = 8;
    return k * block;
}

typedef void (*gemv_rows_fn)(const float *W, const float *x, float *y, int r0, int r1, int cols);

// ---------------------------------------------------------------------------------------------
// Reference: plain f32 loop, single thread.
// ---------------------------------------------------------------------------------------------
void qlm_gemv_f32_ref(const float *W, const float *x, float *y, int rows, int cols) {
    for (int r = 0; r < rows; r++) {
        const float *w = W + (size_t)r * cols;
        float s = 0.0f;
        for (int j = 0; j < cols; j++) s += w[j] * x[j];
        y[r] = s;
    }
}

// ---------------------------------------------------------------------------------------------
// Scalar path: 8 partial sums per row (explicit order, so the compiler may use baseline SIMD).
// ---------------------------------------------------------------------------------------------
static inline float dot_scalar(const float *w, const float *x, int cols) {
    float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int j = 0;
    for (; j + 8 <= cols; j += 8)
        for (int k = 0; k < 8; k++) s[k] += w[j + k] * x[j + k];
    for (int k = 0; j < cols; j++, k++) s[k] += w[j] * x[j];
    return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}

static void gemv_rows_scalar(const float *W, const float *x, float *y, int r0, int r1, int cols) {
    for (int r = r0; r < r1; r++) y[r] = dot_scalar(W + (size_t)r * cols, x, cols);
}

#ifdef QLM_X86
// ---------------------------------------------------------------------------------------------
// AVX2 + FMA
// ---------------------------------------------------------------------------------------------
static const int32_t avx2_mask_table[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

__attribute__((target("avx2,fma"))) static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma"))) static void gemv_rows_avx2(const float *W, const float *x,
                                                                float *y, int r0, int r1, int cols) {
    const int tail = cols & 7;
    const int main16 = cols & ~15;
    const int main8 = cols & ~7;
    const __m256i tmask = _mm256_loadu_si256((const __m256i *)(avx2_mask_table + 8 - tail));
    const int pf_on = cols <= QLM_GEMV_PF_MAX_COLS;
    const size_t pf_dist = gemv_pf_dist(cols);
    int r = r0;
    for (; r + 4 <= r1; r += 4) {
        const float *w0 = W + (size_t)r * cols, *w1 = w0 + cols, *w2 = w1 + cols, *w3 = w2 + cols;
        __m256 a0 = _mm256_setzero_ps(), b0 = _mm256_setzero_ps();
        __m256 a1 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();
        __m256 a2 = _mm256_setzero_ps(), b2 = _mm256_setzero_ps();
        __m256 a3 = _mm256_setzero_ps(), b3 = _mm256_setzero_ps();
        const char *pf = (const char *)(w0 + pf_dist);  // blocks ahead, linear order
        int j = 0;
        for (; j < main16; j += 16) {
            if (pf_on) {  // 4 rows x 16 floats consumed = 256 bytes ahead
                const char *p = pf + (size_t)16 * j;
                _mm_prefetch(p, _MM_HINT_T1); _mm_prefetch(p + 64, _MM_HINT_T1);
                _mm_prefetch(p + 128, _MM_HINT_T1); _mm_prefetch(p + 192, _MM_HINT_T1);
            }
            const __m256 xa = _mm256_loadu_ps(x + j), xb = _mm256_loadu_ps(x + j + 8);
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + j), xa, a0);
            b0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + j + 8), xb, b0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + j), xa, a1);
            b1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + j + 8), xb, b1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + j), xa, a2);
            b2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + j + 8), xb, b2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + j), xa, a3);
            b3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + j + 8), xb, b3);
        }
        if (pf_on)
            for (size_t p = (size_t)16 * main16; p < (size_t)16 * cols; p += 64) _mm_prefetch(pf + p, _MM_HINT_T1);
        if (j < main8) {
            const __m256 xa = _mm256_loadu_ps(x + j);
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + j), xa, a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + j), xa, a1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + j), xa, a2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + j), xa, a3);
            j += 8;
        }
        if (tail) {
            const __m256 xa = _mm256_maskload_ps(x + j, tmask);
            b0 = _mm256_fmadd_ps(_mm256_maskload_ps(w0 + j, tmask), xa, b0);
            b1 = _mm256_fmadd_ps(_mm256_maskload_ps(w1 + j, tmask), xa, b1);
            b2 = _mm256_fmadd_ps(_mm256_maskload_ps(w2 + j, tmask), xa, b2);
            b3 = _mm256_fmadd_ps(_mm256_maskload_ps(w3 + j, tmask), xa, b3);
        }
        y[r + 0] = hsum256(_mm256_add_ps(a0, b0));
        y[r + 1] = hsum256(_mm256_add_ps(a1, b1));
        y[r + 2] = hsum256(_mm256_add_ps(a2, b2));
        y[r + 3] = hsum256(_mm256_add_ps(a3, b3));
    }
    for (; r < r1; r++) {  // same operation order as one row above
        const float *w0 = W + (size_t)r * cols;
        __m256 a0 = _mm256_setzero_ps(), b0 = _mm256_setzero_ps();
        int j = 0;
        for (; j < main16; j += 16) {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + j), _mm256_loadu_ps(x + j), a0);
            b0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + j + 8), _mm256_loadu_ps(x + j + 8), b0);
        }
        if (j < main8) {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + j), _mm256_loadu_ps(x + j), a0);
            j += 8;
        }
        if (tail)
            b0 = _mm256_fmadd_ps(_mm256_maskload_ps(w0 + j, tmask), _mm256_maskload_ps(x + j, tmask), b0);
        y[r] = hsum256(_mm256_add_ps(a0, b0));
    }
}

// ---------------------------------------------------------------------------------------------
// AVX-512 F/BW/VL
// ---------------------------------------------------------------------------------------------
#define QLM_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))


QLM_AVX512 static void gemv_rows_avx512(const float *W, const float *x, float *y, int r0, int r1,
                                        int cols) {
    const int tail = cols & 15;
    const int main32 = cols & ~31;
    const int main16 = cols & ~15;
    const __mmask16 tm = (__mmask16)((1u << tail) - 1u);
    const int pf_on = cols <= QLM_GEMV_PF_MAX_COLS;
    const size_t pf_dist = gemv_pf_dist(cols);
    int r = r0;
    for (; r + 4 <= r1; r += 4) {
        const float *w0 = W + (size_t)r * cols, *w1 = w0 + cols, *w2 = w1 + cols, *w3 = w2 + cols;
        __m512 a0 = _mm512_setzero_ps(), b0 = _mm512_setzero_ps();
        __m512 a1 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps();
        __m512 a2 = _mm512_setzero_ps(), b2 = _mm512_setzero_ps();
        __m512 a3 = _mm512_setzero_ps(), b3 = _mm512_setzero_ps();
        const char *pf = (const char *)(w0 + pf_dist);  // blocks ahead, linear order
        int j = 0;
        for (; j < main32; j += 32) {
            if (pf_on) {  // 4 rows x 32 floats consumed = 512 bytes ahead
                const char *p = pf + (size_t)16 * j;
                _mm_prefetch(p, _MM_HINT_T1); _mm_prefetch(p + 64, _MM_HINT_T1);
                _mm_prefetch(p + 128, _MM_HINT_T1); _mm_prefetch(p + 192, _MM_HINT_T1);
                _mm_prefetch(p + 256, _MM_HINT_T1); _mm_prefetch(p + 320, _MM_HINT_T1);
                _mm_prefetch(p + 384, _MM_HINT_T1); _mm_prefetch(p + 448, _MM_HINT_T1);
            }
            const __m512 xa = _mm512_loadu_ps(x + j), xb = _mm512_loadu_ps(x + j + 16);
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + j), xa, a0);
            b0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + j + 16), xb, b0);
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + j), xa, a1);
            b1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + j + 16), xb, b1);
            a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + j), xa, a2);
            b2 = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + j + 16), xb, b2);
            a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + j), xa, a3);
            b3 = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + j + 16), xb, b3);
        }
        if (pf_on)
            for (size_t p = (size_t)16 * main32; p < (size_t)16 * cols; p += 64) _mm_prefetch(pf + p, _MM_HINT_T1);
        if (j < main16) {
            const __m512 xa = _mm512_loadu_ps(x + j);
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + j), xa, a0);
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + j), xa, a1);
            a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + j), xa, a2);
            a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + j), xa, a3);
            j += 16;
        }
        if (tail) {
            const __m512 xa = _mm512_maskz_loadu_ps(tm, x + j);
            b0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tm, w0 + j), xa, b0);
            b1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tm, w1 + j), xa, b1);
            b2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tm, w2 + j), xa, b2);
            b3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tm, w3 + j), xa, b3);
        }
        y[r + 0] = qlm_hsum512(_mm512_add_ps(a0, b0));
        y[r + 1] = qlm_hsum512(_mm512_add_ps(a1, b1));
        y[r + 2] = qlm_hsum512(_mm512_add_ps(a2, b2));
        y[r + 3] = qlm_hsum512(_mm512_add_ps(a3, b3));
    }
    for (; r < r1; r++) {  // same operation order as one row above
        const float *w0 = W + (size_t)r * cols;
        __m512 a0 = _mm512_setzero_ps(), b0 = _mm512_setzero_ps();
        int j = 0;
        for (; j < main32; j += 32) {
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + j), _mm512_loadu_ps(x + j), a0);
            b0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + j + 16), _mm512_loadu_ps(x + j + 16), b0);
        }
        if (j < main16) {
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + j), _mm512_loadu_ps(x + j), a0);
            j += 16;
        }
        if (tail)
            b0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tm, w0 + j), _mm512_maskz_loadu_ps(tm, x + j), b0);
        y[r] = qlm_hsum512(_mm512_add_ps(a0, b0));
    }
}
#endif  // QLM_X86

#if defined(__aarch64__)
// ---------------------------------------------------------------------------------------------
// NEON
// ---------------------------------------------------------------------------------------------
static void gemv_rows_neon(const float *W, const float *x, float *y, int r0, int r1, int cols) {
    const int main8 = cols & ~7;
    const int main4 = cols & ~3;
    const int pf_on = cols <= QLM_GEMV_PF_MAX_COLS;
    const size_t pf_dist = gemv_pf_dist(cols);
    int r = r0;
    for (; r + 4 <= r1; r += 4) {
        const float *w0 = W + (size_t)r * cols, *w1 = w0 + cols, *w2 = w1 + cols, *w3 = w2 + cols;
        float32x4_t a0 = vdupq_n_f32(0), b0 = vdupq_n_f32(0), a1 = vdupq_n_f32(0), b1 = vdupq_n_f32(0);
        float32x4_t a2 = vdupq_n_f32(0), b2 = vdupq_n_f32(0), a3 = vdupq_n_f32(0), b3 = vdupq_n_f32(0);
        const char *pf = (const char *)(w0 + pf_dist);  // blocks ahead, linear order
        int j = 0;
        for (; j < main8; j += 8) {
            if (pf_on) {  // 4 rows x 8 floats consumed = 128 bytes ahead
                const char *p = pf + (size_t)16 * j;
                __builtin_prefetch(p, 0, 2); __builtin_prefetch(p + 64, 0, 2);
            }
            const float32x4_t xa = vld1q_f32(x + j), xb = vld1q_f32(x + j + 4);
            a0 = vfmaq_f32(a0, vld1q_f32(w0 + j), xa);
            b0 = vfmaq_f32(b0, vld1q_f32(w0 + j + 4), xb);
            a1 = vfmaq_f32(a1, vld1q_f32(w1 + j), xa);
            b1 = vfmaq_f32(b1, vld1q_f32(w1 + j + 4), xb);
            a2 = vfmaq_f32(a2, vld1q_f32(w2 + j), xa);
            b2 = vfmaq_f32(b2, vld1q_f32(w2 + j + 4), xb);
            a3 = vfmaq_f32(a3, vld1q_f32(w3 + j), xa);
            b3 = vfmaq_f32(b3, vld1q_f32(w3 + j + 4), xb);
        }
        if (pf_on)
            for (size_t p = (size_t)16 * main8; p < (size_t)16 * cols; p += 64) __builtin_prefetch(pf + p, 0, 2);
        if (j < main4) {
            const float32x4_t xa = vld1q_f32(x + j);
            a0 = vfmaq_f32(a0, vld1q_f32(w0 + j), xa);
            a1 = vfmaq_f32(a1, vld1q_f32(w1 + j), xa);
            a2 = vfmaq_f32(a2, vld1q_f32(w2 + j), xa);
            a3 = vfmaq_f32(a3, vld1q_f32(w3 + j), xa);
            j += 4;
        }
        float s0 = vaddvq_f32(vaddq_f32(a0, b0)), s1 = vaddvq_f32(vaddq_f32(a1, b1));
        float s2 = vaddvq_f32(vaddq_f32(a2, b2)), s3 = vaddvq_f32(vaddq_f32(a3, b3));
        for (; j < cols; j++) {
            const float xj = x[j];
            s0 = __builtin_fmaf(w0[j], xj, s0);
            s1 = __builtin_fmaf(w1[j], xj, s1);
            s2 = __builtin_fmaf(w2[j], xj, s2);
            s3 = __builtin_fmaf(w3[j], xj, s3);
        }
        y[r + 0] = s0; y[r + 1] = s1; y[r + 2] = s2; y[r + 3] = s3;
    }
    for (; r < r1; r++) {  // same operation order as one row above
        const float *w0 = W + (size_t)r * cols;
        float32x4_t a0 = vdupq_n_f32(0), b0 = vdupq_n_f32(0);
        int j = 0;
        for (; j < main8; j += 8) {
            a0 = vfmaq_f32(a0, vld1q_f32(w0 + j), vld1q_f32(x + j));
            b0 = vfmaq_f32(b0, vld1q_f32(w0 + j + 4), vld1q_f32(x + j + 4));
        }
        if (j < main4) {
            a0 = vfmaq_f32(a0, vld1q_f32(w0 + j), vld1q_f32(x + j));
            j += 4;
        }
        float s0 = vaddvq_f32(vaddq_f32(a0, b0));
        for (; j < cols; j++) s0 = __builtin_fmaf(w0[j], x[j], s0);
        y[r] = s0;
    }
}
#endif  // __aarch64__

// ---------------------------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------------------------
static gemv_rows_fn pick(qlm_isa isa) {
    switch (isa) {
#ifdef QLM_X86
    case QLM_ISA_AVX2: return gemv_rows_avx2;
    case QLM_ISA_AVX512: return gemv_rows_avx512;
#endif
#if defined(__aarch64__)
    case QLM_ISA_NEON: return gemv_rows_neon;
#endif
    default: return gemv_rows_scalar;
    }
}

// Below this many weights one thread finishes before a parallel region would pay for itself.
#define QLM_GEMV_MIN_PARALLEL (1 << 16)
// Each thread gets at least this many weights (rows are split in multiples of 4).
#define QLM_GEMV_MIN_PER_THREAD (1 << 15)

static void gemv_run(gemv_rows_fn fn, const float *W, const float *x, float *y, int rows, int cols) {
    if (rows <= 0 || cols <= 0) {
        for (int r = 0; r < rows; r++) y[r] = 0.0f;
        return;
    }
    const int nt = qlm_omp_threads((size_t)rows * (size_t)cols, QLM_GEMV_MIN_PARALLEL, QLM_GEMV_MIN_PER_THREAD, (rows + 3) / 4);
    if (nt == 1) {
        fn(W, x, y, 0, rows, cols);
        return;
    }
#ifdef _OPENMP
    const int blocks = (rows + 3) / 4;
#pragma omp parallel num_threads(nt)
    {
        const int t = omp_get_thread_num(), n = omp_get_num_threads();
        const int b0 = (int)((long long)blocks * t / n), b1 = (int)((long long)blocks * (t + 1) / n);
        int r0 = b0 * 4, r1 = b1 * 4;
        if (r1 > rows) r1 = rows;
        if (r0 < r1) fn(W, x, y, r0, r1, cols);
    }
#endif
}

void qlm_gemv_f32_isa(qlm_isa isa, const float *W, const float *x, float *y, int rows, int cols) {
    if (!qlm_isa_supported(isa)) isa = QLM_ISA_SCALAR;
    gemv_run(pick(isa), W, x, y, rows, cols);
}

void qlm_gemv_f32(const float *W, const float *x, float *y, int rows, int cols) {
    gemv_run(pick(qlm_isa_active()), W, x, y, rows, cols);
}
