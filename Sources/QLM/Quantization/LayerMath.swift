import Foundation
import QLMKernels

// Shared pieces of the per-layer solvers (GPTQ.swift, LeanQuant.swift, QuantEase.swift):
// options/results, the layer objective, act-order, damping + inverse-Cholesky factor, grids in
// the transposed working layout, and assembly of the QuantizedMatrix.
//
// Working layout: the solvers keep W transposed ([cols, rows], "…T" arrays) in STORED column
// order (after the optional act-order permutation), so one weight column is contiguous.

/// Options of the calibration-based solvers (defaults from docs/ALGORITHMS.md).
public struct SolverOptions: Sendable {
    /// Damping λ = damp · mean(diag H) added to diag H (GPTQ, LeanQuant; QuantEase uses none).
    public var damp = 0.01
    /// Permute columns by diag(H), descending; the result keeps them permuted (`q.perm`).
    public var actOrder = false
    /// GPTQ lazy-batch block (rounded to a multiple of the group size when groups are used).
    public var blockSize = 128
    /// LeanQuant exponent p: column sample weight U_jj^(−p).
    public var exponent = 4.0
    /// QuantEase outer iterations.
    public var iters = 30
    /// QuantEase outlier variant: whole input columns instead of single weights.
    public var structuredOutliers = false
    /// TesseraQ: Adam steps per progressive-rounding round (20 rounds; the paper uses 250 steps).
    public var tesseraSteps = 20
    /// TesseraQ: initial grids clipped by the diag(H)-weighted search (else plain min-max).
    public var tesseraClip = true
    public init() {}
}

public struct SolverResult: Sendable {
    public var q: QuantizedMatrix
    /// `layerLoss(W, q.dequantize(), H)` with the H passed to the solver.
    public var loss: Double
}

/// The layer objective tr((W − Ŵ) H (W − Ŵ)ᵀ), Ŵ in original column order, accumulated in f64.
///
/// Constant factor: none. With the GPTQ-convention Hessian H = (2/N) Σ x xᵀ (N calibration
/// sequences) this is (2/N)·‖X (W − Ŵ)ᵀ‖², i.e. twice the output squared error per sequence;
/// with H = Σ x xᵀ (QuantEase's Σ) it is ‖X (W − Ŵ)ᵀ‖² itself.
public func layerLoss(_ W: [Float], _ What: [Float], rows: Int, cols: Int, H: [Double]) -> Double {
    precondition(W.count == rows * cols && What.count == rows * cols && H.count == cols * cols)
    return W.withUnsafeBufferPointer { w in
        What.withUnsafeBufferPointer { q in
            H.withUnsafeBufferPointer { h in
                qlm_quad_trace(w.baseAddress!, q.baseAddress!, h.baseAddress!, Int32(rows), Int32(cols))
            }
        }
    }
}

/// A solver's result plus the Ŵ (original column order, outliers included) its loss was computed on.
struct SolverOutput {
    var result: SolverResult
    var what: [Float]
}

// MARK: - Column order

/// Columns by diag(H) descending (ties: lower index first).
func actOrderPermutation(_ H: [Double], n: Int) -> [Int] {
    (0..<n).sorted { a, b in
        let da = H[a * n + a], db = H[b * n + b]
        return da != db ? da > db : a < b
    }
}

/// H[perm][:, perm].
func permuteSymmetric(_ H: [Double], n: Int, perm: [Int]) -> [Double] {
    var out = [Double](repeating: 0, count: n * n)
    for i in 0..<n {
        let src = perm[i] * n
        for j in 0..<n { out[i * n + j] = H[src + perm[j]] }
    }
    return out
}

/// Wᵀ in stored order: out[c, r] = W[r, perm[c]]  ([cols, rows]).
func transposedColumns(_ W: [Float], rows: Int, cols: Int, perm: [Int]?) -> [Float] {
    var out = [Float](repeating: 0, count: rows * cols)
    W.withUnsafeBufferPointer { w in
        out.withUnsafeMutableBufferPointer { o in
            for c in 0..<cols {
                let src = perm?[c] ?? c
                for r in 0..<rows { o[c * rows + r] = w[r * cols + src] }
            }
        }
    }
    return out
}

/// Row-major [rows, cols] in ORIGINAL order from a stored-order transposed [cols, rows].
func untransposedColumns(_ XT: [Float], rows: Int, cols: Int, perm: [Int]?) -> [Float] {
    var out = [Float](repeating: 0, count: rows * cols)
    XT.withUnsafeBufferPointer { x in
        out.withUnsafeMutableBufferPointer { o in
            for c in 0..<cols {
                let dst = perm?[c] ?? c
                for r in 0..<rows { o[r * cols + dst] = x[c * rows + r] }
            }
        }
    }
    return out
}

// MARK: - Damping and the inverse-Cholesky factor

