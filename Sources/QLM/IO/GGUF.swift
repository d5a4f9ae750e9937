import Foundation
import QLMKernels

/// One metadata value of a GGUF file.
public indirect enum GGUFValue: Sendable, Equatable {
    case uint(UInt64), int(Int64), float(Double), bool(Bool), string(String)
    case array([GGUFValue])
    /// Arrays of strings are by far the largest metadata (the vocabulary); kept unboxed.
    case strings([String])

    public var int: Int? {
        switch self {
        case let .uint(v): return v <= UInt64(Int.max) ? Int(v) : nil
        case let .int(v): return Int(v)
        default: return nil
        }
    }
    public var double: Double? {
        switch self {
        case let .float(v): return v
        case let .uint(v): return Double(v)
        case let .int(v): return Double(v)
        default: return nil
        }
    }
    public var string: String? { if case let .string(s) = self { return s }; return nil }
    public var bool: Bool? { if case let .bool(b) = self { return b }; return nil }
    public var stringArray: [String]? {
        switch self {
        case let .strings(a): return a
        case let .array(a): return a.isEmpty ? [] : nil
        default: return nil
        }
    }
    public var floatArray: [Float]? {
        if case let .array(a) = self { let v = a.compactMap { $0.double.map(Float.init) }; return v.count == a.count ? v : nil }
        return nil
    }
    public var int32Array: [Int32]? {
        if case let .array(a) = self { let v = a.compactMap { $0.int.map { Int32(truncatingIfNeeded: $0) } }; return v.count == a.count ? v : nil }
        return nil
    }
}

/// A memory-mapped GGUF v2/v3 file. Every offset and length read from the header is checked
/// against the file before use, so a truncated or lying file is an error, never a crash.
public final class GGUFFile: TensorSource, @unchecked Sendable {
    public let file: MappedFile
    public let version: UInt32
    public private(set) var metadata: [String: GGUFValue] = [:]
    public private(set) var tensors: [String: (info: TensorInfo, offset: Int, bytes: Int)] = [:]
    public private(set) var tensorOrder: [String] = []
    public var path: String { file.path }
    public var tensorNames: [String] { tensorOrder }

    // ggml type ids of the formats we can dequantize.
    static let ggmlTypes: [UInt32: TensorDType] = [0: .f32, 1: .f16, 2: .q4_0, 3: .q4_1, 8: .q8_0, 30: .bf16]
    static let ggmlTypeNames: [UInt32: String] = [6: "Q5_0", 7: "Q5_1", 9: "Q8_1", 10: "Q2_K", 11: "Q3_K", 12: "Q4_K",
                                                  13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS",
                                                  18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S",
                                                  23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64",
                                                  29: "IQ1_M"]

