import Foundation
import Testing
import QLMKernels
@testable import QLM

/// Synthetic layers for the solver tests.
enum SolverData {
    static func gauss(_ rng: inout SeededRNG) -> Double {
        let u1 = Double.random(in: Double.ulpOfOne..<1, using: &rng), u2 = Double.random(in: 0..<1, using: &rng)
        return (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
    }

    /// W [rows, cols]: Gaussian rows with per-column scale variation and, optionally, a few large
    /// entries (outliers).
    static func weights(_ rows: Int, _ cols: Int, seed: UInt64, outliers: Bool = false) -> [Float] {
        var rng = SeededRNG(seed: seed)
        let colScale = (0..<cols).map { _ in 0.5 + Double.random(in: 0..<1, using: &rng) }
        var W = [Float](repeating: 0, count: rows * cols)
        for r in 0..<rows {
            for c in 0..<cols {
                var v = 0.05 * gauss(&rng) * colScale[c]
                if outliers && Double.random(in: 0..<1, using: &rng) < 0.01 { v *= 12 }
                W[r * cols + c] = Float(v)
            }
        }
        return W
    }

    /// H = (2/N) Σ x xᵀ over N tokens x = A f + noise with a few strong shared factors f, per-feature scales.
    static func hessian(_ cols: Int, tokens: Int, factors: Int = 3, seed: UInt64) -> [Double] {
        var rng = SeededRNG(seed: seed)
        let A = (0..<(cols * factors)).map { _ in gauss(&rng) }
        let scale = (0..<cols).map { _ in 0.3 + 2 * Double.random(in: 0..<1, using: &rng) }
        var X = [Double](repeating: 0, count: tokens * cols)   // [tokens, cols]
        for t in 0..<tokens {
            let f = (0..<factors).map { _ in 3 * gauss(&rng) }
            for c in 0..<cols {
                var v = 0.5 * gauss(&rng)
                for k in 0..<factors { v += A[c * factors + k] * f[k] }
                X[t * cols + c] = v * scale[c]
            }
        }
        var H = [Double](repeating: 0, count: cols * cols)
        X.withUnsafeBufferPointer { x in
            H.withUnsafeMutableBufferPointer { h in
                qlm_la_dgemm(1, 0, Int32(cols), Int32(cols), Int32(tokens), 2 / Double(tokens), x.baseAddress!, Int32(cols),
                             x.baseAddress!, Int32(cols), 0, h.baseAddress!, Int32(cols))
            }
        }
        return H
    }

    static func identity(_ n: Int) -> [Double] {
        var H = [Double](repeating: 0, count: n * n)
        for i in 0..<n { H[i * n + i] = 1 }
        return H
    }

    static func rtnLoss(_ W: [Float], rows: Int, cols: Int, H: [Double], spec: QuantSpec) throws -> Double {
        let q = try quantizeRTN(W, rows: rows, cols: cols, spec: spec)
        return layerLoss(W, q.dequantize(), rows: rows, cols: cols, H: H)
    }

    /// q.dequantize() equals the solver's Ŵ (the one its loss was computed on), and the loss is that of Ŵ.
    static func checkConsistent(_ out: SolverOutput, W: [Float], rows: Int, cols: Int, H: [Double], _ what: String) {
        let deq = out.result.q.dequantize()
        #expect(deq.count == out.what.count, "\(what)")
        let maxW = W.reduce(Float(0)) { max($0, abs($1)) }
        var worst: Float = 0
        for (a, b) in zip(deq, out.what) { worst = max(worst, abs(a - b)) }
        #expect(worst <= 1e-6 * maxW, "\(what): dequantize differs from the solver's Ŵ by \(worst)")
        let l = layerLoss(W, deq, rows: rows, cols: cols, H: H)
        #expect(abs(l - out.result.loss) <= 1e-5 * max(l, 1e-30), "\(what): loss \(out.result.loss) vs dequantized \(l)")
        #expect(out.result.loss.isFinite)
    }

    /// Every dense value lies on the stored grid: the codes dequantize (in Swift, from the stored f16
    /// parameters) to exactly the solver's Ŵ minus its outliers.
    static func checkOnGrid(_ out: SolverOutput, _ what: String) {
        let q = out.result.q
        var dense = out.what
        if !q.outVal.isEmpty {
            for r in 0..<q.rows {
                for i in Int(q.outRowPtr[r])..<Int(q.outRowPtr[r + 1]) { dense[r * q.cols + Int(q.outCol[i])] -= q.outVal[i] }
            }
        }
        var bad = 0
        for r in 0..<q.rows {
            for j in 0..<q.cols {
                let code = q.codes[r * q.cols + j]
                #expect(Int(code) < (1 << q.bits))
                let v: Float
                if q.format == .affine {
                    let g = r * q.nGroups + j / q.groupSize
                    v = qlm_f16_to_f32(q.scales[g]) * (Float(code) - qlm_f16_to_f32(q.zeros[g]))
                } else {
                    v = q.lutGrid(row: r).values[Int(code)]
                }
                let orig = Int(q.perm?[j] ?? Int32(j))
                let d = dense[r * q.cols + orig]
                if abs(d - v) > 1e-6 * max(1, abs(v)) { bad += 1 }
            }
        }
        #expect(bad == 0, "\(what): \(bad) values off the grid")
    }

    /// Fraction of entries where one exact (f64) coordinate-descent step would move Ŵ: Q(u) ≠ ŵ with
    /// u = ŵ + ((W − Ŵ) H)_j / H_jj. Zero at a CD fixed point (QuantEase ends with rounded passes).
    static func nonFixedFraction(_ out: SolverOutput, W: [Float], H: [Double]) -> Double {
        let q = out.result.q, rows = q.rows, cols = q.cols
        var bad = 0
        for r in 0..<rows {
            let d = (0..<cols).map { Double(W[r * cols + $0]) - Double(out.what[r * cols + $0]) }
            for j in 0..<cols {
                let orig = Int(q.perm?[j] ?? Int32(j))
                var g = 0.0
                for k in 0..<cols { g += d[k] * H[k * cols + orig] }
                let w = out.what[r * cols + orig]
                let u = Float(Double(w) + g / H[orig * cols + orig])
                let v: Float
                if q.format == .affine {
                    let gi = r * q.nGroups + j / q.groupSize
                    var grid = AffineGrid(min: 0, max: 1, bits: q.bits, sym: false)
                    grid.scale = qlm_f16_to_f32(q.scales[gi]); grid.zero = qlm_f16_to_f32(q.zeros[gi])
                    v = grid.quantize(u)
                } else {
                    let lut = q.lutGrid(row: r)
                    v = lut.quantize(u)
                }
                if v != w { bad += 1 }
            }
        }
        return Double(bad) / Double(rows * cols)
    }
}

@Suite("Solvers: GPTQ, LeanQuant, QuantEase", .serialized)
final class SolverTests: HoldsKernelState {
    typealias D = SolverData

