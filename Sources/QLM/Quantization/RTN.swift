import Foundation

/// Round-to-nearest quantization of one matrix W [rows, cols] (row-major f32):
/// affine min-max per group, or a per-row k-means codebook (LUT); optionally the top-|w|
/// fraction of weights kept exactly as sparse outliers (the dense grid then fits the rest).
public func quantizeRTN(_ W: [Float], rows: Int, cols: Int, spec: QuantSpec) throws -> QuantizedMatrix {
    try spec.validate()
    precondition(W.count == rows * cols)
    if spec.format == .f16 {
        var q = QuantizedMatrix(rows: rows, cols: cols, format: .f16, bits: 16, groupSize: cols, codes: [])
        q.halves = W.map(f16Bits)
        return q
    }
    let outlier = spec.outlierFraction > 0 ? outlierMask(W, fraction: spec.outlierFraction) : nil
    let g = spec.groupSize ?? cols
    var q = QuantizedMatrix(rows: rows, cols: cols, format: spec.format, bits: spec.bits, groupSize: spec.format == .lut ? cols : g,
                            codes: [UInt8](repeating: 0, count: rows * cols))
    var dense = [Float](repeating: 0, count: rows * cols)   // dequantized dense part
    for r in 0..<rows {
        let row = Array(W[(r * cols)..<((r + 1) * cols)])
        let keep = outlier.map { m in (0..<cols).map { !m[r * cols + $0] } } ?? [Bool](repeating: true, count: cols)
        switch spec.format {
        case .affine:
            for g0 in stride(from: 0, to: cols, by: g) {
                let idx = g0..<min(cols, g0 + g)
                let grid = AffineGrid(minMax: idx.lazy.filter { keep[$0] }.map { row[$0] }, bits: spec.bits, sym: spec.sym)
                q.scales.append(f16Bits(grid.scale)); q.zeros.append(f16Bits(grid.zero))
                for j in idx {
                    let c = grid.code(keep[j] ? row[j] : 0)
                    q.codes[r * cols + j] = c
                    dense[r * cols + j] = grid.value(c)
                }
            }
        case .lut:
            let vals = (0..<cols).filter { keep[$0] }.map { row[$0] }
            let (cent, _) = weightedKMeans1D(vals.isEmpty ? [0] : vals, k: 1 << spec.bits)
            let grid = LUTGrid(values: cent)
            q.lut += grid.levels
            q.scales.append(f16Bits(grid.scale)); q.zeros.append(f16Bits(grid.zero))
            for j in 0..<cols {
                let c = grid.code(keep[j] ? row[j] : 0)
                q.codes[r * cols + j] = c
                dense[r * cols + j] = grid.values[Int(c)]
            }
        case .f16: break
        }
    }
    if let m = outlier { addOutliers(&q, W: W, dense: dense, mask: m) }
    return q
}

/// The top `fraction` of |w| over the whole matrix (ties broken by position).
func outlierMask(_ W: [Float], fraction: Double) -> [Bool] {
    let k = Int((Double(W.count) * fraction).rounded())
    var mask = [Bool](repeating: false, count: W.count)
    guard k > 0 else { return mask }
    let idx = (0..<W.count).sorted { abs(W[$0]) > abs(W[$1]) }
    for i in idx.prefix(k) { mask[i] = true }
    return mask
}

/// Stores w − dense at masked positions as CSR, so dense + sparse reproduces w exactly there.
func addOutliers(_ q: inout QuantizedMatrix, W: [Float], dense: [Float], mask: [Bool]) {
    q.outRowPtr = [0]
    for r in 0..<q.rows {
        for j in 0..<q.cols where mask[r * q.cols + j] {
            q.outCol.append(UInt16(j))
            q.outVal.append(W[r * q.cols + j] - dense[r * q.cols + j])
        }
        q.outRowPtr.append(Int32(q.outVal.count))
    }
}
