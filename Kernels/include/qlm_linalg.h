// Linear-algebra helpers and hot loops for the per-layer quantization solvers
// (GPTQ, LeanQuant, QuantEase; Sources/QLM/Quantization/{GPTQ,LeanQuant,QuantEase,LayerMath}.swift).
//
// Conventions: matrices are row-major. The solvers keep the working weights TRANSPOSED
// ("…T" arrays, [cols, rows]) so that one weight column (all output rows) is contiguous.
// Column indices are in STORED order (after an optional act-order permutation).
#ifndef QLM_LINALG_H
#define QLM_LINALG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------------------------------------
// Dense BLAS / LAPACK wrappers (never call inside an OpenMP parallel region)
// ---------------------------------------------------------------------------------------------
// C[M, N] = alpha · op(A) · op(B) + beta · C, op(X) = Xᵀ when trans* != 0. Row-major.
void qlm_la_sgemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
                  const float *B, int ldb, float beta, float *C, int ldc);
void qlm_la_dgemm(int transA, int transB, int M, int N, int K, double alpha, const double *A, int lda,
                  const double *B, int ldb, double beta, double *C, int ldc);

// In place: A (n×n, symmetric positive definite, row-major) → the upper-triangular U with
// A⁻¹ = UᵀU (GPTQ's "Cholesky of the inverse", upper=True), strict lower triangle zeroed.
// Computed as U = (J·chol(J A J)·J)⁻¹ with J the reversal permutation (one dpotrf + one dtrtri).
// Returns 0 on success, the LAPACK info (> 0: not positive definite) otherwise; A is then garbage.
int qlm_chol_inverse_upper(double *A, int n);

// Σ_r (W_r − Ŵ_r) H (W_r − Ŵ_r)ᵀ = tr((W − Ŵ) H (W − Ŵ)ᵀ) for W, What [rows, cols] f32 and
// H [cols, cols] f64, accumulated in double (dgemm over row chunks).
double qlm_quad_trace(const float *W, const float *What, const double *H, int rows, int cols);

// Largest eigenvalue of the symmetric PSD matrix A (n×n) by power iteration (Rayleigh quotient).
double qlm_sym_lambda_max(const double *A, int n, int iters);

// The k-th largest |x[i]| (k in 1..n); scratch holds n floats.
float qlm_kth_largest_abs(const float *x, size_t n, size_t k, float *scratch);

// ---------------------------------------------------------------------------------------------
// Per-column grid quantization shared by the solvers
// ---------------------------------------------------------------------------------------------
enum { QLM_GRID_AFFINE = 0, QLM_GRID_LUT = 1 };

typedef struct {
    int kind;               // QLM_GRID_AFFINE or QLM_GRID_LUT
    int rows;
    // affine: w = scale·(q − zero), q = clamp(round_half_even(w/scale + zero), 0, maxq)
    int maxq;
    int group_size;         // stored columns per group
    const float *scaleT;    // [n_groups, rows]
    const float *zeroT;     // [n_groups, rows]
    // lut: q = #{k : w > mids[r, k]}, w = lut[r, q]
    int K;                  // 2^bits
    const float *lut;       // [rows, K] sorted
    const float *mids;      // [rows, K − 1], mids[k] = (lut[k] + lut[k+1]) · 0.5f
} qlm_grid;

// Quantize v[rows] (a value of stored column c for every row) to the grid: q[r] values, code[r].
void qlm_grid_quantize_col(const qlm_grid *g, int c, const float *v, float *q, uint8_t *code);

// GPTQ inner loop over stored columns [c0, c1) of XT [cols, rows] (the working W, transposed):
//   w = XT[c]; q = Q(w) (q = w exactly where keepT[c, r] == 0); ET[c − ebase] = (w − q) / U[c, c];
//   XT[c'] −= U[c, c'] · ET[c − ebase] for c < c' < cend;  XT[c] = q;  codesT[c] = codes.
// U is the upper inverse-Cholesky factor [cols, cols] (leading dimension ldu), absolute indices.
void qlm_gptq_columns(const qlm_grid *g, float *XT, int c0, int c1, int cend, const float *U, int ldu,
                      const uint8_t *keepT, float *ET, int ebase, uint8_t *codesT);

