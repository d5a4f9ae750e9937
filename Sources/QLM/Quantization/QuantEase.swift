import Foundation
import QLMKernels

/// QuantEase (docs/ALGORITHMS.md §3): cyclic coordinate descent on the layer objective
/// tr((W − Ŵ) Σ (W − Ŵ)ᵀ) over Ŵ on the grid. H is used as Σ (its scale does not matter: CD
/// and the IHT step below are invariant to it); no damping, no inverse.
///
/// - Grid parameters come from the ORIGINAL W (stored order): affine min-max per (row, group),
///   or, for `.lut`, one plain k-means codebook per row; they stay fixed.
/// - Ŵ starts at W. Each iteration t = 0…iters−1 is one pass over the columns j in stored order:
///   u = W_j + Σ_{k≠j} (W_k − Ŵ_k) Σ_kj / Σ_jj (the exact per-column minimiser), Ŵ_j = Q(u).
///   Passes with t % 3 == 1 skip the rounding (Ŵ_j = u, a continuous least-squares pass), except
///   t > 25 and the last pass, which always round, so the result is on the grid.
///   Columns with Σ_jj = 0 are simply rounded (u = W_j).
/// - Implementation: G = (W − Ŵ)·S̃ (S̃_kj = Σ_kj/Σ_jj) is kept up to date: columns are processed
///   in blocks of 32 in C (u = Ŵ_j + G_j, in-block corrections from the block's earlier columns),
///   and after each block the block's change is applied to G for every column (sgemm, or one
///   axpy per changed weight once the rounded passes have settled and few weights move). G is
///   recomputed from scratch every 10 iterations to stop f32 drift.
/// - act-order (`options.actOrder`) permutes by diag Σ, and the result keeps the permutation.
///
/// Outlier-aware variant (`spec.outlierFraction = f > 0`, Alg. 3): W ≈ Ŵ + S with S sparse.
/// - unstructured: k = round(rows·cols·f) entries; structured (`options.structuredOutliers`):
///   k = round(cols·f) whole input columns (chosen by L2 norm).
/// - init: S = the top-k of W (largest |w|, or columns by norm), Ŵ = W − S.
/// - grid: unstructured — per (row, group) the m = round(n·f/2) smallest and largest of the n
///   values are left out of the min-max (the LUT's k-means likewise per row); structured —
///   fitted on the non-outlier columns.
/// - each iteration: (a) the CD pass above with target W − S; (b) one IHT step
///   S ← S − η (S Σ + Ŵ Σ − W Σ), η = 1/(2 λ_max(Σ)) (λ_max by power iteration), then S is
///   projected onto its top-k entries (or top-k columns by L2 norm).
/// - output: Ŵ is the dense grid part, S goes to the CSR outliers (original column indices), so
///   dense + sparse = Ŵ + S; the number of outliers is k (unstructured) or k·rows (structured).
/// With k = 0 every step reduces to plain QuantEase, bit for bit.
public func quantEase(_ W: [Float], rows: Int, cols: Int, H: [Double], spec: QuantSpec, options: SolverOptions) throws -> SolverResult {
    try quantEaseSolve(W, rows: rows, cols: cols, H: H, spec: spec, options: options, onIteration: nil).result
}

/// Same, recording the layer objective (`layerLoss` of Ŵ + S) after every iteration.
func quantEase(_ W: [Float], rows: Int, cols: Int, H: [Double], spec: QuantSpec, options: SolverOptions,
               trace: inout [Double]) throws -> SolverResult {
    var t: [Double] = []
    let out = try quantEaseSolve(W, rows: rows, cols: cols, H: H, spec: spec, options: options) { t.append($0) }
    trace = t
    return out.result
}

/// Whether QuantEase pass t (0-based) of `iters` rounds to the grid.
func quantEaseRounds(iteration t: Int, iters: Int) -> Bool {
    t % 3 != 1 || t > 25 || t == iters - 1
}

/// Columns per C coordinate-descent block (in-block work is rows·B²/2 per block).
let quantEaseBlock = 32

