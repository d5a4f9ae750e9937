// Gram matrices C = alpha · AᵀA of calibration activations (the per-layer Hessians H = 2XᵀX) from
// bf16-rounded inputs with f32 accumulation (AVX-512 BF16 vdpbf16ps: 32 products per instruction,
// twice an f32 FMA's 16), plus the portable twin that rounds and accumulates the same way.
//
// Why bf16 is enough for a Hessian: rounding an input to bf16 changes it by a relative δ ≤ 2^-9,
// unbiased (round to nearest even), and every product is then exact in f32. An entry
// H_ij = Σ_t x_ti·x_tj over N tokens moves by Σ_t x_ti·x_tj·(δ_ti + δ_tj): independent, zero-mean
// terms, so the relative change of a diagonal entry is ~2^-9/√N (N = 4096 per chunk: ~3e-5) and
// off-diagonal entries move by that much of √(H_ii·H_jj). Every method adds a damping of 1% of the
// mean diagonal before solving, ~300× more. Accumulation stays f32 within a chunk of ≤ 4096 rows
// (the caller sums chunks in f64), as with ssyrk. Measured effect on real layers: README
// ("Hessian precision"), `qlm quantize --hessian f32|bf16`.
//
// Packed layout (qlm_gram_pack): column block cb (16 columns) holds, for every token pair p, one
// 32-bit word per column: bf16(A[2p, c]) in the low half, bf16(A[2p+1, c]) in the high half
// (a zero token pads an odd k; zero columns pad n to a multiple of GRAM_MI). That is exactly the
// operand vdpbf16ps wants: one zmm = 16 columns × 2 tokens, and a column's word broadcast to all
// lanes is the other operand.
#include "qlm_kernels.h"
#include "qlm_omp.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define GRAM_MI 48   // output columns i per tile: three zmm of 16
#define GRAM_NJ 8    // output columns j per tile: 3 × 8 = 24 accumulators
#define GRAM_KC 128  // token pairs per pass over a tile (its i-panel, 24 KB, stays in L1)

static int gram_npad(int n) { return (n + GRAM_MI - 1) / GRAM_MI * GRAM_MI; }
static int gram_pairs(int k) { return (k + 1) / 2; }

size_t qlm_gram_bf16_scratch_bytes(int n, int k) {
    return (size_t)gram_npad(n) * (size_t)gram_pairs(k) * 4u;
}

// Round to nearest even, as vcvtneps2bf16 does (NaN stays NaN, quiet).
static uint16_t gram_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static float gram_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// vdpbf16ps flushes bf16 denormal inputs to zero; the twin does the same so both see equal inputs.
static float gram_in(float a) {
    float r = gram_f32(gram_bf16(a));
    return fabsf(r) < 1.17549435e-38f ? 0.0f : r;
}

// Same arithmetic and order as the kernel, so the two agree bit for bit: per block of GRAM_KC
// pairs an f32 sum (each pair adds the odd token's product, then the even one's, as vdpbf16ps
// does), scaled by alpha and added to the running entry.
void qlm_gram_bf16_ref(int n, int k, float alpha, const float *A, int lda, float *C, int ldc) {
    const int kp = gram_pairs(k);
    for (int j = 0; j < n; j++)
        for (int i = 0; i <= j; i++) {
            float c = 0;
            for (int p0 = 0; p0 < kp; p0 += GRAM_KC) {
                const int p1 = p0 + GRAM_KC < kp ? p0 + GRAM_KC : kp;
                float acc = 0;
                for (int p = p0; p < p1; p++) {
                    const int t0 = 2 * p, t1 = 2 * p + 1;
                    if (t1 < k) acc += gram_in(A[(size_t)t1 * lda + i]) * gram_in(A[(size_t)t1 * lda + j]);
                    acc += gram_in(A[(size_t)t0 * lda + i]) * gram_in(A[(size_t)t0 * lda + j]);
                }
                const float v = alpha * acc;
                c = p0 == 0 ? v : c + v;
            }
            C[(size_t)j * ldc + i] = c;
        }
}

#if defined(__x86_64__) && defined(__clang__)
#include <immintrin.h>
#define GRAM512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

int qlm_gram_bf16_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
}

// Token pair p of every column block (the OpenMP loop bodies live in target functions: an
// outlined parallel region does not inherit the caller's target attributes).
GRAM512 static void gram_pack_pair(int n, int k, int p, const float *A, int lda, uint32_t *P) {
    const int kp = gram_pairs(k), nb = gram_npad(n) / 16;
    const float *r0 = A + (size_t)(2 * p) * lda;
    const float *r1 = 2 * p + 1 < k ? r0 + lda : NULL;
    for (int cb = 0; cb < nb; cb++) {
        const int c0 = cb * 16, left = n - c0;
        const __mmask16 m = (__mmask16)(left >= 16 ? 0xFFFFu : left <= 0 ? 0u : (1u << left) - 1u);
        const __m512 a = _mm512_maskz_loadu_ps(m, r0 + c0);
        const __m512 b = r1 ? _mm512_maskz_loadu_ps(m, r1 + c0) : _mm512_setzero_ps();
        const __m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(a));
        const __m512i hi = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(b));
        _mm512_storeu_si512((void *)(P + ((size_t)cb * kp + p) * 16), _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
    }
}