// QuantEase coordinate descent over stored columns [c0, c1) (one block):
//   u = dead[c] ? TT[c] : WhT[c] + Gblk[c − c0];  q = round ? Q(u) : u;
//   dDT[c − c0] = WhT[c] − q;  WhT[c] = q;  Gblk[c' − c0] += S[c, c'] · dDT[c − c0] for c < c' < c1.
// Gblk holds G = (T − Ŵ)·S̃ for the block's columns (S̃[k, j] = Σ_kj / Σ_jj, S̃_jj = 1), so u is
// the exact minimiser of the layer objective over column c with the other columns fixed.
// codesT [cols, rows] is written when round != 0.
void qlm_cd_columns(const qlm_grid *g, int round, float *WhT, const float *TT, const uint8_t *dead,
                    int c0, int c1, float *Gblk, const float *S, int lds, float *dDT, uint8_t *codesT);

// LeanQuant affine grid search for one group of n stored columns [c0, c0 + n) of XT, every row.
// Minimises Σ_j s[j]·(x_j − Q_{lo',hi'}(x_j))² over the kept entries (keepT NULL = all) with
//   lo' = lo + a·range/100, hi' = hi − b·range/100   (lo, hi = min, max of the kept x; range = hi − lo)
// in two stages: a, b ∈ {0, 5, …, 45}, then a, b ∈ {a*−4, …, a*+4} × {b*−4, …, b*+4} ∩ [0, 49].
// Q is exactly AffineGrid(min: lo', max: hi', bits:, sym:) (f16-rounded scale and zero).
// (a, b) = (0, 0) is plain min-max, so the weighted error is never above min-max's.
void qlm_affine_search(const float *XT, int rows, int c0, int n, const float *s, const uint8_t *keepT,
                       int bits, int sym, float *lo_out, float *hi_out);

// Best (lo', hi') of one row's values x[0..m) with weights w, as in qlm_affine_search.
void qlm_affine_search_row(const float *x, const float *w, int m, int bits, int sym, float *lo_out, float *hi_out);

// Gᵀ[j, r] += alpha · Σ_{k0 <= k < k1} S[k, j] · X[k − k0, r] for every j < cols (GT [cols, rows],
// S with leading dimension lds, X [k1 − k0, rows]). Zero X is skipped; a mostly-zero X (< 1/8
// nonzero) is applied with one axpy of S's row per nonzero through `scratch` ([rows, cols] floats,
// all zero on entry and on return), a denser one with sgemm. scratch == NULL: always sgemm.
void qlm_update_gt(float *GT, int rows, int cols, const float *S, int lds, int k0, int k1, const float *X,
                   float alpha, float *scratch);

// ---------------------------------------------------------------------------------------------
// TesseraQ (Sources/QLM/Quantization/TesseraQ.swift): the element-wise halves of one Adam step.
// W, base (⌊W/s + z⌋), nu (rounding logits), hard (-1 soft, 0 down, 1 up) and the outputs are
// [rows, cols]; sp (s·2σ(f)), dsp (s·2σ'(f)), z and gF are [rows, ng] with groups of g columns.
// One thread, in index order: the caller's sgemm owns the cores between the two calls (OpenMP
// workers spinning beside OpenBLAS cost more than they give), and results do not depend on the
// thread count.
// ---------------------------------------------------------------------------------------------
// σ(x) = 1 / (1 + e^(−x)) with a polynomial exp (rel. error < 2e-7), so the loops vectorise.
float qlm_sigmoid(float x);
// code = clamp(base + h(ν), 0, maxq), h = clamp(1.2σ(ν) − 0.1, 0, 1) (or the frozen 0/1);
// D = sp·(code − z) − W, dnu = sp·h'(ν) where nothing clamps (else 0), qz = code − z.
void qlm_tq_forward(int rows, int cols, int g, const float *W, const float *base, const float *nu, const int8_t *hard,
                    const float *sp, const float *z, float maxq, float *D, float *dnu, float *qz);
// With G = ∂L/∂Ŵ: gF[q] += Σ_{i in group q} G·qz·dsp[q] (caller zeroes or seeds it), and for every
// soft weight one Adam update of ν with gradient G·dnu: m, v moments, c1, c2 bias corrections.
void qlm_tq_adam(int rows, int cols, int g, const float *G, const float *dnu, const float *qz, const float *dsp,
                 const int8_t *hard, float *nu, float *m, float *v, float *gF, float lr, float b1, float b2, float c1,
                 float c2, float eps);

#ifdef __cplusplus
}
#endif
#endif
