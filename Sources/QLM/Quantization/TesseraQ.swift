import Foundation
import QLMKernels

/// TesseraQ (docs/ALGORITHMS.md §4) adapted to the layer-wise framework every other solver here
/// uses: progressive adaptive rounding (PAR) and dequantization-scale tuning, optimised on the
/// layer objective L(Ŵ) = tr((Ŵ − W) H (Ŵ − W)ᵀ) instead of a decoder block's output error. (The
/// paper reconstructs whole blocks by back-propagating through attention and the MLP and starts
/// from AWQ's scales and clips; neither is part of this pipeline. With H = (2/N) Σ x xᵀ the layer
/// objective is the layer's own output error, so this is TesseraQ with blocks of one linear.)
///
/// Per (row, group): an affine grid (s, z) — by default clipped by the diag(H)-weighted range search
/// LeanQuant's affine grid uses (`qlm_affine_search_row`, weights H_jj: the diagonal version of
/// AWQ's clip search, which minimises the group's output error; the paper starts from AWQ's
/// clips), or RTN's min-max (`tesseraClip = false`, `--init minmax`) — then
///   Ŵ = s · 2σ(f) · (clamp(⌊W/s + z⌋ + h(ν), 0, maxq) − z)
/// with one rounding logit ν per weight, h(ν) = clamp(1.2 σ(ν) − 0.1, 0, 1) (AdaRound's rectified
/// sigmoid), initialised so that h(ν) = frac(W/s + z) (Ŵ = W where nothing clamps), and one scale
/// logit f per group, initialised to 0 (it multiplies s in dequantization only).
/// PAR: 20 rounds with the paper's soft fractions t = 0.8 … 0.005; at the start of round i every
/// weight with |h(ν) − 0.5| above the per-layer quantile that leaves a fraction t_i soft is frozen at
/// 0 or 1 (the ones already decided score 0.5 and stay frozen); then `steps` Adam steps on the soft
/// ν and all f (β = 0.9, 0.999; a new optimiser each round; weight decay 1e-4 on f only) with the
/// exact gradient ∂L/∂Ŵ = 2 (Ŵ − W) H (one sgemm per step). After the last round every weight is
/// rounded by the sign of ν, and the stored scale is f16(s · 2σ(f)).
/// Learning rate: the paper's 1e-3 over 250 steps per round; with fewer steps the rate is scaled
/// to keep the distance a logit can move per round: lr = 1e-3 · 250 / steps.
/// Affine format only (symmetric or not, any group size); no act-order, no outliers.
public func tesseraQuantize(_ W: [Float], rows: Int, cols: Int, H: [Double], spec: QuantSpec,
                            options: SolverOptions) throws -> SolverResult {
    try tesseraSolve(W, rows: rows, cols: cols, H: H, spec: spec, options: options, onRound: nil).result
}

/// PAR's soft fractions after each round's hardening (TesseraQ's Llama configs).
let tesseraThresholds: [Double] = [0.8, 0.65, 0.5, 0.43, 0.38, 0.34, 0.3, 0.27, 0.24, 0.21, 0.18, 0.15, 0.12,
                                   0.10, 0.08, 0.06, 0.04, 0.02, 0.01, 0.005]

