import Foundation
import QLMKernels

/// GPTQ (docs/ALGORITHMS.md §1) for one layer W [rows, cols] with Hessian H [cols, cols]
/// (row-major f64, H = (2/N) Σ x xᵀ).
///
/// - dead columns (H_jj = 0): H_jj = 1 and W[:, j] = 0;
/// - act-order: columns sorted by diag(H) descending; the result keeps them in that order
///   (`q.perm`), groups are formed over the stored order (act-order without static groups);
/// - λ = damp · mean(diag H) on the diagonal; U = upper Cholesky factor of H⁻¹;
/// - blocks of `blockSize` columns (rounded to a multiple of the group size when groups are
///   used, so a group never straddles two blocks); group parameters (min-max, f16-rounded
///   AffineGrid) are found on the already-updated W at each group boundary; one group per row
///   (`groupSize == nil`) is fitted on the whole W before the loop;
/// - per column: q = Q(w), err = (w − q) / U_ii, in-block eager update, lazy BLAS update of the
///   trailing columns after each block.
/// `.lut` specs get a plain (unweighted) k-means codebook per row (LeanQuant with p = 0).
/// Outliers (`spec.outlierFraction > 0`): the top-|w| fraction of the original W is kept exactly
/// (zero error, no error feedback) and excluded from the grid fit; stored as CSR residuals.
public func gptqQuantize(_ W: [Float], rows: Int, cols: Int, H: [Double], spec: QuantSpec, options: SolverOptions) throws -> SolverResult {
    try gptqSolve(W, rows: rows, cols: cols, H: H, spec: spec, options: options,
                  grid: spec.format == .lut ? .lut(exponent: 0) : .minMax).result
}

/// How the GPTQ loop gets its grid.
enum GPTQGridMode {
    /// Affine min-max per group on the updated W (GPTQ).
    case minMax
    /// LeanQuant affine: loss-error-aware (min, max) search per group, weights U_jj^(−p).
    case leanAffine(exponent: Double)
    /// One k-means codebook per row on the original W, sample weights U_jj^(−p), fitted before the loop.
    case lut(exponent: Double)
}

