import Foundation
import QLMKernels

/// Round-trips a Float through f16, the precision scales, zeros and codebooks are stored in.
/// Quantizers round their parameters with this *before* choosing codes, so what they optimise
/// is exactly what the kernels compute.
@inline(__always) public func f16Round(_ x: Float) -> Float { qlm_f16_to_f32(qlm_f32_to_f16(x)) }
@inline(__always) func f16Bits(_ x: Float) -> UInt16 { qlm_f32_to_f16(x) }

public enum WeightFormat: String, Codable, Sendable, CaseIterable {
    case affine, lut, f16
}

/// What a quantizer should produce for one matrix.
public struct QuantSpec: Codable, Sendable, Equatable {
    public var format: WeightFormat
    public var bits: Int
    /// Columns per group; nil = one group per row.
    public var groupSize: Int?
    public var sym: Bool
    /// Fraction of weights kept exactly in the sparse outlier part.
    public var outlierFraction: Double

    public init(format: WeightFormat = .affine, bits: Int = 4, groupSize: Int? = 128, sym: Bool = false, outlierFraction: Double = 0) {
        self.format = format; self.bits = bits; self.groupSize = groupSize; self.sym = sym; self.outlierFraction = outlierFraction
    }

    public func validate(cols: Int? = nil) throws {
        switch format {
        case .affine:
            guard [2, 3, 4, 8].contains(bits) else { throw QLMError.invalidArgument("affine format supports 2, 3, 4 or 8 bits, not \(bits)") }
        case .lut:
            guard [2, 3, 4].contains(bits) else { throw QLMError.invalidArgument("lut format supports 2, 3 or 4 bits, not \(bits)") }
            guard groupSize == nil else { throw QLMError.invalidArgument("lut format uses one codebook per row: pass --group-size -1") }
            guard !sym else { throw QLMError.invalidArgument("--sym applies to the affine format only") }
        case .f16:
            guard bits == 16 else { throw QLMError.invalidArgument("f16 format has 16 bits") }
        }
        if let g = groupSize, ![32, 64, 128].contains(g) {
            throw QLMError.invalidArgument("--group-size must be 32, 64, 128 or -1 (one group per row), not \(g)")
        }
        guard outlierFraction >= 0 && outlierFraction < 0.5 else { throw QLMError.invalidArgument("--outliers must be in [0, 0.5)") }
    }

    /// Short label, e.g. "affine-w4-g128", "lut-w3", "affine-w3-g128+1%".
    public var label: String {
        var s = format == .f16 ? "f16" : "\(format.rawValue)-w\(bits)" + (format == .affine ? (groupSize.map { "-g\($0)" } ?? "-row") + (sym ? "-sym" : "") : "")
        if outlierFraction > 0 { s += "+\(String(format: "%g", outlierFraction * 100))%" }
        return s
    }
}

/// A quantized matrix in unpacked form (one code byte per weight, stored column order), the
/// common output of every quantizer. `blobs()` packs it for the file; `packed()` for the kernels.
public struct QuantizedMatrix: Sendable {
    public var rows: Int
    public var cols: Int
    public var format: WeightFormat
    public var bits: Int
    public var groupSize: Int          // resolved: cols when one group per row
    public var codes: [UInt8]          // [rows, cols]; f16 format: empty
    public var scales: [UInt16] = []   // affine [rows, nGroups] f16; lut [rows] f16
    public var zeros: [UInt16] = []    // affine [rows, nGroups] f16; lut [rows] f16
    public var lut: [UInt8] = []       // lut [rows, 2^bits] codebook levels: w = scale · (lut[q] − zero)
    public var halves: [UInt16] = []   // f16 format [rows, cols]
    public var perm: [Int32]? = nil    // stored column j = original column perm[j]
    public var outRowPtr: [Int32] = []
    public var outCol: [UInt16] = []
    public var outVal: [Float] = []

    public var nGroups: Int { (cols + groupSize - 1) / groupSize }

    /// LUT format: row r's stored codebook.
    public func lutGrid(row r: Int) -> LUTGrid {
        let k = 1 << bits
        return LUTGrid(levels: Array(lut[(r * k)..<((r + 1) * k)]), scale: qlm_f16_to_f32(scales[r]), zero: qlm_f16_to_f32(zeros[r]))
    }

