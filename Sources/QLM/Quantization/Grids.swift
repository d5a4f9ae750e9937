import Foundation

/// Affine grid of one group: w ≈ scale · (q − zero), q ∈ [0, 2^bits − 1]. Both parameters are
/// f16-representable (they are stored as f16).
public struct AffineGrid: Sendable, Equatable {
    public var scale: Float
    public var zero: Float
    public var maxq: Int

    /// Min-max grid over `values`. Asymmetric: the range is [min, max] with a fractional zero
    /// (so a Q4_1-style source is reproduced exactly); symmetric: [-m, m] with zero = 2^(b−1).
    public init<C: Collection>(minMax values: C, bits: Int, sym: Bool) where C.Element == Float {
        var lo = Float.infinity, hi = -Float.infinity
        for v in values { lo = min(lo, v); hi = max(hi, v) }
        if lo > hi { lo = 0; hi = 0 }
        self.init(min: lo, max: hi, bits: bits, sym: sym)
    }

    public init(min lo: Float, max hi: Float, bits: Int, sym: Bool) {
        maxq = (1 << bits) - 1
        if sym {
            // GPTQ's symmetric grid: [-m, m] spread over maxq steps, zero at 2^(b-1).
            let m = Swift.max(abs(lo), abs(hi))
            zero = Float(1 << (bits - 1))
            scale = Self.safeScale(2 * m / Float(maxq))
        } else {
            scale = Self.safeScale((hi - lo) / Float(maxq))
            zero = f16Round(-lo / scale)
        }
    }

    /// f16-representable, never zero (a constant group still round-trips its value via the zero).
    static func safeScale(_ s: Float) -> Float {
        let r = f16Round(s)
        return r >= 6.1035156e-05 ? r : 6.1035156e-05
    }

    @inline(__always) public func code(_ w: Float) -> UInt8 {
        let q = (w / scale + zero).rounded(.toNearestOrEven)
        return UInt8(Swift.min(Swift.max(q, 0), Float(maxq)))
    }

    @inline(__always) public func value(_ q: UInt8) -> Float { scale * (Float(q) - zero) }
    @inline(__always) public func quantize(_ w: Float) -> Float { value(code(w)) }
}

/// A sorted non-uniform codebook (LUT) of 2^bits values, as stored: byte `levels` on the row's own
/// 8-bit affine grid, values[k] = scale · (levels[k] − zero) (f16 scale and zero). Built from free
/// centroids by snapping them to the min-max 8-bit grid over the centroids (each moves by at most
/// range/510); quantizers then assign codes against these snapped values, so what they optimise is
/// exactly what the kernels compute. (Why bytes: the integer-activation kernel looks them up with
/// one byte shuffle, see Kernels/include/qlm_quant.h.)
public struct LUTGrid: Sendable, Equatable {
    public var values: [Float]
    public var levels: [UInt8]
    public var scale: Float
    public var zero: Float

    public init(values centroids: [Float]) {
        let sorted = centroids.sorted()
        let g = AffineGrid(minMax: sorted, bits: 8, sym: false)
        scale = g.scale; zero = g.zero
        levels = sorted.map { g.code($0) }   // monotone, so levels and values stay sorted
        values = levels.map { g.value($0) }
    }

    /// A stored codebook (levels in code order, f16 scale and zero as f32).
    public init(levels: [UInt8], scale: Float, zero: Float) {
        self.levels = levels; self.scale = scale; self.zero = zero
        values = levels.map { scale * (Float($0) - zero) }
    }

    /// Index of the nearest value (ties to the lower).
    @inline(__always) public func code(_ w: Float) -> UInt8 {
        var lo = 0, hi = values.count - 1
        while lo < hi {
            let mid = (lo + hi) / 2
            if w > (values[mid] + values[mid + 1]) * 0.5 { lo = mid + 1 } else { hi = mid }
        }
        return UInt8(lo)
    }
    @inline(__always) public func quantize(_ w: Float) -> Float { values[Int(code(w))] }
}

/// Weighted 1-D k-means (Lloyd) with k clusters: minimises Σ_j s_j (x_j − c(x_j))².
/// init: k values evenly spaced over [min, max] (LeanQuant's init for k ≤ 8, used for all k so
/// results are deterministic). Sorting once makes each iteration O(n) with prefix sums.
/// Returns the centroids (sorted) and the weighted loss after each iteration.
public func weightedKMeans1D(_ x: [Float], weights s: [Float]? = nil, k: Int, maxIter: Int = 100, tol: Double = 1e-9)
    -> (centroids: [Float], losses: [Double]) {
    let n = x.count
    precondition(n > 0 && k > 0)
    let order = (0..<n).sorted { x[$0] < x[$1] }
    let xs = order.map { Double(x[$0]) }
    let ws = order.map { Double(s?[$0] ?? 1) }
    // Prefix sums of w, w·x, w·x² over the sorted values.
    var pw = [Double](repeating: 0, count: n + 1), px = pw, pxx = pw
    for i in 0..<n { pw[i + 1] = pw[i] + ws[i]; px[i + 1] = px[i] + ws[i] * xs[i]; pxx[i + 1] = pxx[i] + ws[i] * xs[i] * xs[i] }
    let lo = xs[0], hi = xs[n - 1]
    var c = (0..<k).map { k == 1 ? (lo + hi) / 2 : lo + (hi - lo) * Double($0) / Double(k - 1) }
    var losses: [Double] = []
    var bounds = [Int](repeating: 0, count: k + 1)
    for _ in 0..<maxIter {
        // Assignment: cluster i takes sorted indices [bounds[i], bounds[i+1]).
        bounds[0] = 0; bounds[k] = n
        var j = 0
        for i in 0..<(k - 1) {
            let mid = (c[i] + c[i + 1]) / 2
            while j < n && xs[j] <= mid { j += 1 }
            bounds[i + 1] = j
        }
        var loss = 0.0
        var moved = 0.0
        for i in 0..<k {
            let a = bounds[i], b = bounds[i + 1]
            let W = pw[b] - pw[a]
            // Loss of the current assignment with the current centroids.
            loss += (pxx[b] - pxx[a]) - 2 * c[i] * (px[b] - px[a]) + c[i] * c[i] * W
            if W > 0 {
                let nc = (px[b] - px[a]) / W
                moved = max(moved, abs(nc - c[i]))
                c[i] = nc
            }
        }
        losses.append(loss)
        if moved <= tol * max(1e-12, hi - lo) { break }
    }
    return (c.map { Float($0) }.sorted(), losses)
}