/// `onRound(i, soft, loss)`: after round i, the number of soft weights and the objective of the
/// soft Ŵ its last Adam step started from.
func tesseraSolve(_ W: [Float], rows: Int, cols: Int, H: [Double], spec: QuantSpec, options: SolverOptions,
                  onRound: ((Int, Int, Double) -> Void)?) throws -> SolverOutput {
    try spec.validate(cols: cols)
    guard W.count == rows * cols, H.count == cols * cols, rows > 0, cols > 0 else {
        throw QLMError.invalidArgument("solver: W is \(W.count) values for \(rows)×\(cols), H is \(H.count) for \(cols)²")
    }
    if spec.format == .f16 { return try f16Output(W, rows: rows, cols: cols, H: H, spec: spec) }
    guard spec.format == .affine else { throw QLMError.invalidArgument("tesseraq quantizes onto affine grids; --format lut is LeanQuant's") }
    guard spec.outlierFraction == 0 else { throw QLMError.invalidArgument("--outliers is not part of TesseraQ") }
    guard options.tesseraSteps >= 1 else { throw QLMError.invalidArgument("--steps must be at least 1") }

    let n = rows * cols
    let g = min(spec.groupSize ?? cols, cols), ng = (cols + g - 1) / g, nq = rows * ng
    let maxq = Float((1 << spec.bits) - 1)
    // Grids, base codes and rounding logits.
    var s = [Float](repeating: 1, count: nq), z = [Float](repeating: 0, count: nq)
    var base = [Float](repeating: 0, count: n)   // ⌊W/s + z⌋
    var nu = [Float](repeating: 0, count: n)     // rounding logits ν
    var hard = [Int8](repeating: -1, count: n)   // -1 soft, 0 rounded down, 1 rounded up
    let diagH = (0..<cols).map { Float(max(H[$0 * cols + $0], 0)) }
    var lo: Float = 0, hi: Float = 0
    for r in 0..<rows {
        for k in 0..<ng {
            let c0 = k * g, c1 = min(cols, c0 + g)
            var grid: AffineGrid
            if options.tesseraClip {
                W.withUnsafeBufferPointer { Wp in diagH.withUnsafeBufferPointer { Dp in
                    qlm_affine_search_row(Wp.baseAddress! + r * cols + c0, Dp.baseAddress! + c0, Int32(c1 - c0), Int32(spec.bits),
                                          spec.sym ? 1 : 0, &lo, &hi)
                } }
                grid = AffineGrid(min: lo, max: hi, bits: spec.bits, sym: spec.sym)
            } else {
                grid = AffineGrid(minMax: W[(r * cols + c0)..<(r * cols + c1)], bits: spec.bits, sym: spec.sym)
            }
            s[r * ng + k] = grid.scale; z[r * ng + k] = grid.zero
            for c in c0..<c1 {
                let i = r * cols + c
                let x = W[i] / grid.scale + grid.zero
                let b = x.rounded(.down)
                base[i] = b
                let p = ((x - b) + 0.1) / 1.2          // h(ν) = frac  ⇔  σ(ν) = (frac + 0.1) / 1.2
                nu[i] = log(p / (1 - p))
            }
        }
    }
    var f = [Float](repeating: 0, count: nq)
    let Hf = H.map { Float($0) }

    // Work arrays: D = Ŵ − W, G = 2 D H, per weight ∂Ŵ/∂ν and (q − z) for ∂Ŵ/∂f.
    var D = [Float](repeating: 0, count: n), G = D, dnu = D, qz = D
    var mNu = D, vNu = D
    var mF = [Float](repeating: 0, count: nq), vF = mF, gF = mF
    var sp = mF, dsp = mF   // s·2σ(f) and s·2σ'(f)
    let steps = options.tesseraSteps
    let lr = Float(1e-3 * 250 / Double(steps)), b1: Float = 0.9, b2: Float = 0.999, eps: Float = 1e-8, wdF: Float = 1e-4

    @inline(__always) func sigmoid(_ x: Float) -> Float { qlm_sigmoid(x) }

    /// Ŵ − W and the per-weight derivatives for the current ν, f.
    func forward() {
        for q in 0..<nq { let sg = sigmoid(f[q]); sp[q] = s[q] * 2 * sg; dsp[q] = s[q] * 2 * sg * (1 - sg) }
        qlm_tq_forward(Int32(rows), Int32(cols), Int32(g), W, base, nu, hard, sp, z, maxq, &D, &dnu, &qz)
    }

    /// G = 2 D H.
    func gradient() {
        D.withUnsafeBufferPointer { Dp in Hf.withUnsafeBufferPointer { Hp in G.withUnsafeMutableBufferPointer { Gp in
            qlm_la_sgemm(0, 0, Int32(rows), Int32(cols), Int32(cols), 2, Dp.baseAddress, Int32(cols), Hp.baseAddress, Int32(cols),
                         0, Gp.baseAddress, Int32(cols))
        } } }
    }

    var softCount = n
    var scores = [Float](repeating: 0, count: n), scratch = scores   // |h(ν) − 0.5| of the soft weights, in index order
    for (round, t) in tesseraThresholds.enumerated() {
        // Harden: keep the ⌊t·n⌋ weights with the smallest |h(ν) − 0.5| soft; those scoring above the
        // threshold freeze, then ties in index order, each at h's side of ½ (h > ½ ⇔ ν > 0).
        let keep = Int(Double(n) * t)
        if softCount > keep {
            var m = 0
            for i in 0..<n where hard[i] < 0 { scores[m] = abs(min(max(1.2 * sigmoid(nu[i]) - 0.1, 0), 1) - 0.5); m += 1 }
            let toFreeze = softCount - keep
            let thr = qlm_kth_largest_abs(scores, m, toFreeze, &scratch)
            var ties = toFreeze - scores[0..<m].reduce(0) { $0 + ($1 > thr ? 1 : 0) }
            var j = 0, frozen = 0
            for i in 0..<n where hard[i] < 0 {
                let sc = scores[j]; j += 1
                guard sc > thr || (sc == thr && ties > 0) else { continue }
                if sc == thr { ties -= 1 }
                hard[i] = nu[i] > 0 ? 1 : 0
                frozen += 1
            }
            softCount -= frozen
        }
        // Adam on the soft ν and on f, from fresh moments.
        for i in 0..<n { mNu[i] = 0; vNu[i] = 0 }
        for q in 0..<nq { mF[q] = 0; vF[q] = 0 }
        var loss = 0.0
        for step in 1...steps {
            forward()
            gradient()
            if step == steps && onRound != nil {   // tr(D H Dᵀ) = ½ Σ D ⊙ G
                loss = 0
                for i in 0..<n { loss += Double(D[i]) * Double(G[i]) }
                loss /= 2
            }
            for q in 0..<nq { gF[q] = wdF * f[q] }
            let c1 = 1 / (1 - pow(b1, Float(step))), c2 = 1 / (1 - pow(b2, Float(step)))
            qlm_tq_adam(Int32(rows), Int32(cols), Int32(g), G, dnu, qz, dsp, hard, &nu, &mNu, &vNu, &gF, lr, b1, b2, c1, c2, eps)
            for q in 0..<nq {
                mF[q] = b1 * mF[q] + (1 - b1) * gF[q]
                vF[q] = b2 * vF[q] + (1 - b2) * gF[q] * gF[q]
                f[q] -= lr * (mF[q] * c1) / ((vF[q] * c2).squareRoot() + eps)
            }
        }
        onRound?(round, softCount, loss)
    }

    // Final: every weight rounded by the sign of ν (the frozen ones as frozen), scale f16(s·2σ(f)).
    var q = QuantizedMatrix(rows: rows, cols: cols, format: .affine, bits: spec.bits, groupSize: g,
                            codes: [UInt8](repeating: 0, count: n))
    q.scales = [UInt16](repeating: 0, count: nq); q.zeros = q.scales
    var scaleF = [Float](repeating: 0, count: nq)
    for k in 0..<nq {
        scaleF[k] = AffineGrid.safeScale(s[k] * 2 * sigmoid(f[k]))
        q.scales[k] = f16Bits(scaleF[k]); q.zeros[k] = f16Bits(z[k])
    }
    var what = [Float](repeating: 0, count: n)
    for r in 0..<rows {
        for c in 0..<cols {
            let i = r * cols + c, k = r * ng + c / g
            let up: Float = hard[i] >= 0 ? Float(hard[i]) : (nu[i] > 0 ? 1 : 0)
            let code = min(max(base[i] + up, 0), maxq)
            q.codes[i] = UInt8(code)
            what[i] = scaleF[k] * (code - z[k])
        }
    }
    return SolverOutput(result: SolverResult(q: q, loss: layerLoss(W, what, rows: rows, cols: cols, H: H)), what: what)
}
