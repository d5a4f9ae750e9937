// Transformer ops in f32: norms, RoPE, SwiGLU, attention, and the BLAS entry points.
// These are small next to the GEMVs (decode) and GEMMs (prefill); they are written plainly so
// the compiler vectorises them, and parallelised over rows/heads where that pays.
#include "qlm_kernels.h"
#include <math.h>
#include <string.h>

#ifdef __APPLE__
#include <Accelerate/Accelerate.h>
#else
#include <cblas.h>
#endif

void qlm_sgemm_nt(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                  float *C, int ldc, float beta) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}

void qlm_sgemm_nn(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                  float *C, int ldc, float beta) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}

void qlm_rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    float ss = 0.0f;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    const float inv = 1.0f / sqrtf(ss / (float)n + eps);
    for (int i = 0; i < n; i++) out[i] = x[i] * inv * w[i];
}

void qlm_rmsnorm_rows(float *out, const float *x, const float *w, int T, int n, float eps) {
#pragma omp parallel for schedule(static) if (T >= 64)
    for (int t = 0; t < T; t++) qlm_rmsnorm(out + (size_t)t * n, x + (size_t)t * n, w, n, eps);
}

void qlm_rope(float *x, int T, int n_heads, int head_dim, int pos0, const float *inv_freq) {
    const int half = head_dim / 2;
#pragma omp parallel for schedule(static) if (T >= 64)
    for (int t = 0; t < T; t++) {
        const float pos = (float)(pos0 + t);
        float cs[512], sn[512];  // head_dim/2 <= 512 (head_dim <= 1024)
        for (int i = 0; i < half; i++) {
            // Angle in double: positions up to 1e5+ times frequencies near 1 lose digits in f32.
            const double a = (double)pos * (double)inv_freq[i];
            cs[i] = (float)cos(a);
            sn[i] = (float)sin(a);
        }
        float *row = x + (size_t)t * n_heads * head_dim;
        for (int h = 0; h < n_heads; h++) {
            float *v = row + (size_t)h * head_dim;
            for (int i = 0; i < half; i++) {
                const float a = v[i], b = v[i + half];
                v[i] = a * cs[i] - b * sn[i];
                v[i + half] = b * cs[i] + a * sn[i];
            }
        }
    }
}

void qlm_swiglu(float *h, const float *g, const float *u, size_t n) {
#pragma omp parallel for schedule(static) if (n >= 65536)
    for (size_t i = 0; i < n; i++) {
        const float x = g[i];
        h[i] = x / (1.0f + expf(-x)) * u[i];
    }
}

