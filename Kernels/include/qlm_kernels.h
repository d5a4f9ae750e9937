// qlm C kernels: the numeric floor of the runtime.
// Every SIMD kernel has a portable scalar twin (suffix _ref) used by the tests as the oracle.
// Conventions: matrices are row-major f32; a weight W is [rows = out features, cols = in features];
// GEMV computes y[rows] = W · x[cols].
#ifndef QLM_KERNELS_H
#define QLM_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------------------------------------
// ISA dispatch and threads
// ---------------------------------------------------------------------------------------------
typedef enum {
    QLM_ISA_SCALAR = 0,
    QLM_ISA_AVX2 = 1,    // AVX2 + FMA
    QLM_ISA_AVX512 = 2,  // AVX-512 F/BW/VL (+VNNI where a kernel uses it)
    QLM_ISA_NEON = 3,    // AArch64 Advanced SIMD
} qlm_isa;

qlm_isa qlm_isa_best(void);              // best path this CPU supports
qlm_isa qlm_isa_active(void);            // path in use: QLM_ISA env (scalar|avx2|avx512|neon) or forced, else best
int qlm_isa_supported(qlm_isa isa);      // 1 when this CPU can run it
int qlm_isa_force(qlm_isa isa);          // 0 on success, -1 when unsupported (active path unchanged)
const char *qlm_isa_name(qlm_isa isa);

void qlm_set_threads(int n);             // sizes both the OpenMP pool and the BLAS pool; n <= 0 → all cores
int qlm_get_threads(void);
// The thread count a BLAS call would run on now, read as a BLAS call (sharing the BLAS pool):
// prefill attention drops OpenBLAS to 1 thread for its tasks, and no other thread may see that.
int qlm_blas_threads_seen(void);

// ---------------------------------------------------------------------------------------------
// Dense f32 GEMV / GEMM
// ---------------------------------------------------------------------------------------------
// y[rows] = W[rows, cols] · x[cols]; OpenMP over rows, active ISA.
void qlm_gemv_f32(const float *W, const float *x, float *y, int rows, int cols);
// Same on an explicit path (tests, benchmarks); isa must be supported.
void qlm_gemv_f32_isa(qlm_isa isa, const float *W, const float *x, float *y, int rows, int cols);
// Scalar reference (single thread, double accumulation order is NOT used: plain f32 loop).
void qlm_gemv_f32_ref(const float *W, const float *x, float *y, int rows, int cols);

// C[M, N] = A[M, K] · B[N, K]ᵀ (+ beta·C). BLAS sgemm; never call inside an OpenMP region.
void qlm_sgemm_nt(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                  float *C, int ldc, float beta);
// C[M, N] = A[M, K] · B[K, N] (+ beta·C).
void qlm_sgemm_nn(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                  float *C, int ldc, float beta);

// Lower triangle (row ≥ column) of C[n, n] = alpha · Aᵀ A + beta · C for A [k, n] (Hessians XᵀX of
// layer inputs; the same triangle as qlm_gram_bf16, so callers read both alike).
void qlm_ssyrk_t(int n, int k, float alpha, const float *A, int lda, float beta, float *C, int ldc);
// Lower triangle (row ≥ column; the rest untouched) of C[n, n] = alpha · Âᵀ Â for A [k, n], Â = A
// rounded to bf16 (nearest even, denormals flushed), products summed in f32: twice ssyrk's
// arithmetic rate where vdpbf16ps exists (why the precision is enough: qlm_gram.c). The result
// does not depend on the thread count. scratch: qlm_gram_bf16_scratch_bytes(n, k) bytes.
int qlm_gram_bf16_supported(void);  // AVX-512 BF16; without it qlm_gram_bf16 runs the twin
size_t qlm_gram_bf16_scratch_bytes(int n, int k);
void qlm_gram_bf16(int n, int k, float alpha, const float *A, int lda, float *C, int ldc, void *scratch);
void qlm_gram_bf16_ref(int n, int k, float alpha, const float *A, int lda, float *C, int ldc);

// ---------------------------------------------------------------------------------------------
// GGUF block formats (dequantized at load). Sizes asserted in qlm_dequant_gguf.c.
// ---------------------------------------------------------------------------------------------
#define QLM_QK 32
typedef struct {
    uint16_t d;             // f16 scale
    int8_t qs[QLM_QK];      // w = d * q
} qlm_block_q8_0;           // 34 bytes / 32 weights
typedef struct {
    uint16_t d;             // f16 scale
    uint8_t qs[QLM_QK / 2]; // low nibble = element j, high nibble = element j+16; w = d * (q - 8)
} qlm_block_q4_0;           // 18 bytes / 32 weights
typedef struct {
    uint16_t d;             // f16 scale
    uint16_t m;             // f16 min
    uint8_t qs[QLM_QK / 2]; // low nibble = element j, high nibble = element j+16; w = d * q + m
} qlm_block_q4_1;           // 20 bytes / 32 weights

