import Foundation
import QLMKernels

/// `model.qlmw`, qlm's memory-mappable weights container for packed models:
///   "QLMW" | u32 version | u64 header length | JSON header | zero padding | data area
/// The header lists every blob (dtype, shape, offset from the data area, byte count) and, for
/// each packed matrix, its format. Blobs start on 64-byte boundaries so kernels read codes
/// straight from the mapping.
public enum QLMWeightsFormat {
    public static let magic: [UInt8] = Array("QLMW".utf8)
    public static let version = 1
    public static let alignment = 64
    static let dtypeSizes: [String: Int] = ["u8": 1, "u16": 2, "f16": 2, "i32": 4, "f32": 4]
}

public struct QLMWBlob: Codable, Sendable, Equatable {
    public var dtype: String
    public var shape: [Int]
    public var offset: Int
    public var nbytes: Int
}

/// How one linear layer's weight is stored.
public struct PackedMatrixMeta: Codable, Sendable, Equatable {
    public var rows: Int
    public var cols: Int
    public var format: String      // affine | lut | f16
    public var bits: Int
    public var groupSize: Int
    public var outliers: Int
    public var permuted: Bool
    /// Superblock code layout (QLM_CODE_LAYOUT in qlm_quant.h); absent = 1 (files written before
    /// 2026-11-22). Only 3-bit codes changed (layout 2: high-bit lane masks; 3: octets), and 3-bit
    /// codes of an older layout are converted to the current one when loaded; other widths record 2.
    public var codeLayout: Int?

    public var qlmFormat: qlm_format? {
        switch format {
        case "affine": return QLM_FMT_AFFINE
        case "lut": return QLM_FMT_LUT
        case "f16": return QLM_FMT_F16
        default: return nil
        }
    }
}

public struct QLMWHeader: Codable, Sendable {
    public var version: Int
    public var blobs: [String: QLMWBlob]
    public var matrices: [String: PackedMatrixMeta]
    public var metadata: [String: String]
}

/// A packed matrix ready for the kernels. Keeps the memory its pointers refer to alive.
public final class PackedMatrix: @unchecked Sendable {
    public let meta: PackedMatrixMeta
    public private(set) var m: qlm_qmatrix
    private let owners: [AnyObject]

    init(meta: PackedMatrixMeta, m: qlm_qmatrix, owners: [AnyObject]) {
        self.meta = meta; self.m = m; self.owners = owners
    }

    public var rows: Int { meta.rows }
    public var cols: Int { meta.cols }
    public var storageBytes: Int { withUnsafePointer(to: m) { qlm_storage_bytes($0) } }
    public var bitsPerWeight: Double { withUnsafePointer(to: m) { qlm_bits_per_weight($0) } }
    public var scratchFloats: Int { withUnsafePointer(to: m) { qlm_qgemv_scratch_floats($0) } }
    public var tileFloats: Int { withUnsafePointer(to: m) { qlm_qgemm_tile_floats($0) } }

    @inline(__always)
    public func gemv(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>) {
        withUnsafePointer(to: m) { qlm_qgemv($0, x, y, scratch) }
    }

    public func gemm(_ X: UnsafePointer<Float>, _ Y: UnsafeMutablePointer<Float>, T: Int, beta: Float, tile: UnsafeMutablePointer<Float>) {
        withUnsafePointer(to: m) { qlm_qgemm($0, X, Y, Int32(T), beta, tile) }
    }

    /// Rows [r0, r1) dequantized to f32 (original column order).
    public func dequantRows(_ r0: Int, _ r1: Int, into out: UnsafeMutablePointer<Float>) {
        withUnsafePointer(to: m) { qlm_qmatrix_dequant_rows($0, Int32(r0), Int32(r1), out) }
    }

    public func dequantized() -> [Float] {
        [Float](unsafeUninitializedCapacity: rows * cols) { buf, n in
            dequantRows(0, rows, into: buf.baseAddress!); n = rows * cols
        }
    }
}