void qlm_softmax(float *x, int n) {
    float mx = -INFINITY;
    for (int i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    float s = 0.0f;
    for (int i = 0; i < n; i++) { x[i] = expf(x[i] - mx); s += x[i]; }
    const float inv = 1.0f / s;
    for (int i = 0; i < n; i++) x[i] *= inv;
}

double qlm_nll_from_logits(const float *logits, int n, int target) {
    float mx = -INFINITY;
    for (int i = 0; i < n; i++) mx = logits[i] > mx ? logits[i] : mx;
    double s = 0.0;
    for (int i = 0; i < n; i++) s += exp((double)(logits[i] - mx));
    return log(s) + (double)mx - (double)logits[target];
}

// Prefill attention goes through BLAS in query chunks so the causal upper triangle beyond each
// chunk is never computed (about half the work of a full T×T score matrix).
#define QLM_ATTN_CHUNK 256
#define QLM_ATTN_BLAS_MIN_T 16

size_t qlm_attention_scratch_floats(int T, int n_ctx, int n_heads) {
    if (T >= QLM_ATTN_BLAS_MIN_T) {
        const int c = T < QLM_ATTN_CHUNK ? T : QLM_ATTN_CHUNK;
        return (size_t)c * (size_t)n_ctx;
    }
    return (size_t)T * (size_t)n_heads * (size_t)n_ctx;
}

static void causal_softmax_row(float *s, int n_valid, float scale) {
    float mx = -INFINITY;
    for (int j = 0; j < n_valid; j++) { s[j] *= scale; mx = s[j] > mx ? s[j] : mx; }
    float sum = 0.0f;
    for (int j = 0; j < n_valid; j++) { s[j] = expf(s[j] - mx); sum += s[j]; }
    const float inv = 1.0f / sum;
    for (int j = 0; j < n_valid; j++) s[j] *= inv;
}

void qlm_attention(const float *q, const float *kcache, const float *vcache, float *out,
                   int T, int pos0, int n_heads, int n_kv_heads, int head_dim, float *scratch) {
    const int group = n_heads / n_kv_heads;
    const int qstride = n_heads * head_dim;   // row stride of q and out
    const int kvstride = n_kv_heads * head_dim;
    const float scale = 1.0f / sqrtf((float)head_dim);

    if (T >= QLM_ATTN_BLAS_MIN_T) {
        for (int h = 0; h < n_heads; h++) {
            const float *K = kcache + (size_t)(h / group) * head_dim;
            const float *V = vcache + (size_t)(h / group) * head_dim;
            for (int t0 = 0; t0 < T; t0 += QLM_ATTN_CHUNK) {
                const int tc = (T - t0) < QLM_ATTN_CHUNK ? (T - t0) : QLM_ATTN_CHUNK;
                const int n_keys = pos0 + t0 + tc;  // keys visible to the last query of the chunk
                const float *Q = q + (size_t)t0 * qstride + (size_t)h * head_dim;
                float *S = scratch;                  // [tc, n_keys]
                qlm_sgemm_nt(tc, n_keys, head_dim, Q, qstride, K, kvstride, S, n_keys, 0.0f);
#pragma omp parallel for schedule(static)
                for (int i = 0; i < tc; i++) {
                    float *row = S + (size_t)i * n_keys;
                    const int valid = pos0 + t0 + i + 1;
                    causal_softmax_row(row, valid, scale);
                    for (int j = valid; j < n_keys; j++) row[j] = 0.0f;
                }
                qlm_sgemm_nn(tc, head_dim, n_keys, S, n_keys, V, kvstride,
                             out + (size_t)t0 * qstride + (size_t)h * head_dim, qstride, 0.0f);
            }
        }
        return;
    }

    const int n_ctx = pos0 + T;
#pragma omp parallel for schedule(static) collapse(2) if (n_ctx * n_heads >= 2048)
    for (int t = 0; t < T; t++) {
        for (int h = 0; h < n_heads; h++) {
            const float *qv = q + (size_t)t * qstride + (size_t)h * head_dim;
            const float *K = kcache + (size_t)(h / group) * head_dim;
            const float *V = vcache + (size_t)(h / group) * head_dim;
            float *s = scratch + ((size_t)t * n_heads + h) * (size_t)n_ctx;  // [pos0+t+1]
            const int valid = pos0 + t + 1;
            for (int j = 0; j < valid; j++) {
                const float *kv = K + (size_t)j * kvstride;
                float d = 0.0f;
                for (int i = 0; i < head_dim; i++) d += qv[i] * kv[i];
                s[j] = d;
            }
            causal_softmax_row(s, valid, scale);
            float *o = out + (size_t)t * qstride + (size_t)h * head_dim;
            for (int i = 0; i < head_dim; i++) o[i] = 0.0f;
            for (int j = 0; j < valid; j++) {
                const float p = s[j];
                const float *vv = V + (size_t)j * kvstride;
                for (int i = 0; i < head_dim; i++) o[i] += p * vv[i];
            }
        }
    }
}

void qlm_nll_rows(const float *logits, int rows, int n, const int32_t *targets, double *out) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) out[r] = qlm_nll_from_logits(logits + (size_t)r * n, n, targets[r]);
}