    public init(path: String) throws {
        file = try MappedFile(path: path)
        var r = Reader(file: file)
        let magic = try r.u32("magic")
        guard magic == 0x4655_4747 else {
            throw QLMError.corrupt(path: path, detail: "not a GGUF file (magic \(String(format: "0x%08x", magic)))")
        }
        version = try r.u32("version")
        guard version == 2 || version == 3 else { throw QLMError.unsupported("\(path): GGUF version \(version) (only v2 and v3)") }
        let nTensors = try r.u64("tensor count")
        let nKV = try r.u64("metadata count")
        // Each entry needs at least a few bytes: a count larger than the file is a lie.
        guard nTensors < UInt64(file.size / 8 + 1), nKV < UInt64(file.size / 8 + 1) else {
            throw QLMError.corrupt(path: path, detail: "header claims \(nTensors) tensors and \(nKV) metadata entries, more than the file can hold")
        }
        for _ in 0..<nKV {
            let key = try r.string("metadata key")
            let type = try r.u32("type of '\(key)'")
            metadata[key] = try r.value(type: type, what: key)
        }
        var infos: [(String, [Int], UInt32, UInt64)] = []
        for i in 0..<nTensors {
            let name = try r.string("tensor \(i) name")
            let nd = try r.u32("dims of \(name)")
            guard nd >= 1 && nd <= 4 else { throw QLMError.tensor(path: path, tensor: name, detail: "\(nd) dimensions (1-4 allowed)") }
            var dims: [Int] = []
            for _ in 0..<nd {
                let d = try r.u64("dim of \(name)")
                guard d > 0 && d < (1 << 40) else { throw QLMError.tensor(path: path, tensor: name, detail: "dimension \(d) out of range") }
                dims.append(Int(d))
            }
            let t = try r.u32("type of \(name)")
            let off = try r.u64("offset of \(name)")
            infos.append((name, dims.reversed(), t, off))
        }
        let alignment = metadata["general.alignment"]?.int ?? 32
        guard alignment > 0 && alignment <= 1 << 20 else { throw QLMError.corrupt(path: path, detail: "general.alignment \(alignment)") }
        let dataStart = (r.pos + alignment - 1) / alignment * alignment
        for (name, shape, t, off) in infos {
            guard let dtype = Self.ggmlTypes[t] else {
                throw QLMError.unsupported("\(path): tensor '\(name)' has type \(Self.ggmlTypeNames[t] ?? "#\(t)"); qlm reads F32, F16, BF16, Q8_0, Q4_0 and Q4_1")
            }
            let info = TensorInfo(name: name, shape: shape, dtype: dtype)
            guard let bytes = dtype.byteCount(elements: info.elementCount) else {
                throw QLMError.tensor(path: path, tensor: name, detail: "\(info.elementCount) elements do not fill whole \(dtype.rawValue) blocks")
            }
            guard off < UInt64(Int.max / 2), dataStart + Int(off) + bytes <= file.size else {
                throw QLMError.tensor(path: path, tensor: name, detail: "data at offset \(off) (+\(bytes) bytes) runs past the end of the \(file.size)-byte file (truncated?)")
            }
            guard tensors[name] == nil else { throw QLMError.tensor(path: path, tensor: name, detail: "appears twice") }
            tensors[name] = (info, dataStart + Int(off), bytes)
            tensorOrder.append(name)
        }
    }

    public func info(_ name: String) -> TensorInfo? { tensors[name]?.info }

    public func rawBytes(_ name: String) throws -> UnsafeRawBufferPointer {
        guard let t = tensors[name] else { throw QLMError.tensor(path: path, tensor: name, detail: "not in file") }
        return try file.bytes(t.offset, t.bytes, what: name)
    }

    public func loadF32(_ name: String) throws -> [Float] {
        guard let t = tensors[name] else { throw QLMError.tensor(path: path, tensor: name, detail: "not in file") }
        let src = try rawBytes(name)
        let n = t.info.elementCount
        return [Float](unsafeUninitializedCapacity: n) { dst, count in
            dequantize(t.info.dtype, src.baseAddress!, dst.baseAddress!, n)
            count = n
        }
    }

    /// Bounds-checked little-endian cursor over the mapped file.
    struct Reader {
        let file: MappedFile
        var pos = 0

        mutating func raw(_ n: Int, _ what: String) throws -> UnsafeRawBufferPointer {
            let b = try file.bytes(pos, n, what: what)
            pos += n
            return b
        }
        mutating func u32(_ what: String) throws -> UInt32 { try raw(4, what).loadUnaligned(as: UInt32.self).littleEndian }
        mutating func u64(_ what: String) throws -> UInt64 { try raw(8, what).loadUnaligned(as: UInt64.self).littleEndian }
        mutating func string(_ what: String) throws -> String {
            let n = try u64("length of \(what)")
            guard n <= UInt64(file.size - pos) else {
                throw QLMError.corrupt(path: file.path, detail: "\(what): string length \(n) runs past the end of the file")
            }
            let b = try raw(Int(n), what)
            return String(decoding: b, as: UTF8.self)
        }
        mutating func value(type: UInt32, what: String) throws -> GGUFValue {
            switch type {
            case 0: return .uint(UInt64(try raw(1, what)[0]))
            case 1: return .int(Int64(Int8(bitPattern: try raw(1, what)[0])))
            case 2: return .uint(UInt64(try raw(2, what).loadUnaligned(as: UInt16.self).littleEndian))
            case 3: return .int(Int64(try raw(2, what).loadUnaligned(as: Int16.self).littleEndian))
            case 4: return .uint(UInt64(try u32(what)))
            case 5: return .int(Int64(Int32(bitPattern: try u32(what))))
            case 6: return .float(Double(Float(bitPattern: try u32(what))))
            case 7: return .bool(try raw(1, what)[0] != 0)
            case 8: return .string(try string(what))
            case 9:
                let et = try u32("element type of \(what)")
                let n = try u64("length of \(what)")
                guard n <= UInt64(file.size - pos) else {
                    throw QLMError.corrupt(path: file.path, detail: "metadata '\(what)': array of \(n) elements runs past the end of the file")
                }
                if et == 8 {
                    var a: [String] = []
                    a.reserveCapacity(Int(n))
                    for _ in 0..<n { a.append(try string(what)) }
                    return .strings(a)
                }
                var a: [GGUFValue] = []
                a.reserveCapacity(Int(n))
                for _ in 0..<n { a.append(try value(type: et, what: what)) }
                return .array(a)
            case 10: return .uint(try u64(what))
            case 11: return .int(Int64(bitPattern: try u64(what)))
            case 12: return .float(Double(bitPattern: try u64(what)))
            default: throw QLMError.corrupt(path: file.path, detail: "metadata '\(what)' has unknown value type \(type)")
            }
        }
    }
}

/// Dequantize `n` elements of `dtype` at `src` into f32 `dst`.
func dequantize(_ dtype: TensorDType, _ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ n: Int) {
    switch dtype {
    case .f32: memcpy(dst, src, n * 4)
    case .f16: qlm_dequant_f16(src.assumingMemoryBound(to: UInt16.self), dst, n)
    case .bf16: qlm_dequant_bf16(src.assumingMemoryBound(to: UInt16.self), dst, n)
    case .q8_0: qlm_dequant_q8_0(src, dst, n)
    case .q4_0: qlm_dequant_q4_0(src, dst, n)
    case .q4_1: qlm_dequant_q4_1(src, dst, n)
    }
}