/// Reads a `model.qlmw`: validates every blob against the file and every matrix against its blobs.
public final class QLMWeightsFile: @unchecked Sendable {
    public let file: MappedFile
    public let header: QLMWHeader
    let dataStart: Int
    public var path: String { file.path }

    public init(path: String) throws {
        file = try MappedFile(path: path)
        let head = try file.bytes(0, 16, what: "header")
        guard Array(head[0..<4]) == QLMWeightsFormat.magic else {
            throw QLMError.corrupt(path: path, detail: "not a qlm weights file (bad magic)")
        }
        let version = Int(head.loadUnaligned(fromByteOffset: 4, as: UInt32.self).littleEndian)
        guard version == QLMWeightsFormat.version else {
            throw QLMError.unsupported("\(path): qlm weights version \(version) (this qlm reads version \(QLMWeightsFormat.version))")
        }
        let hlen = head.loadUnaligned(fromByteOffset: 8, as: UInt64.self).littleEndian
        guard hlen < UInt64(file.size) else { throw QLMError.corrupt(path: path, detail: "header length \(hlen) exceeds the file") }
        let json = try file.bytes(16, Int(hlen), what: "JSON header")
        do {
            header = try JSONDecoder().decode(QLMWHeader.self, from: Data(json))
        } catch {
            throw QLMError.corrupt(path: path, detail: "header is not valid: \(qlmDescribeDecodingError(error))")
        }
        let a = QLMWeightsFormat.alignment
        dataStart = (16 + Int(hlen) + a - 1) / a * a
        for (name, b) in header.blobs {
            guard let es = QLMWeightsFormat.dtypeSizes[b.dtype] else {
                throw QLMError.tensor(path: path, tensor: name, detail: "unknown dtype '\(b.dtype)'")
            }
            guard b.shape.allSatisfy({ $0 >= 0 }), b.shape.reduce(1, *) * es == b.nbytes else {
                throw QLMError.tensor(path: path, tensor: name, detail: "shape \(b.shape) × \(es) bytes ≠ \(b.nbytes) bytes")
            }
            guard b.offset >= 0, b.offset % a == 0, b.nbytes >= 0, dataStart + b.offset + b.nbytes <= file.size else {
                throw QLMError.tensor(path: path, tensor: name, detail: "data at \(b.offset) (+\(b.nbytes) bytes) lies outside the \(file.size)-byte file (truncated?)")
            }
        }
    }

    public func blob(_ name: String, dtype: String? = nil, count: Int? = nil) throws -> UnsafeRawPointer {
        guard let b = header.blobs[name] else { throw QLMError.tensor(path: path, tensor: name, detail: "missing") }
        if let d = dtype, d != b.dtype { throw QLMError.tensor(path: path, tensor: name, detail: "dtype \(b.dtype), expected \(d)") }
        if let c = count, c * (QLMWeightsFormat.dtypeSizes[b.dtype] ?? 1) != b.nbytes {
            throw QLMError.tensor(path: path, tensor: name, detail: "\(b.nbytes) bytes, expected \(c) elements of \(b.dtype)")
        }
        return file.base + dataStart + b.offset
    }

    public func floats(_ name: String, count: Int) throws -> [Float] {
        let p = try blob(name, dtype: "f32", count: count)
        return Array(UnsafeBufferPointer(start: p.assumingMemoryBound(to: Float.self), count: count))
    }