/// GPTQ's U: upper triangular with (H + λI)⁻¹ = UᵀU, λ = damp · mean(diag H), as f32 [n, n].
/// If H + λI is not positive definite, λ is raised tenfold (from at least 1e-6 · mean diag) up
/// to six times before giving up.
func dampedInverseCholeskyUpper(_ H: [Double], n: Int, damp: Double) throws -> [Float] {
    var mean = 0.0
    for j in 0..<n { mean += H[j * n + j] }
    mean /= Double(max(n, 1))
    var lambda = damp * mean
    for attempt in 0..<7 {
        var A = H
        for j in 0..<n { A[j * n + j] += lambda }
        let info = A.withUnsafeMutableBufferPointer { qlm_chol_inverse_upper($0.baseAddress!, Int32(n)) }
        if info == 0 { return A.map { Float($0) } }
        if attempt == 6 { break }
        lambda = max(lambda * 10, 1e-6 * max(mean, 1e-30))
    }
    throw QLMError.invalidArgument("layer Hessian is not positive definite even with damping \(lambda)")
}

// MARK: - Outlier selection

/// Mask of the k largest |x| (ties: lower index first).
func topKAbsMask(_ x: [Float], k: Int) -> [Bool] {
    var mask = [Bool](repeating: false, count: x.count)
    guard k > 0 else { return mask }
    if k >= x.count { return [Bool](repeating: true, count: x.count) }
    var scratch = [Float](repeating: 0, count: x.count)
    let thr = x.withUnsafeBufferPointer { xp in
        scratch.withUnsafeMutableBufferPointer { s in qlm_kth_largest_abs(xp.baseAddress!, x.count, k, s.baseAddress!) }
    }
    var n = 0
    for i in 0..<x.count where abs(x[i]) > thr { mask[i] = true; n += 1 }
    var i = 0
    while n < k && i < x.count {
        if !mask[i] && abs(x[i]) == thr { mask[i] = true; n += 1 }
        i += 1
    }
    return mask
}

// MARK: - Grids in the working layout

/// Per-column grid of a layer (affine per (row, group) or one LUT per row), laid out for the C
/// kernels (qlm_grid).
final class SolverGrid {
    let format: WeightFormat
    let rows: Int, cols: Int, bits: Int
    let groupSize: Int
    var scaleT: [Float]     // [nGroups, rows]
    var zeroT: [Float]
    var lut: [Float]        // [rows, K] values of the stored codebooks
    var mids: [Float]       // [rows, K-1]
    var lutLevels: [UInt8]  // [rows, K] what is stored: bytes on each row's 8-bit grid
    var lutScale: [Float]   // [rows]
    var lutZero: [Float]    // [rows]
    var nGroups: Int { (cols + groupSize - 1) / groupSize }
    var K: Int { 1 << bits }

    init(spec: QuantSpec, rows: Int, cols: Int) {
        format = spec.format; self.rows = rows; self.cols = cols; bits = spec.bits
        groupSize = spec.format == .affine ? min(spec.groupSize ?? cols, cols) : cols
        let ng = (cols + groupSize - 1) / groupSize
        scaleT = format == .affine ? [Float](repeating: 1, count: ng * rows) : []
        zeroT = format == .affine ? [Float](repeating: 0, count: ng * rows) : []
        lut = format == .lut ? [Float](repeating: 0, count: rows << spec.bits) : []
        mids = format == .lut ? [Float](repeating: 0, count: rows * ((1 << spec.bits) - 1)) : []
        lutLevels = format == .lut ? [UInt8](repeating: 0, count: rows << spec.bits) : []
        lutScale = format == .lut ? [Float](repeating: 1, count: rows) : []
        lutZero = format == .lut ? [Float](repeating: 0, count: rows) : []
    }

    func setAffine(group: Int, row: Int, _ g: AffineGrid) {
        scaleT[group * rows + row] = g.scale
        zeroT[group * rows + row] = g.zero
    }

    func affine(group: Int, row: Int) -> AffineGrid {
        var g = AffineGrid(min: 0, max: 0, bits: bits, sym: false)
        g.scale = scaleT[group * rows + row]; g.zero = zeroT[group * rows + row]
        return g
    }

    func setLUT(row: Int, _ g: LUTGrid) {
        let k = K
        for i in 0..<k { lut[row * k + i] = g.values[i]; lutLevels[row * k + i] = g.levels[i] }
        lutScale[row] = g.scale; lutZero[row] = g.zero
        for i in 0..<(k - 1) { mids[row * (k - 1) + i] = (g.values[i] + g.values[i + 1]) * 0.5 }
    }

    /// Dequantized value of `code` at (row, stored column c); same arithmetic as the C kernels.
    @inline(__always) func value(row r: Int, col c: Int, code: UInt8) -> Float {
        if format == .affine {
            let i = (c / groupSize) * rows + r
            return scaleT[i] * (Float(code) - zeroT[i])
        }
        return lut[r * K + Int(code)]
    }