// Lower-triangle tile: C[j][i0 .. i0 + 47] for j in j0 .. j0 + 7 (j ≥ i0), over pairs p0 .. p1.
// acc[b][jj] lane l = Σ_p A[·, i0 + 16b + l]·A[·, j0 + jj], so each accumulator is a contiguous
// piece of row j of C (the transpose of the upper tile: C is symmetric).
GRAM512 static void gram_tile(const uint32_t *P, int kp, int n, int i0, int j0, int p0, int p1, float alpha,
                              float *C, int ldc, int first) {
    const uint32_t *a0 = P + (size_t)(i0 / 16) * kp * 16, *a1 = a0 + (size_t)kp * 16, *a2 = a1 + (size_t)kp * 16;
    const uint32_t *bj = P + (size_t)(j0 / 16) * kp * 16 + (j0 & 15);
    __m512 acc[3][GRAM_NJ];
    for (int b = 0; b < 3; b++)
        for (int jj = 0; jj < GRAM_NJ; jj++) acc[b][jj] = _mm512_setzero_ps();
    for (int p = p0; p < p1; p++) {
        const __m512bh x0 = (__m512bh)_mm512_loadu_si512((const void *)(a0 + (size_t)p * 16));
        const __m512bh x1 = (__m512bh)_mm512_loadu_si512((const void *)(a1 + (size_t)p * 16));
        const __m512bh x2 = (__m512bh)_mm512_loadu_si512((const void *)(a2 + (size_t)p * 16));
        const uint32_t *bp = bj + (size_t)p * 16;
        for (int jj = 0; jj < GRAM_NJ; jj++) {
            const __m512bh y = (__m512bh)_mm512_set1_epi32((int)bp[jj]);
            acc[0][jj] = _mm512_dpbf16_ps(acc[0][jj], x0, y);
            acc[1][jj] = _mm512_dpbf16_ps(acc[1][jj], x1, y);
            acc[2][jj] = _mm512_dpbf16_ps(acc[2][jj], x2, y);
        }
    }
    const __m512 al = _mm512_set1_ps(alpha);
    for (int jj = 0; jj < GRAM_NJ; jj++) {
        const int j = j0 + jj;
        if (j >= n) break;
        float *row = C + (size_t)j * ldc;
        for (int b = 0; b < 3; b++) {
            const int c0 = i0 + 16 * b, left = (j + 1 < n ? j + 1 : n) - c0;  // columns i ≤ j only
            if (left <= 0) break;
            const __mmask16 m = (__mmask16)(left >= 16 ? 0xFFFFu : (1u << left) - 1u);
            const __m512 v = _mm512_mul_ps(acc[b][jj], al);
            _mm512_mask_storeu_ps(row + c0, m, first ? v : _mm512_add_ps(_mm512_maskz_loadu_ps(m, row + c0), v));
        }
    }
}

// Tile row t of the lower triangle: columns i0 .. i0 + 47, rows j from i0 to n.
GRAM512 static void gram_panel(const uint32_t *P, int n, int kp, int t, float alpha, float *C, int ldc) {
    const int i0 = t * GRAM_MI;
    for (int p0 = 0; p0 < kp; p0 += GRAM_KC) {
        const int p1 = p0 + GRAM_KC < kp ? p0 + GRAM_KC : kp;
        for (int j0 = i0; j0 < n; j0 += GRAM_NJ) gram_tile(P, kp, n, i0, j0, p0, p1, alpha, C, ldc, p0 == 0);
    }
}

void qlm_gram_bf16(int n, int k, float alpha, const float *A, int lda, float *C, int ldc, void *scratch) {
    if (n <= 0) return;
    if (k <= 0) {
        for (int j = 0; j < n; j++) memset(C + (size_t)j * ldc, 0, (size_t)(j + 1) * sizeof(float));
        return;
    }
    if (!qlm_gram_bf16_supported()) {
        qlm_gram_bf16_ref(n, k, alpha, A, lda, C, ldc);
        return;
    }
    uint32_t *P = (uint32_t *)scratch;
    const int kp = gram_pairs(k), ntiles = gram_npad(n) / GRAM_MI;
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
    for (int p = 0; p < kp; p++) gram_pack_pair(n, k, p, A, lda, P);
    // Tile row t has work ∝ ntiles − t, so each task takes rows u and ntiles − 1 − u (equal work;
    // static scheduling: dynamic needs __kmpc_dispatch_deinit, which the system libomp.so.5 lacks).
    // Each entry is summed by one thread in a fixed order: the result does not depend on the
    // thread count.
    const int ntasks = (ntiles + 1) / 2;
#ifdef _OPENMP
#pragma omp parallel for schedule(static, 1)
#endif
    for (int u = 0; u < ntasks; u++) {
        gram_panel(P, n, kp, u, alpha, C, ldc);
        if (ntiles - 1 - u != u) gram_panel(P, n, kp, ntiles - 1 - u, alpha, C, ldc);
    }
}
#else
int qlm_gram_bf16_supported(void) { return 0; }
void qlm_gram_bf16(int n, int k, float alpha, const float *A, int lda, float *C, int ldc, void *scratch) {
    (void)scratch;
    qlm_gram_bf16_ref(n, k, alpha, A, lda, C, ldc);
}
#endif