func quantEaseSolve(_ W: [Float], rows: Int, cols: Int, H: [Double], spec: QuantSpec, options: SolverOptions,
                    onIteration: ((Double) -> Void)?) throws -> SolverOutput {
    try spec.validate(cols: cols)
    guard W.count == rows * cols, H.count == cols * cols, rows > 0, cols > 0 else {
        throw QLMError.invalidArgument("solver: W is \(W.count) values for \(rows)×\(cols), H is \(H.count) for \(cols)²")
    }
    if spec.format == .f16 { return try f16Output(W, rows: rows, cols: cols, H: H, spec: spec) }
    let f = spec.outlierFraction
    if f > 0 && cols > 65535 { throw QLMError.unsupported("outliers need matrices with at most 65535 columns") }

    let perm: [Int]? = options.actOrder ? actOrderPermutation(H, n: cols) : nil
    let Sg = perm.map { permuteSymmetric(H, n: cols, perm: $0) } ?? H   // Σ, stored order
    let WT = transposedColumns(W, rows: rows, cols: cols, perm: perm)   // [cols, rows]
    let n = rows * cols

    var dead = [UInt8](repeating: 0, count: cols)
    for c in 0..<cols where !(Sg[c * cols + c] > 0) { dead[c] = 1 }
    // S̃[k, j] = Σ_kj / Σ_jj (diag exactly 1); dead rows/columns 0.
    var S = [Float](repeating: 0, count: cols * cols)
    for k in 0..<cols where dead[k] == 0 {
        for j in 0..<cols where dead[j] == 0 { S[k * cols + j] = Float(Sg[k * cols + j] / Sg[j * cols + j]) }
    }

    // Outliers.
    let structured = options.structuredOutliers
    var kEntries = 0, kCols = 0
    if f > 0 {
        if structured { kCols = Int((Double(cols) * f).rounded()) } else { kEntries = Int((Double(n) * f).rounded()) }
    }
    let active = kEntries > 0 || kCols > 0
    var HT = [Float]()                      // sparse part, dense storage [cols, rows]
    var support = [Bool]()                  // unstructured: entries of HT kept
    var colSupport = [Bool]()               // structured: columns of HT kept
    func projectColumns(_ X: [Float]) -> [Bool] {
        let norms = (0..<cols).map { c -> Double in
            var s = 0.0
            for r in 0..<rows { let v = Double(X[c * rows + r]); s += v * v }
            return s
        }
        let order = (0..<cols).sorted { norms[$0] != norms[$1] ? norms[$0] > norms[$1] : $0 < $1 }
        var m = [Bool](repeating: false, count: cols)
        for c in order.prefix(kCols) { m[c] = true }
        return m
    }
    if active {
        HT = [Float](repeating: 0, count: n)
        if structured {
            colSupport = projectColumns(WT)
            for c in 0..<cols where colSupport[c] { for r in 0..<rows { HT[c * rows + r] = WT[c * rows + r] } }
        } else {
            support = topKAbsMask(WT, k: kEntries)
            for i in 0..<n where support[i] { HT[i] = WT[i] }
        }
    }

    // Grid from the original W.
    let grid = SolverGrid(spec: spec, rows: rows, cols: cols)
    let trim = (f > 0 && !structured)
    func trimCount(_ cnt: Int) -> Int { trim ? min(Int((Double(cnt) * f / 2).rounded()), (cnt - 1) / 2) : 0 }
    if spec.format == .affine {
        let gs = grid.groupSize
        var vals = [Float]()
        for gi in 0..<grid.nGroups {
            let c0 = gi * gs, c1 = min(cols, c0 + gs)
            for r in 0..<rows {
                vals.removeAll(keepingCapacity: true)
                for c in c0..<c1 where !(structured && active && colSupport[c]) { vals.append(WT[c * rows + r]) }
                var lo: Float = 0, hi: Float = 0
                if !vals.isEmpty {
                    let m = trimCount(vals.count)
                    if m == 0 {
                        lo = vals.min()!; hi = vals.max()!
                    } else {
                        vals.sort()
                        lo = vals[m]; hi = vals[vals.count - 1 - m]
                    }
                }
                grid.setAffine(group: gi, row: r, AffineGrid(min: lo, max: hi, bits: spec.bits, sym: spec.sym))
            }
        }
    } else {
        if structured && active {
            fitRowLUTs(grid, XT: WT, weights: nil, include: { _, c in !colSupport[c] })
        } else if trimCount(cols) > 0 {
            let m = trimCount(cols)
            var keep = [Bool](repeating: true, count: n)   // [cols, rows]
            for r in 0..<rows {
                let order = (0..<cols).sorted { WT[$0 * rows + r] != WT[$1 * rows + r] ? WT[$0 * rows + r] < WT[$1 * rows + r] : $0 < $1 }
                for c in order.prefix(m) { keep[c * rows + r] = false }
                for c in order.suffix(m) { keep[c * rows + r] = false }
            }
            fitRowLUTs(grid, XT: WT, weights: nil, include: { r, c in keep[c * rows + r] })
        } else {
            fitRowLUTs(grid, XT: WT, weights: nil)
        }
    }

    var TT = WT
    if active { for i in 0..<n { TT[i] = WT[i] - HT[i] } }
    var WhT = TT
    var GT = [Float](repeating: 0, count: n)
    var DT = [Float](repeating: 0, count: n)
    let B = quantEaseBlock
    var Gblk = [Float](repeating: 0, count: rows * min(B, cols))
    var dDT = Gblk
    var codesT = [UInt8](repeating: 0, count: n)
    let eta: Double = active ? 1.0 / (2 * Sg.withUnsafeBufferPointer { qlm_sym_lambda_max($0.baseAddress!, Int32(cols), 100) }) : 0

    func refreshG() {
        for i in 0..<n { DT[i] = TT[i] - WhT[i] }
        S.withUnsafeBufferPointer { s in
            DT.withUnsafeBufferPointer { d in
                GT.withUnsafeMutableBufferPointer { g in
                    qlm_la_sgemm(1, 0, Int32(cols), Int32(rows), Int32(cols), 1, s.baseAddress!, Int32(cols),
                                 d.baseAddress!, Int32(rows), 0, g.baseAddress!, Int32(rows))
                }
            }
        }
    }

    var scratch = [Float](repeating: 0, count: n)   // all zero between calls
    func updateG(_ k0: Int, _ k1: Int, _ X: [Float], _ alpha: Float) {
        S.withUnsafeBufferPointer { s in
            X.withUnsafeBufferPointer { x in
                GT.withUnsafeMutableBufferPointer { g in
                    scratch.withUnsafeMutableBufferPointer { sc in
                        qlm_update_gt(g.baseAddress!, Int32(rows), Int32(cols), s.baseAddress!, Int32(cols), Int32(k0), Int32(k1),
                                      x.baseAddress!, alpha, sc.baseAddress!)
                    }
                }
            }
        }
    }

    func currentWhat() -> [Float] {
        var total = WhT
        if active { for i in 0..<n where HT[i] != 0 { total[i] = WhT[i] + HT[i] } }
        return untransposedColumns(total, rows: rows, cols: cols, perm: perm)
    }

    let iters = max(1, options.iters)
    var gValid = false
    for t in 0..<iters {
        let round = quantEaseRounds(iteration: t, iters: iters)
        if !gValid || t % 10 == 0 { refreshG(); gValid = true }
        for bs in stride(from: 0, to: cols, by: B) {
            let be = min(cols, bs + B)
            let cnt = (be - bs) * rows
            GT.withUnsafeBufferPointer { g in
                Gblk.withUnsafeMutableBufferPointer { gb in gb.baseAddress!.update(from: g.baseAddress! + bs * rows, count: cnt) }
            }
            grid.withC { g in
                WhT.withUnsafeMutableBufferPointer { wh in
                    TT.withUnsafeBufferPointer { tt in
                        dead.withUnsafeBufferPointer { dd in
                            Gblk.withUnsafeMutableBufferPointer { gb in
                                S.withUnsafeBufferPointer { s in
                                    dDT.withUnsafeMutableBufferPointer { d in
                                        codesT.withUnsafeMutableBufferPointer { cd in
                                            qlm_cd_columns(g, round ? 1 : 0, wh.baseAddress!, tt.baseAddress!, dd.baseAddress!,
                                                           Int32(bs), Int32(be), gb.baseAddress!, s.baseAddress!, Int32(cols),
                                                           d.baseAddress!, cd.baseAddress!)
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            // G += S̃[bs:be, :]ᵀ · ΔD[bs:be]  (every column, the block's own included; once the
            // rounded passes settle most of ΔD is zero and the sparse path skips it)
            updateG(bs, be, dDT, 1)
        }
        if active {
            // IHT: S ← S + η (T − Ŵ) Σ, and (T − Ŵ) Σ = G · diag(Σ_jj).
            let old = HT
            for c in 0..<cols where dead[c] == 0 {
                let step = Float(eta * Sg[c * cols + c])
                for r in 0..<rows { HT[c * rows + r] += step * GT[c * rows + r] }
            }
            if structured {
                colSupport = projectColumns(HT)
                for c in 0..<cols where !colSupport[c] { for r in 0..<rows { HT[c * rows + r] = 0 } }
            } else {
                support = topKAbsMask(HT, k: kEntries)
                for i in 0..<n where !support[i] { HT[i] = 0 }
            }
            // T = W − S changes by −ΔS (sparse): G += −ΔS · S̃.
            var dH = [Float](repeating: 0, count: n)
            for i in 0..<n { dH[i] = HT[i] - old[i]; TT[i] = WT[i] - HT[i] }
            updateG(0, cols, dH, -1)
        }
        if let cb = onIteration { cb(layerLoss(W, currentWhat(), rows: rows, cols: cols, H: H)) }
    }

    var outliers: [(col: Int, row: Int, value: Float)] = []
    if active {
        for c in 0..<cols {
            for r in 0..<rows where structured ? colSupport[c] : support[c * rows + r] {
                outliers.append((c, r, HT[c * rows + r]))
            }
        }
    }
    let q = grid.quantizedMatrix(codesT: codesT, perm: perm, outliers: outliers)
    let what = currentWhat()
    let loss = layerLoss(W, what, rows: rows, cols: cols, H: H)
    return SolverOutput(result: SolverResult(q: q, loss: loss), what: what)
}