    /// The packed matrix `name` (e.g. "model.layers.0.mlp.up_proj"), pointing into the mapping.
    public func matrix(_ name: String) throws -> PackedMatrix {
        guard let meta = header.matrices[name] else { throw QLMError.tensor(path: path, tensor: name, detail: "missing packed matrix") }
        guard let fmt = meta.qlmFormat else { throw QLMError.tensor(path: path, tensor: name, detail: "unknown format '\(meta.format)'") }
        let r = meta.rows, c = meta.cols
        guard r > 0, c > 0, c <= 65535 || meta.outliers == 0 else { throw QLMError.tensor(path: path, tensor: name, detail: "bad shape \(r)×\(c)") }
        var m = qlm_qmatrix()
        var extraOwners: [AnyObject] = []
        m.rows = Int32(r); m.cols = Int32(c); m.format = Int32(fmt.rawValue); m.bits = Int32(meta.bits); m.group_size = Int32(meta.groupSize)
        switch fmt {
        case QLM_FMT_F16:
            guard meta.bits == 16 else { throw QLMError.tensor(path: path, tensor: name, detail: "f16 with bits \(meta.bits)") }
            m.codes = try blob(name + ".codes", dtype: "f16", count: r * c).assumingMemoryBound(to: UInt8.self)
        case QLM_FMT_AFFINE, QLM_FMT_LUT:
            let okBits = fmt == QLM_FMT_AFFINE ? [2, 3, 4, 8] : [2, 3, 4]
            guard okBits.contains(meta.bits) else { throw QLMError.tensor(path: path, tensor: name, detail: "\(meta.format) with \(meta.bits) bits") }
            let codeBytes = r * qlm_row_bytes(Int32(meta.bits), Int32(c))
            m.codes = try blob(name + ".codes", dtype: "u8", count: codeBytes).assumingMemoryBound(to: UInt8.self)
            let layout = meta.codeLayout ?? 1
            guard (1...Int(QLM_CODE_LAYOUT)).contains(layout) else {
                throw QLMError.tensor(path: path, tensor: name, detail: "code layout \(layout) (this qlm reads layouts 1 to \(QLM_CODE_LAYOUT)): written by a newer qlm?")
            }
            if layout != Int(QLM_CODE_LAYOUT) && meta.bits == 3 {  // older 3-bit layouts: convert once into memory (other widths never changed)
                let conv = OwnedBytes(count: codeBytes)
                guard qlm_codes_from_layout(Int32(layout), 3, m.codes, conv.ptr.assumingMemoryBound(to: UInt8.self), Int32(r), Int32(c)) == 0 else {
                    throw QLMError.tensor(path: path, tensor: name, detail: "cannot convert 3-bit code layout \(layout)")
                }
                m.codes = UnsafePointer(conv.ptr.assumingMemoryBound(to: UInt8.self))
                extraOwners.append(conv)
            }
            if fmt == QLM_FMT_AFFINE {
                guard meta.groupSize > 0, [32, 64, 128].contains(meta.groupSize) || meta.groupSize == c else {
                    throw QLMError.tensor(path: path, tensor: name, detail: "group size \(meta.groupSize)")
                }
                let ng = (c + meta.groupSize - 1) / meta.groupSize
                m.scales = try blob(name + ".scales", dtype: "f16", count: r * ng).assumingMemoryBound(to: UInt16.self)
                m.zeros = try blob(name + ".zeros", dtype: "f16", count: r * ng).assumingMemoryBound(to: UInt16.self)
            } else {
                m.group_size = Int32(c)
                if header.blobs[name + ".lut"]?.dtype == "f16" {
                    throw QLMError.tensor(path: path, tensor: name + ".lut", detail: "an f16 codebook, the LUT layout of qlm builds before 2026-11-22; "
                        + "LUT codebooks are now bytes on a per-row grid (see README, quantized model folder): re-quantize this model")
                }
                m.lut = try blob(name + ".lut", dtype: "u8", count: r << meta.bits).assumingMemoryBound(to: UInt8.self)
                m.scales = try blob(name + ".scales", dtype: "f16", count: r).assumingMemoryBound(to: UInt16.self)
                m.zeros = try blob(name + ".zeros", dtype: "f16", count: r).assumingMemoryBound(to: UInt16.self)
            }
        default: break
        }
        if meta.permuted {
            let p = try blob(name + ".perm", dtype: "i32", count: c).assumingMemoryBound(to: Int32.self)
            let perm = UnsafeBufferPointer(start: p, count: c)
            var seen = [Bool](repeating: false, count: c)
            for v in perm {
                guard v >= 0, Int(v) < c, !seen[Int(v)] else { throw QLMError.tensor(path: path, tensor: name, detail: "perm is not a permutation") }
                seen[Int(v)] = true
            }
            m.perm = p
        }
        if meta.outliers > 0 {
            let rp = try blob(name + ".out_rowptr", dtype: "i32", count: r + 1).assumingMemoryBound(to: Int32.self)
            let rows = UnsafeBufferPointer(start: rp, count: r + 1)
            guard rows[0] == 0, Int(rows[r]) == meta.outliers, zip(rows, rows.dropFirst()).allSatisfy({ $0 <= $1 }) else {
                throw QLMError.tensor(path: path, tensor: name, detail: "outlier row pointers are inconsistent")
            }
            let col = try blob(name + ".out_col", dtype: "u16", count: meta.outliers).assumingMemoryBound(to: UInt16.self)
            guard UnsafeBufferPointer(start: col, count: meta.outliers).allSatisfy({ Int($0) < c }) else {
                throw QLMError.tensor(path: path, tensor: name, detail: "outlier column index out of range")
            }
            m.n_outliers = Int32(meta.outliers)
            m.out_rowptr = rp
            m.out_col = col
            m.out_val = try blob(name + ".out_val", dtype: "f32", count: meta.outliers).assumingMemoryBound(to: Float.self)
        }
        return PackedMatrix(meta: meta, m: m, owners: [file] + extraOwners)
    }
}