    @Test("Inverse-Cholesky factor: UᵀU = H⁻¹, U upper; layerLoss = Σ_r d_r H d_rᵀ")
    func linalg() throws {
        let n = 40
        let H = D.hessian(n, tokens: 200, seed: 3)
        var A = H
        for j in 0..<n { A[j * n + j] += 0.01 }
        let meanDiag = (0..<n).reduce(0.0) { $0 + H[$1 * n + $1] } / Double(n)
        let U = try dampedInverseCholeskyUpper(H, n: n, damp: 0.01 / meanDiag)
        // (UᵀU) A = I
        var worst = 0.0
        for i in 0..<n {
            for j in 0..<n {
                var s = 0.0
                for k in 0..<n {
                    var uu = 0.0
                    for m in 0...min(i, k) { uu += Double(U[m * n + i]) * Double(U[m * n + k]) }
                    s += uu * A[k * n + j]
                }
                worst = max(worst, abs(s - (i == j ? 1 : 0)))
            }
        }
        #expect(worst < 1e-3, "UᵀU·H deviates from I by \(worst)")
        for i in 0..<n { for j in 0..<i { #expect(U[i * n + j] == 0) }; #expect(U[i * n + i] > 0) }

        let W = D.weights(5, n, seed: 1), Q = D.weights(5, n, seed: 2)
        var ref = 0.0
        for r in 0..<5 {
            for i in 0..<n {
                for j in 0..<n {
                    ref += (Double(W[r * n + i]) - Double(Q[r * n + i])) * H[i * n + j] * (Double(W[r * n + j]) - Double(Q[r * n + j]))
                }
            }
        }
        let l = layerLoss(W, Q, rows: 5, cols: n, H: H)
        #expect(abs(l - ref) <= 1e-9 * abs(ref))
        // Not positive definite → error, not a crash.
        #expect(throws: QLMError.self) {
            _ = try dampedInverseCholeskyUpper([Double](repeating: -1, count: 9), n: 3, damp: 0)
        }
    }

    @Test("GPTQ with H = I (or diagonal), damp 0, equals RTN code for code")
    func gptqIdentityIsRTN() throws {
        let rows = 24, cols = 128
        let W = D.weights(rows, cols, seed: 11)
        var diag = D.identity(cols)
        var rng = SeededRNG(seed: 5)
        for j in 0..<cols { diag[j * cols + j] = 0.1 + Double.random(in: 0..<3, using: &rng) }
        var o = SolverOptions(); o.damp = 0
        for H in [D.identity(cols), diag] {
            for spec in [QuantSpec(bits: 4, groupSize: nil), QuantSpec(bits: 4, groupSize: 32), QuantSpec(bits: 3, groupSize: 32, sym: true),
                         QuantSpec(bits: 2, groupSize: 64), QuantSpec(format: .lut, bits: 3, groupSize: nil)] {
                let rtn = try quantizeRTN(W, rows: rows, cols: cols, spec: spec)
                let out = try gptqSolve(W, rows: rows, cols: cols, H: H, spec: spec, options: o, grid: spec.format == .lut ? .lut(exponent: 0) : .minMax)
                let g = out.result.q
                #expect(g.codes == rtn.codes, "\(spec.label)")
                #expect(g.scales == rtn.scales && g.zeros == rtn.zeros && g.lut == rtn.lut, "\(spec.label)")
                #expect(g.perm == nil)
                D.checkConsistent(out, W: W, rows: rows, cols: cols, H: H, "gptq \(spec.label)")
            }
        }
    }

    @Test("bf16 Hessians: entries within 1e-3 of √(H_ii·H_jj) of the f32 ones; GPTQ on them loses < 1% on the exact H")
    func bf16Hessian() throws {
        let rows = 48, cols = 200, M = 9000  // three chunks of ≤ 4096 rows
        var rng = SeededRNG(seed: 31)
        let A = (0..<(cols * 3)).map { _ in D.gauss(&rng) }
        var X = [Float](repeating: 0, count: M * cols)
        for t in 0..<M {
            let f = (0..<3).map { _ in 3 * D.gauss(&rng) }
            for c in 0..<cols {
                var v = 0.5 * D.gauss(&rng)
                for k in 0..<3 { v += A[c * 3 + k] * f[k] }
                X[t * cols + c] = Float(v * (0.3 + Double(c % 7)))
            }
        }
        let (h32, h16) = X.withUnsafeBufferPointer { x in
            (accumulateHessian(x.baseAddress!, rows: M, cols: cols, nsamples: 16, precision: .f32),
             accumulateHessian(x.baseAddress!, rows: M, cols: cols, nsamples: 16, precision: .bf16))
        }
        var worst = 0.0
        for i in 0..<cols {
            for j in 0..<cols {
                #expect(h16[i * cols + j] == h16[j * cols + i])
                worst = max(worst, abs(h16[i * cols + j] - h32[i * cols + j]) / (h32[i * cols + i] * h32[j * cols + j]).squareRoot())
            }
        }
        #expect(worst < 1e-3, "bf16 Hessian off by \(worst) of √(H_ii·H_jj)")
        #expect(worst > 0, "bf16 and f32 Hessians identical: the bf16 path did not run")
        let W = D.weights(rows, cols, seed: 32)
        for bits in [4, 3] {
            let spec = QuantSpec(bits: bits, groupSize: nil)
            let a = try gptqQuantize(W, rows: rows, cols: cols, H: h32, spec: spec, options: SolverOptions())
            let b = try gptqQuantize(W, rows: rows, cols: cols, H: h16, spec: spec, options: SolverOptions())
            let lb = layerLoss(W, b.q.dequantize(), rows: rows, cols: cols, H: h32)
            #expect(lb <= 1.01 * a.loss, "W\(bits): GPTQ on the bf16 Hessian \(lb) vs f32 \(a.loss), both on the f32 H")
        }
    }

    @Test("GPTQ beats RTN on correlated inputs (4/3/2-bit, per-row and g64), act-order included")
    func gptqBeatsRTN() throws {
        let rows = 48, cols = 128
        let W = D.weights(rows, cols, seed: 21)
        let H = D.hessian(cols, tokens: 1024, seed: 22)
        for bits in [4, 3, 2] {
            for group in [nil, 64] as [Int?] {
                let spec = QuantSpec(bits: bits, groupSize: group)
                let rtn = try D.rtnLoss(W, rows: rows, cols: cols, H: H, spec: spec)
                for actOrder in [false, true] {
                    var o = SolverOptions(); o.actOrder = actOrder
                    let out = try gptqSolve(W, rows: rows, cols: cols, H: H, spec: spec, options: o, grid: .minMax)
                    #expect(out.result.loss < rtn, "\(spec.label) act-order \(actOrder): gptq \(out.result.loss) rtn \(rtn)")
                    D.checkConsistent(out, W: W, rows: rows, cols: cols, H: H, "gptq \(spec.label) act \(actOrder)")
                    D.checkOnGrid(out, "gptq \(spec.label) act \(actOrder)")
                    if actOrder {
                        let p = try #require(out.result.q.perm).map(Int.init)
                        #expect(p.sorted() == Array(0..<cols), "not a permutation")
                        for (a, b) in zip(p, p.dropFirst()) { #expect(H[a * cols + a] >= H[b * cols + b]) }
                    }
                }
            }
        }
        // A small block size (several lazy updates per group boundary) gives the same result up to rounding.
        var o = SolverOptions(); o.blockSize = 16
        let spec = QuantSpec(bits: 3, groupSize: nil)
        let a = try gptqQuantize(W, rows: rows, cols: cols, H: H, spec: spec, options: o)
        let b = try gptqQuantize(W, rows: rows, cols: cols, H: H, spec: spec, options: SolverOptions())
        #expect(abs(a.loss - b.loss) <= 1e-3 * b.loss)
    }

    @Test("GPTQ matches a plain f64 textbook loop (no blocks, eager updates)")
    func gptqMatchesReference() throws {
        let rows = 32, cols = 128
        let W = D.weights(rows, cols, seed: 81)
        let H = D.hessian(cols, tokens: 1024, seed: 82)
        let U = try dampedInverseCholeskyUpper(H, n: cols, damp: 0.01).map(Double.init)
        for spec in [QuantSpec(bits: 3, groupSize: nil), QuantSpec(bits: 3, groupSize: 32), QuantSpec(bits: 2, groupSize: 64)] {
            let g = spec.groupSize ?? cols
            var Wd = W.map(Double.init)
            var codes = [UInt8](repeating: 0, count: rows * cols)
            var what = [Float](repeating: 0, count: rows * cols)
            var grids = [AffineGrid](repeating: AffineGrid(min: 0, max: 0, bits: spec.bits, sym: false), count: rows)
            for i in 0..<cols {
                for r in 0..<rows {
                    if i % g == 0 { grids[r] = AffineGrid(minMax: (i..<(i + g)).map { Float(Wd[r * cols + $0]) }, bits: spec.bits, sym: spec.sym) }
                    let w = Wd[r * cols + i]
                    let c = grids[r].code(Float(w))
                    codes[r * cols + i] = c
                    what[r * cols + i] = grids[r].value(c)
                    let err = (w - Double(what[r * cols + i])) / U[i * cols + i]
                    for j in (i + 1)..<cols { Wd[r * cols + j] -= err * U[i * cols + j] }
                }
            }
            let refLoss = layerLoss(W, what, rows: rows, cols: cols, H: H)
            let out = try gptqSolve(W, rows: rows, cols: cols, H: H, spec: spec, options: SolverOptions(), grid: .minMax)
            let same = zip(codes, out.result.q.codes).filter { $0 == $1 }.count
            #expect(Double(same) >= 0.98 * Double(rows * cols), "\(spec.label): \(same) of \(rows * cols) codes agree")
            #expect(abs(out.result.loss - refLoss) <= 0.02 * refLoss, "\(spec.label): loss \(out.result.loss) vs reference \(refLoss)")
        }
    }

    @Test("GPTQ: dead columns are zeroed; outliers are kept exactly and lower the loss")
    func gptqDeadAndOutliers() throws {
        let rows = 16, cols = 64
        let W = D.weights(rows, cols, seed: 31, outliers: true)
        var H = D.hessian(cols, tokens: 512, seed: 32)
        for j in [3, 40] { for i in 0..<cols { H[i * cols + j] = 0; H[j * cols + i] = 0 } }
        let spec = QuantSpec(bits: 3, groupSize: 32)
        let out = try gptqSolve(W, rows: rows, cols: cols, H: H, spec: spec, options: SolverOptions(), grid: .minMax)
        // Dead columns are quantized from 0: within half a step of it.
        let q0 = out.result.q
        for r in 0..<rows {
            for j in [3, 40] {
                let scale = qlm_f16_to_f32(q0.scales[r * q0.nGroups + j / 32])
                #expect(abs(out.what[r * cols + j]) <= 0.5001 * scale, "row \(r) dead column \(j)")
            }
        }
        D.checkConsistent(out, W: W, rows: rows, cols: cols, H: H, "dead")
        var so = spec; so.outlierFraction = 0.02
        var o = SolverOptions(); o.actOrder = true
        let with = try gptqSolve(W, rows: rows, cols: cols, H: H, spec: so, options: o, grid: .minMax)
        #expect(with.result.q.outVal.count == Int((Double(rows * cols) * 0.02).rounded()))
        #expect(with.result.loss < out.result.loss)
        D.checkConsistent(with, W: W, rows: rows, cols: cols, H: H, "gptq outliers")
        D.checkOnGrid(with, "gptq outliers")
    }

    @Test("LeanQuant: p = 0 gives plain k-means grids; loss ≤ RTN; affine variant finite and on the grid")
    func leanQuant() throws {
        let rows = 32, cols = 128
        let W = D.weights(rows, cols, seed: 41)
        let H = D.hessian(cols, tokens: 1024, seed: 42)
        for bits in [2, 3, 4] {
            let spec = QuantSpec(format: .lut, bits: bits, groupSize: nil)
            var o = SolverOptions(); o.exponent = 0; o.actOrder = true
            let p0 = try leanQuantSolve(W, rows: rows, cols: cols, H: H, spec: spec, options: o)
            for r in 0..<rows {
                let (cent, _) = weightedKMeans1D(Array(W[(r * cols)..<((r + 1) * cols)]), k: 1 << bits)
                #expect(p0.result.q.lutGrid(row: r) == LUTGrid(values: cent), "bits \(bits) row \(r)")
            }
            D.checkConsistent(p0, W: W, rows: rows, cols: cols, H: H, "lean p0 w\(bits)")
            let rtn = try D.rtnLoss(W, rows: rows, cols: cols, H: H, spec: spec)
            for actOrder in [false, true] {
                var o4 = SolverOptions(); o4.actOrder = actOrder
                let lq = try leanQuantSolve(W, rows: rows, cols: cols, H: H, spec: spec, options: o4)
                #expect(lq.result.loss < rtn, "lut w\(bits) act \(actOrder): leanquant \(lq.result.loss) rtn \(rtn)")
                D.checkConsistent(lq, W: W, rows: rows, cols: cols, H: H, "lean lut w\(bits)")
                D.checkOnGrid(lq, "lean lut w\(bits)")
            }
        }
        for spec in [QuantSpec(bits: 3, groupSize: nil), QuantSpec(bits: 2, groupSize: 64), QuantSpec(bits: 4, groupSize: 32, sym: true)] {
            let lq = try leanQuantSolve(W, rows: rows, cols: cols, H: H, spec: spec, options: SolverOptions())
            #expect(lq.result.loss.isFinite && lq.result.loss > 0)
            D.checkConsistent(lq, W: W, rows: rows, cols: cols, H: H, "lean \(spec.label)")
            D.checkOnGrid(lq, "lean \(spec.label)")
            let rtn = try D.rtnLoss(W, rows: rows, cols: cols, H: H, spec: spec)
            #expect(lq.result.loss < rtn, "lean \(spec.label): \(lq.result.loss) rtn \(rtn)")
        }
    }

    @Test("LeanQuant affine search never does worse than min-max on its weighted objective")
    func affineSearch() {
        let rows = 20, n = 96
        var rng = SeededRNG(seed: 7)
        let XT = (0..<(rows * n)).map { _ in Float(D.gauss(&rng)) * (Float.random(in: 0..<1, using: &rng) < 0.02 ? 6 : 1) }
        let s = (0..<n).map { _ in Float(pow(Double.random(in: 0.1..<1, using: &rng), -4)) }
        for (bits, sym) in [(2, false), (3, false), (4, true)] {
            var lo = [Float](repeating: 0, count: rows), hi = lo
            qlm_affine_search(XT, Int32(rows), 0, Int32(n), s, nil, Int32(bits), sym ? 1 : 0, &lo, &hi)
            var strictlyBetter = 0
            for r in 0..<rows {
                let x = (0..<n).map { XT[$0 * rows + r] }
                func err(_ g: AffineGrid) -> Double { (0..<n).reduce(0.0) { $0 + Double(s[$1]) * Double(pow(x[$1] - g.quantize(x[$1]), 2)) } }
                let mm = err(AffineGrid(minMax: x, bits: bits, sym: sym))
                let se = err(AffineGrid(min: lo[r], max: hi[r], bits: bits, sym: sym))
                #expect(se <= mm * (1 + 1e-6), "row \(r): search \(se) > min-max \(mm)")
                if se < mm * 0.999 { strictlyBetter += 1 }
            }
            #expect(strictlyBetter > rows / 2, "bits \(bits): the search rarely helps (\(strictlyBetter)/\(rows))")
        }
    }

    @Test("QuantEase: monotone rounded passes, coordinate-wise optimal, on the grid, beats RTN")
    func quantEase() throws {
        let rows = 32, cols = 96
        let W = D.weights(rows, cols, seed: 51)
        let H = D.hessian(cols, tokens: 768, seed: 52)
        for (spec, actOrder) in [(QuantSpec(bits: 3, groupSize: nil), false), (QuantSpec(bits: 4, groupSize: 32), true),
                                 (QuantSpec(bits: 2, groupSize: nil), false), (QuantSpec(format: .lut, bits: 3, groupSize: nil), false)] {
            var o = SolverOptions(); o.actOrder = actOrder
            var trace: [Double] = []
            let res = try QLM.quantEase(W, rows: rows, cols: cols, H: H, spec: spec, options: o, trace: &trace)
            #expect(trace.count == o.iters)
            for t in 1..<trace.count where quantEaseRounds(iteration: t, iters: o.iters) && quantEaseRounds(iteration: t - 1, iters: o.iters) {
                #expect(trace[t] <= trace[t - 1] * (1 + 1e-5), "\(spec.label) pass \(t): \(trace[t - 1]) → \(trace[t])")
            }
            // An unrounded pass never ends above the rounded pass before it (it is exact CD on a convex problem).
            for t in 1..<trace.count where !quantEaseRounds(iteration: t, iters: o.iters) {
                #expect(trace[t] <= trace[t - 1] * (1 + 1e-5))
            }
            #expect(abs(trace.last! - res.loss) <= 1e-9 * res.loss)
            let out = try quantEaseSolve(W, rows: rows, cols: cols, H: H, spec: spec, options: o, onIteration: nil)
            #expect(out.result.q.codes == res.q.codes && out.result.loss == res.loss, "deterministic")
            D.checkConsistent(out, W: W, rows: rows, cols: cols, H: H, "quantease \(spec.label)")
            D.checkOnGrid(out, "quantease \(spec.label)")
            let nf = D.nonFixedFraction(out, W: W, H: H)
            #expect(nf < 0.02, "\(spec.label): \(nf * 100)% of the weights are not coordinate-wise optimal")
            let rtn = try D.rtnLoss(W, rows: rows, cols: cols, H: H, spec: spec)
            #expect(res.loss < rtn, "\(spec.label): quantease \(res.loss) rtn \(rtn)")
            if actOrder { #expect(res.q.perm != nil) }
        }
    }

    @Test("TesseraQ: the PAR schedule, on the grid, deterministic, beats RTN on correlated inputs; H = I never worse than RTN")
    func tesseraQ() throws {
        let rows = 32, cols = 128, n = rows * cols
        let W = D.weights(rows, cols, seed: 61)
        let H = D.hessian(cols, tokens: 768, seed: 62)
        var o = SolverOptions(); o.tesseraSteps = 8
        for spec in [QuantSpec(bits: 3, groupSize: nil), QuantSpec(bits: 4, groupSize: 32), QuantSpec(bits: 2, groupSize: 64),
                     QuantSpec(bits: 3, groupSize: 64, sym: true)] {
            var rounds: [(Int, Int, Double)] = []
            let out = try tesseraSolve(W, rows: rows, cols: cols, H: H, spec: spec, options: o) { rounds.append(($0, $1, $2)) }
            #expect(rounds.map { $0.0 } == Array(0..<tesseraThresholds.count))
            #expect(rounds.map { $0.1 } == tesseraThresholds.map { Int(Double(n) * $0) }, "\(spec.label): soft counts")
            D.checkConsistent(out, W: W, rows: rows, cols: cols, H: H, "tesseraq \(spec.label)")
            D.checkOnGrid(out, "tesseraq \(spec.label)")
            let rtn = try D.rtnLoss(W, rows: rows, cols: cols, H: H, spec: spec)
            #expect(out.result.loss < rtn, "\(spec.label): tesseraq \(out.result.loss) rtn \(rtn)")
            let again = try tesseraQuantize(W, rows: rows, cols: cols, H: H, spec: spec, options: o)
            #expect(again.q.codes == out.result.q.codes && again.loss == out.result.loss, "deterministic")
            // Without the clipped initial grid it still learns better roundings than RTN's.
            var plain = o; plain.tesseraClip = false
            let p = try tesseraQuantize(W, rows: rows, cols: cols, H: H, spec: spec, options: plain)
            #expect(p.loss < rtn, "\(spec.label) min-max grid: tesseraq \(p.loss) rtn \(rtn)")
        }
        // H = I: the objective is the weight error, whose best rounding on a fixed grid is RTN's;
        // PAR must find it again (scale tuning may only lower the error further).
        var plain = o; plain.tesseraClip = false
        for spec in [QuantSpec(bits: 3, groupSize: nil), QuantSpec(bits: 2, groupSize: 64)] {
            let I = D.identity(cols)
            let rtn = try D.rtnLoss(W, rows: rows, cols: cols, H: I, spec: spec)
            let t = try tesseraQuantize(W, rows: rows, cols: cols, H: I, spec: spec, options: plain)
            #expect(t.loss <= rtn * (1 + 1e-6), "\(spec.label) H = I: tesseraq \(t.loss) rtn \(rtn)")
        }
        #expect(throws: QLMError.self) {
            try tesseraQuantize(W, rows: rows, cols: cols, H: H, spec: QuantSpec(format: .lut, bits: 3, groupSize: nil), options: o)
        }
    }

    @Test("Outlier-aware QuantEase: F = 0 is plain QuantEase exactly; counts; beats plain at 3 bits")
    func quantEaseOutliers() throws {
        let rows = 32, cols = 128
        let W = D.weights(rows, cols, seed: 61, outliers: true)
        let H = D.hessian(cols, tokens: 1024, seed: 62)
        for format in [WeightFormat.affine, .lut] {
            let spec = QuantSpec(format: format, bits: 3, groupSize: nil)
            var o = SolverOptions(); o.iters = 12
            let plain = try quantEaseSolve(W, rows: rows, cols: cols, H: H, spec: spec, options: o, onIteration: nil)
            // A fraction so small that k = 0 runs the outlier code path, and must change nothing.
            for structured in [false, true] {
                var tiny = spec; tiny.outlierFraction = 1e-9
                var os = o; os.structuredOutliers = structured
                let z = try quantEaseSolve(W, rows: rows, cols: cols, H: H, spec: tiny, options: os, onIteration: nil)
                #expect(z.result.q.codes == plain.result.q.codes && z.result.q.scales == plain.result.q.scales
                        && z.result.q.lut == plain.result.q.lut && z.result.q.outVal.isEmpty, "\(format) structured \(structured)")
                #expect(z.result.loss == plain.result.loss && z.what == plain.what)
            }
            var so = spec; so.outlierFraction = 0.01
            let un = try quantEaseSolve(W, rows: rows, cols: cols, H: H, spec: so, options: o, onIteration: nil)
            #expect(un.result.q.outVal.count == Int((Double(rows * cols) * 0.01).rounded()))
            #expect(un.result.loss < plain.result.loss, "\(format): outliers \(un.result.loss) plain \(plain.result.loss)")
            D.checkConsistent(un, W: W, rows: rows, cols: cols, H: H, "qe outliers \(format)")
            D.checkOnGrid(un, "qe outliers \(format)")

            var ss = spec; ss.outlierFraction = 0.03
            var os = o; os.structuredOutliers = true; os.actOrder = true
            let st = try quantEaseSolve(W, rows: rows, cols: cols, H: H, spec: ss, options: os, onIteration: nil)
            let kc = Int((Double(cols) * 0.03).rounded())
            let q = st.result.q
            #expect(q.outVal.count == kc * rows)
            var colsUsed = Set<UInt16>()
            for r in 0..<rows {
                let c = Set(q.outCol[Int(q.outRowPtr[r])..<Int(q.outRowPtr[r + 1])])
                #expect(c.count == kc)
                if r == 0 { colsUsed = c } else { #expect(c == colsUsed, "structured outliers are whole columns") }
            }
            #expect(st.result.loss < plain.result.loss)
            D.checkConsistent(st, W: W, rows: rows, cols: cols, H: H, "qe structured \(format)")
            D.checkOnGrid(st, "qe structured \(format)")
        }
    }

    @Test("Outlier-aware QuantEase with groups: trimmed group ranges, counts, consistency")
    func quantEaseOutlierGroups() throws {
        let rows = 24, cols = 128
        let W = D.weights(rows, cols, seed: 63, outliers: true)
        let H = D.hessian(cols, tokens: 512, seed: 64)
        var o = SolverOptions(); o.iters = 8
        var spec = QuantSpec(bits: 3, groupSize: 32, outlierFraction: 0.05)
        let out = try quantEaseSolve(W, rows: rows, cols: cols, H: H, spec: spec, options: o, onIteration: nil)
        #expect(out.result.q.outVal.count == Int((Double(rows * cols) * 0.05).rounded()))
        D.checkConsistent(out, W: W, rows: rows, cols: cols, H: H, "qe g32 outliers")
        D.checkOnGrid(out, "qe g32 outliers")
        // The grid drops round(32 · 0.05 / 2) = 1 value at each end of every group.
        let q = out.result.q
        for r in 0..<rows {
            for g in 0..<q.nGroups {
                let vals = W[(r * cols + g * 32)..<(r * cols + g * 32 + 32)].sorted()
                let ref = AffineGrid(min: vals[1], max: vals[30], bits: 3, sym: false)
                #expect(q.scales[r * q.nGroups + g] == qlm_f32_to_f16(ref.scale) && q.zeros[r * q.nGroups + g] == qlm_f32_to_f16(ref.zero))
            }
        }
        spec.outlierFraction = 0
        let plain = try quantEaseSolve(W, rows: rows, cols: cols, H: H, spec: spec, options: o, onIteration: nil)
        #expect(out.result.loss < plain.result.loss)
    }

    @Test("Solver timings on SmolLM2 shapes (set QLM_SOLVER_BENCH=1)",
          .enabled(if: ProcessInfo.processInfo.environment["QLM_SOLVER_BENCH"] != nil))
    func timings() throws {
        for (rows, cols) in [(1536, 576), (576, 1536), (576, 576)] {
            let W = D.weights(rows, cols, seed: 71)
            let H = D.hessian(cols, tokens: 2 * cols, seed: 72)
            func time(_ name: String, _ body: () throws -> SolverResult) rethrows {
                let t0 = Date()
                let r = try body()
                print(String(format: "%4d×%-4d %-28@ %7.3f s  loss %.6g", rows, cols, name, Date().timeIntervalSince(t0), r.loss))
            }
            let a4 = QuantSpec(bits: 4, groupSize: 128), a3 = QuantSpec(bits: 3, groupSize: nil)
            try time("rtn w4g128") { let q = try quantizeRTN(W, rows: rows, cols: cols, spec: a4)
                return SolverResult(q: q, loss: layerLoss(W, q.dequantize(), rows: rows, cols: cols, H: H)) }
            try time("gptq w4g128") { try gptqQuantize(W, rows: rows, cols: cols, H: H, spec: a4, options: SolverOptions()) }
            var ao = SolverOptions(); ao.actOrder = true
            try time("gptq w3 act-order") { try gptqQuantize(W, rows: rows, cols: cols, H: H, spec: a3, options: ao) }
            try time("leanquant lut w4") { try leanQuantize(W, rows: rows, cols: cols, H: H, spec: QuantSpec(format: .lut, bits: 4, groupSize: nil), options: SolverOptions()) }
            try time("leanquant affine w4g128") { try leanQuantize(W, rows: rows, cols: cols, H: H, spec: a4, options: SolverOptions()) }
            try time("quantease w4g128 30 it") { try QLM.quantEase(W, rows: rows, cols: cols, H: H, spec: a4, options: SolverOptions()) }
            var ao1 = a3; ao1.outlierFraction = 0.01
            try time("quantease w3+1% 30 it") { try QLM.quantEase(W, rows: rows, cols: cols, H: H, spec: ao1, options: SolverOptions()) }
        }
    }
}