func gptqSolve(_ W: [Float], rows: Int, cols: Int, H: [Double], spec: QuantSpec, options: SolverOptions,
               grid mode: GPTQGridMode) throws -> SolverOutput {
    try spec.validate(cols: cols)
    guard W.count == rows * cols, H.count == cols * cols, rows > 0, cols > 0 else {
        throw QLMError.invalidArgument("solver: W is \(W.count) values for \(rows)×\(cols), H is \(H.count) for \(cols)²")
    }
    if spec.format == .f16 { return try f16Output(W, rows: rows, cols: cols, H: H, spec: spec) }
    if spec.outlierFraction > 0 && options.structuredOutliers {
        throw QLMError.unsupported("structured outliers are implemented for QuantEase only")
    }

    // Dead columns, act-order, damping, U.
    var Hw = H
    var dead = [Bool](repeating: false, count: cols)
    for j in 0..<cols where Hw[j * cols + j] == 0 { Hw[j * cols + j] = 1; dead[j] = true }
    let perm: [Int]? = options.actOrder ? actOrderPermutation(Hw, n: cols) : nil
    if let p = perm { Hw = permuteSymmetric(Hw, n: cols, perm: p) }
    let U = try dampedInverseCholeskyUpper(Hw, n: cols, damp: options.damp)
    Hw = []

    var XT = transposedColumns(W, rows: rows, cols: cols, perm: perm)   // [cols, rows], stored order
    for c in 0..<cols where dead[perm?[c] ?? c] {
        for r in 0..<rows { XT[c * rows + r] = 0 }
    }

    // Outliers: top-|w| of the original W, in the working layout (keep = 1: quantize).
    var keepT: [UInt8]? = nil
    if spec.outlierFraction > 0 {
        let k = Int((Double(rows * cols) * spec.outlierFraction).rounded())
        if k > 0 {
            let m = topKAbsMask(W, k: k)
            var kt = [UInt8](repeating: 1, count: rows * cols)
            for c in 0..<cols {
                let src = perm?[c] ?? c
                for r in 0..<rows where m[r * cols + src] { kt[c * rows + r] = 0 }
            }
            keepT = kt
        }
    }

    // Column sample weights s_j = U_jj^(−p), scaled so the largest is 1 (a constant factor
    // changes neither k-means nor the search).
    func sampleWeights(_ p: Double) -> [Float] {
        let d = (0..<cols).map { Double(U[$0 * cols + $0]) }
        let dmin = d.min() ?? 1
        return d.map { Float(pow($0 / dmin, -p)) }
    }

    let grid = SolverGrid(spec: spec, rows: rows, cols: cols)
    var weights: [Float] = []
    switch mode {
    case .lut(let p):
        let s = sampleWeights(p)
        let kt = keepT
        fitRowLUTs(grid, XT: XT, weights: s, include: kt.map { k in { r, c in k[c * rows + r] != 0 } })
    case .leanAffine(let p):
        weights = sampleWeights(p)
    case .minMax:
        break
    }

    let gs = grid.groupSize
    var B = max(1, options.blockSize)
    if spec.format == .affine && gs < cols { B = gs * max(1, B / gs) }
    var ET = [Float](repeating: 0, count: rows * min(B, cols))
    var codesT = [UInt8](repeating: 0, count: rows * cols)
    var lo = [Float](repeating: 0, count: rows), hi = lo

    /// Group parameters for stored columns [c0, c0 + n) on the current (updated) XT.
    func fitGroup(_ c0: Int, _ n: Int) {
        let gi = c0 / gs
        switch mode {
        case .leanAffine:
            XT.withUnsafeBufferPointer { x in
                weights.withUnsafeBufferPointer { s in
                    lo.withUnsafeMutableBufferPointer { l in
                        hi.withUnsafeMutableBufferPointer { h in
                            if let kt = keepT {
                                kt.withUnsafeBufferPointer { k in
                                    qlm_affine_search(x.baseAddress!, Int32(rows), Int32(c0), Int32(n), s.baseAddress! + c0, k.baseAddress!,
                                                      Int32(spec.bits), spec.sym ? 1 : 0, l.baseAddress!, h.baseAddress!)
                                }
                            } else {
                                qlm_affine_search(x.baseAddress!, Int32(rows), Int32(c0), Int32(n), s.baseAddress! + c0, nil,
                                                  Int32(spec.bits), spec.sym ? 1 : 0, l.baseAddress!, h.baseAddress!)
                            }
                        }
                    }
                }
            }
        default:
            XT.withUnsafeBufferPointer { x in
                for r in 0..<rows { lo[r] = .infinity; hi[r] = -.infinity }
                for c in c0..<(c0 + n) {
                    let base = c * rows
                    if let kt = keepT {
                        for r in 0..<rows where kt[base + r] != 0 { lo[r] = min(lo[r], x[base + r]); hi[r] = max(hi[r], x[base + r]) }
                    } else {
                        for r in 0..<rows { lo[r] = min(lo[r], x[base + r]); hi[r] = max(hi[r], x[base + r]) }
                    }
                }
            }
            for r in 0..<rows where lo[r] > hi[r] { lo[r] = 0; hi[r] = 0 }
        }
        for r in 0..<rows { grid.setAffine(group: gi, row: r, AffineGrid(min: lo[r], max: hi[r], bits: spec.bits, sym: spec.sym)) }
    }

    for bs in stride(from: 0, to: cols, by: B) {
        let be = min(cols, bs + B)
        var c = bs
        while c < be {
            var segEnd = be
            if spec.format == .affine {
                if c % gs == 0 { fitGroup(c, min(gs, cols - c)) }
                segEnd = min(be, (c / gs + 1) * gs)
            }
            grid.withC { g in
                XT.withUnsafeMutableBufferPointer { x in
                    U.withUnsafeBufferPointer { u in
                        ET.withUnsafeMutableBufferPointer { e in
                            codesT.withUnsafeMutableBufferPointer { cd in
                                if let kt = keepT {
                                    kt.withUnsafeBufferPointer { k in
                                        qlm_gptq_columns(g, x.baseAddress!, Int32(c), Int32(segEnd), Int32(be), u.baseAddress!, Int32(cols),
                                                         k.baseAddress!, e.baseAddress!, Int32(bs), cd.baseAddress!)
                                    }
                                } else {
                                    qlm_gptq_columns(g, x.baseAddress!, Int32(c), Int32(segEnd), Int32(be), u.baseAddress!, Int32(cols),
                                                     nil, e.baseAddress!, Int32(bs), cd.baseAddress!)
                                }
                            }
                        }
                    }
                }
            }
            c = segEnd
        }
        if be < cols {
            // W[:, be:] −= Err · U[bs:be, be:]  ⇔  XT[be:] −= U[bs:be, be:]ᵀ · ET
            XT.withUnsafeMutableBufferPointer { x in
                U.withUnsafeBufferPointer { u in
                    ET.withUnsafeBufferPointer { e in
                        qlm_la_sgemm(1, 0, Int32(cols - be), Int32(rows), Int32(be - bs), -1,
                                     u.baseAddress! + bs * cols + be, Int32(cols), e.baseAddress!, Int32(rows),
                                     1, x.baseAddress! + be * rows, Int32(rows))
                    }
                }
            }
        }
    }

    // XT now holds Ŵ (grid values; exact updated w at outliers).
    var outliers: [(col: Int, row: Int, value: Float)] = []
    if let kt = keepT {
        for c in 0..<cols {
            for r in 0..<rows where kt[c * rows + r] == 0 {
                let dense = grid.value(row: r, col: c, code: codesT[c * rows + r])
                let v = XT[c * rows + r] - dense
                outliers.append((c, r, v))
                XT[c * rows + r] = dense + v
            }
        }
    }
    let q = grid.quantizedMatrix(codesT: codesT, perm: perm, outliers: outliers)
    let what = untransposedColumns(XT, rows: rows, cols: cols, perm: perm)
    let loss = layerLoss(W, what, rows: rows, cols: cols, H: H)
    return SolverOutput(result: SolverResult(q: q, loss: loss), what: what)
}