/// Collects blobs and matrices, then writes a `model.qlmw` atomically.
public final class QLMWeightsWriter {
    var blobs: [(String, String, [Int], Data)] = []
    var matrices: [String: PackedMatrixMeta] = [:]
    public var metadata: [String: String] = [:]
    public init() {}

    public func add(_ name: String, dtype: String, shape: [Int], data: Data) {
        blobs.append((name, dtype, shape, data))
    }
    public func add(_ name: String, floats: [Float], shape: [Int]) {
        add(name, dtype: "f32", shape: shape, data: floats.withUnsafeBytes { Data($0) })
    }
    public func addMatrix(_ name: String, _ q: QuantizedMatrix) {
        matrices[name] = q.meta
        for (suffix, dtype, shape, data) in q.blobs() { add(name + suffix, dtype: dtype, shape: shape, data: data) }
    }

    public func write(to path: String) throws {
        var table: [String: QLMWBlob] = [:]
        var off = 0
        let a = QLMWeightsFormat.alignment
        for (name, dtype, shape, data) in blobs {
            table[name] = QLMWBlob(dtype: dtype, shape: shape, offset: off, nbytes: data.count)
            off = (off + data.count + a - 1) / a * a
        }
        let header = QLMWHeader(version: QLMWeightsFormat.version, blobs: table, matrices: matrices, metadata: metadata)
        let enc = JSONEncoder(); enc.outputFormatting = [.sortedKeys]
        let json = try enc.encode(header)
        try writeFileAtomically(path) { h in
            var head = Data(QLMWeightsFormat.magic)
            withUnsafeBytes(of: UInt32(QLMWeightsFormat.version).littleEndian) { head.append(contentsOf: $0) }
            withUnsafeBytes(of: UInt64(json.count).littleEndian) { head.append(contentsOf: $0) }
            head.append(json)
            while head.count % a != 0 { head.append(0) }
            try h.write(contentsOf: head)
            var pos = 0
            for (_, _, _, data) in blobs {
                try h.write(contentsOf: data)
                pos += data.count
                let pad = (pos + a - 1) / a * a - pos
                if pad > 0 { try h.write(contentsOf: Data(count: pad)); pos += pad }
            }
        }
    }
}