float qlm_f16_to_f32(uint16_t h);
uint16_t qlm_f32_to_f16(float f);        // round to nearest even, overflow → inf
float qlm_bf16_to_f32(uint16_t h);
uint16_t qlm_f32_to_bf16(float f);       // round to nearest even, NaN stays NaN

// n = number of weights (a multiple of 32 for the block formats).
void qlm_dequant_f16(const uint16_t *src, float *dst, size_t n);
void qlm_dequant_bf16(const uint16_t *src, float *dst, size_t n);
void qlm_dequant_q8_0(const void *src, float *dst, size_t n);
void qlm_dequant_q4_0(const void *src, float *dst, size_t n);
void qlm_dequant_q4_1(const void *src, float *dst, size_t n);
void qlm_quant_f16(const float *src, uint16_t *dst, size_t n);
void qlm_quant_bf16(const float *src, uint16_t *dst, size_t n);

// ---------------------------------------------------------------------------------------------
// Transformer ops (f32)
// ---------------------------------------------------------------------------------------------
// out[n] = x[n] / sqrt(mean(x²) + eps) * w[n]; out may alias x.
void qlm_rmsnorm(float *out, const float *x, const float *w, int n, float eps);
// Same over T rows of stride n (prefill). Prefill-side ops are single-threaded on purpose: prefill
// runs on the BLAS pool, and an OpenMP pool spinning beside it on 2 cores costs more than they save.
void qlm_rmsnorm_rows(float *out, const float *x, const float *w, int T, int n, float eps);
// cos/sin tables cs, sn [T, half] for positions pos0 .. pos0+T-1; inv_freq[half] holds the
// (possibly scaled) inverse frequencies. Computed once per batch, shared by every layer.
void qlm_rope_table(float *cs, float *sn, int T, int half, int pos0, const float *inv_freq);
// Rotate-half RoPE (HF layout) in place on x[T, n_heads * head_dim] with tables from qlm_rope_table.
void qlm_rope(float *x, int T, int n_heads, int head_dim, const float *cs, const float *sn);
// h[i] = silu(g[i]) * u[i] over n elements (vectorised exp on AVX2/AVX-512).
void qlm_swiglu(float *h, const float *g, const float *u, size_t n);
void qlm_swiglu_ref(float *h, const float *g, const float *u, size_t n);
// x[i] = exp((x[i] - shift) * scale); returns Σ x[i]. The softmax / log-sum-exp core.
double qlm_exp_shift_sum(float *x, int n, float shift, float scale);
double qlm_exp_shift_sum_ref(float *x, int n, float shift, float scale);
// In-place numerically stable softmax over n.
void qlm_softmax(float *x, int n);

// Causal GQA attention for T new queries at positions pos0..pos0+T-1 against a KV cache that
// already holds positions 0..pos0+T-1.
//   q[T, n_heads*hd], kcache/vcache[max_seq, n_kv*hd] (row stride n_kv*hd), out[T, n_heads*hd],
//   scratch: at least qlm_attention_scratch_floats(T, pos0+T, n_heads) floats.
// Uses BLAS for long prefills and a fused per-head loop for decode (T small).
// omp_tasks (prefill): 1 runs the (KV head, 256-query chunk) GEMM pairs as tasks on the OpenMP
// threads, each sgemm single-threaded — for callers whose linears also run on OpenMP (the packed
// integer GEMMs, qlm_qgemm_uses_i16); 0 runs them in order on OpenBLAS's threads (linears that are
// sgemm). Either way the result does not depend on it beyond summation order.
size_t qlm_attention_scratch_floats(int T, int n_ctx, int n_heads, int n_kv_heads, int head_dim);
void qlm_attention(const float *q, const float *kcache, const float *vcache, float *out,
                   int T, int pos0, int n_heads, int n_kv_heads, int head_dim, float *scratch, int omp_tasks);
// The same over an f16 KV cache (rows of n_kv*hd halves; fill with qlm_quant_f16): equals
// qlm_attention on the f32 values of the cached halves up to summation order. Decode reads the
// halves directly (half the bytes of an f32 cache); prefill widens the visible rows into scratch.
size_t qlm_attention_kv16_scratch_floats(int T, int n_ctx, int n_heads, int n_kv_heads, int head_dim);
void qlm_attention_kv16(const float *q, const uint16_t *kcache, const uint16_t *vcache, float *out,
                        int T, int pos0, int n_heads, int n_kv_heads, int head_dim, float *scratch, int omp_tasks);

// log-softmax helpers for perplexity: returns logsumexp(x[0..n)) - x[target].
double qlm_nll_from_logits(const float *logits, int n, int target);
double qlm_nll_from_logits_ref(const float *logits, int n, int target);  // double-precision exp
// out[r] = NLL of targets[r] under logits row r, for rows of logits[rows, n].
void qlm_nll_rows(const float *logits, int rows, int n, const int32_t *targets, double *out);

#ifdef __cplusplus
}
#endif
#endif