    func withC<R>(_ body: (UnsafePointer<qlm_grid>) throws -> R) rethrows -> R {
        try scaleT.withUnsafeBufferPointer { s in
            try zeroT.withUnsafeBufferPointer { z in
                try lut.withUnsafeBufferPointer { l in
                    try mids.withUnsafeBufferPointer { m in
                        var g = qlm_grid()
                        g.kind = Int32(format == .affine ? QLM_GRID_AFFINE : QLM_GRID_LUT)
                        g.rows = Int32(rows)
                        g.maxq = Int32((1 << bits) - 1)
                        g.group_size = Int32(groupSize)
                        g.scaleT = s.baseAddress
                        g.zeroT = z.baseAddress
                        g.K = Int32(K)
                        g.lut = l.baseAddress
                        g.mids = m.baseAddress
                        return try withUnsafePointer(to: &g) { try body($0) }
                    }
                }
            }
        }
    }

    /// The QuantizedMatrix for codesT [cols, rows] (stored order) plus sparse residuals
    /// `outliers` (stored column, row) → value, in original column indices in the CSR.
    func quantizedMatrix(codesT: [UInt8], perm: [Int]?, outliers: [(col: Int, row: Int, value: Float)]) -> QuantizedMatrix {
        var q = QuantizedMatrix(rows: rows, cols: cols, format: format, bits: bits, groupSize: groupSize,
                                codes: [UInt8](repeating: 0, count: rows * cols))
        codesT.withUnsafeBufferPointer { ct in
            q.codes.withUnsafeMutableBufferPointer { cd in
                for c in 0..<cols { for r in 0..<rows { cd[r * cols + c] = ct[c * rows + r] } }
            }
        }
        if format == .affine {
            let ng = nGroups
            q.scales = [UInt16](repeating: 0, count: rows * ng)
            q.zeros = q.scales
            for g in 0..<ng {
                for r in 0..<rows {
                    q.scales[r * ng + g] = f16Bits(scaleT[g * rows + r])
                    q.zeros[r * ng + g] = f16Bits(zeroT[g * rows + r])
                }
            }
        } else {
            q.lut = lutLevels
            q.scales = lutScale.map(f16Bits)
            q.zeros = lutZero.map(f16Bits)
        }
        if let p = perm { q.perm = p.map { Int32($0) } }
        if !outliers.isEmpty {
            var perRow = [[(UInt16, Float)]](repeating: [], count: rows)
            for o in outliers { perRow[o.row].append((UInt16(perm?[o.col] ?? o.col), o.value)) }
            q.outRowPtr = [0]
            for r in 0..<rows {
                for (c, v) in perRow[r].sorted(by: { $0.0 < $1.0 }) { q.outCol.append(c); q.outVal.append(v) }
                q.outRowPtr.append(Int32(q.outVal.count))
            }
        }
        return q
    }
}

/// f16-format "solver" result (no calibration needed): exact f16 rounding.
func f16Output(_ W: [Float], rows: Int, cols: Int, H: [Double], spec: QuantSpec) throws -> SolverOutput {
    let q = try quantizeRTN(W, rows: rows, cols: cols, spec: spec)
    let what = q.halves.map { qlm_f16_to_f32($0) }
    return SolverOutput(result: SolverResult(q: q, loss: layerLoss(W, what, rows: rows, cols: cols, H: H)), what: what)
}

/// Weighted or plain k-means LUT for every row of a stored-order transposed matrix, 2 rows at a
/// time. `include(r, c)` selects the entries the codebook is fitted to (outliers excluded).
func fitRowLUTs(_ grid: SolverGrid, XT: [Float], weights: [Float]?, include: ((Int, Int) -> Bool)? = nil) {
    let rows = grid.rows, cols = grid.cols, k = grid.K
    var results = [LUTGrid?](repeating: nil, count: rows)
    let lock = NSLock()
    let chunks = min(rows, 2 * max(1, ProcessInfo.processInfo.activeProcessorCount))
    XT.withUnsafeBufferPointer { xt in
        DispatchQueue.concurrentPerform(iterations: chunks) { ch in
            let r0 = rows * ch / chunks, r1 = rows * (ch + 1) / chunks
            var local: [(Int, LUTGrid)] = []
            for r in r0..<r1 {
                var x: [Float] = [], w: [Float] = []
                x.reserveCapacity(cols); w.reserveCapacity(cols)
                for c in 0..<cols where include?(r, c) ?? true {
                    x.append(xt[c * rows + r]); w.append(weights?[c] ?? 1)
                }
                if x.isEmpty { x = [0]; w = [1] }
                let (cent, _) = weightedKMeans1D(x, weights: weights == nil ? nil : w, k: k)
                local.append((r, LUTGrid(values: cent)))
            }
            lock.lock(); for (r, g) in local { results[r] = g }; lock.unlock()
        }
    }
    for r in 0..<rows { grid.setLUT(row: r, results[r]!) }
}
