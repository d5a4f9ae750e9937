import Foundation
import QLMKernels

/// LeanQuant (docs/ALGORITHMS.md §2): GPTQ (same dead columns, act-order, damping, U, blocks and
/// error feedback — see `gptqQuantize`) on a loss-error-aware grid. Column j's sample weight is
/// s_j = U_jj^(−p), p = `options.exponent` (the GPTQ loss of quantizing column j is
/// (w − q)²/U_jj², so columns with small U_jj count more).
///
/// - `.lut`: one codebook of 2^bits values per output row, fitted once before the loop by
///   weighted 1-D k-means (`weightedKMeans1D`: Lloyd, linspace(min, max) init for every K, at most
///   100 iterations) on the row of the original (act-order-permuted, dead-columns-zeroed) W with
///   weights s; codes = nearest codebook value. p = 0 gives plain k-means grids.
/// - `.affine` (LeanQuant_aff, not in the official code; the enumerative search is our
///   reading of the paper): at each group boundary (on the already-updated W, as GPTQ fits its
///   min-max grid; one group per row → once on the original W) every row's range is searched:
///   with lo, hi = min, max of the group's values and R = hi − lo, the candidates are
///   lo' = lo + a·R/100, hi' = hi − b·R/100 (both ends shrink independently, which also shifts
///   the range), the grid of a candidate is exactly `AffineGrid(min: lo', max: hi', bits:, sym:)`
///   (f16 scale/zero), and its score is Σ_j s_j (w_j − Q(w_j))² over the group's columns.
///   Stage 1 tries a, b ∈ {0, 5, …, 45} (100 pairs), stage 2 refines a, b ∈ best ± 4 in steps of 1
///   (within 0…49). a = b = 0 is GPTQ's min-max grid, so the weighted error is never worse than it.
/// Outliers (`spec.outlierFraction > 0`) as in `gptqQuantize`.
public func leanQuantize(_ W: [Float], rows: Int, cols: Int, H: [Double], spec: QuantSpec, options: SolverOptions) throws -> SolverResult {
    try leanQuantSolve(W, rows: rows, cols: cols, H: H, spec: spec, options: options).result
}

func leanQuantSolve(_ W: [Float], rows: Int, cols: Int, H: [Double], spec: QuantSpec, options: SolverOptions) throws -> SolverOutput {
    let mode: GPTQGridMode = spec.format == .lut ? .lut(exponent: options.exponent) : .leanAffine(exponent: options.exponent)
    return try gptqSolve(W, rows: rows, cols: cols, H: H, spec: spec, options: options, grid: mode)
}