    /// The code layout recorded for the packed bytes (qlm_code_layout_for_bits).
    public var meta: PackedMatrixMeta {
        PackedMatrixMeta(rows: rows, cols: cols, format: format.rawValue, bits: bits, groupSize: groupSize,
                         outliers: outVal.count, permuted: perm != nil, codeLayout: format == .f16 ? nil : Int(qlm_code_layout_for_bits(Int32(bits))))
    }

    func packedCodes() -> [UInt8] {
        let rb = qlm_row_bytes(Int32(bits), Int32(cols))
        var out = [UInt8](repeating: 0, count: rows * rb)
        codes.withUnsafeBufferPointer { q in
            out.withUnsafeMutableBufferPointer { d in qlm_pack_codes(Int32(bits), q.baseAddress!, d.baseAddress!, Int32(rows), Int32(cols)) }
        }
        return out
    }

    public func blobs() -> [(String, String, [Int], Data)] {
        func d<T>(_ a: [T]) -> Data { a.withUnsafeBytes { Data($0) } }
        var out: [(String, String, [Int], Data)] = []
        switch format {
        case .f16: out.append((".codes", "f16", [rows, cols], d(halves)))
        case .affine:
            let p = packedCodes()
            out.append((".codes", "u8", [p.count], d(p)))
            out.append((".scales", "f16", [rows, nGroups], d(scales)))
            out.append((".zeros", "f16", [rows, nGroups], d(zeros)))
        case .lut:
            let p = packedCodes()
            out.append((".codes", "u8", [p.count], d(p)))
            out.append((".lut", "u8", [rows, 1 << bits], d(lut)))
            out.append((".scales", "f16", [rows, 1], d(scales)))
            out.append((".zeros", "f16", [rows, 1], d(zeros)))
        }
        if let p = perm { out.append((".perm", "i32", [cols], d(p))) }
        if !outVal.isEmpty {
            out.append((".out_rowptr", "i32", [rows + 1], d(outRowPtr)))
            out.append((".out_col", "u16", [outCol.count], d(outCol)))
            out.append((".out_val", "f32", [outVal.count], d(outVal)))
        }
        return out
    }

    /// An in-memory packed matrix for the kernels (same bytes the file would hold).
    public func packed() -> PackedMatrix {
        var owners: [AnyObject] = []
        func own(_ data: Data) -> UnsafeRawPointer {
            let b = OwnedBytes(data)
            owners.append(b)
            return UnsafeRawPointer(b.ptr)
        }
        var m = qlm_qmatrix()
        m.rows = Int32(rows); m.cols = Int32(cols); m.bits = Int32(bits); m.group_size = Int32(groupSize)
        switch format {
        case .affine: m.format = Int32(QLM_FMT_AFFINE.rawValue)
        case .lut: m.format = Int32(QLM_FMT_LUT.rawValue)
        case .f16: m.format = Int32(QLM_FMT_F16.rawValue)
        }
        for (suffix, _, _, data) in blobs() {
            let p = own(data)
            switch suffix {
            case ".codes": m.codes = p.assumingMemoryBound(to: UInt8.self)
            case ".scales": m.scales = p.assumingMemoryBound(to: UInt16.self)
            case ".zeros": m.zeros = p.assumingMemoryBound(to: UInt16.self)
            case ".lut": m.lut = p.assumingMemoryBound(to: UInt8.self)
            case ".perm": m.perm = p.assumingMemoryBound(to: Int32.self)
            case ".out_rowptr": m.out_rowptr = p.assumingMemoryBound(to: Int32.self)
            case ".out_col": m.out_col = p.assumingMemoryBound(to: UInt16.self)
            case ".out_val": m.out_val = p.assumingMemoryBound(to: Float.self)
            default: break
            }
        }
        m.n_outliers = Int32(outVal.count)
        return PackedMatrix(meta: meta, m: m, owners: owners)
    }

    /// f32 weights in original column order (reference; the kernels' dequant_rows must agree).
    public func dequantize() -> [Float] { packed().dequantized() }
}

/// 64-byte-aligned copy of some bytes with a stable address.
final class OwnedBytes {
    let ptr: UnsafeMutableRawPointer
    init(count: Int) { ptr = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1), alignment: 64) }
    init(_ d: Data) {
        ptr = UnsafeMutableRawPointer.allocate(byteCount: max(d.count, 1), alignment: 64)
        d.withUnsafeBytes { if d.count > 0 { ptr.copyMemory(from: $0.baseAddress!, byteCount: d.count) } }
    }
    deinit { ptr.deallocate() }
}
