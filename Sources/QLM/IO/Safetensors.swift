import Foundation
import QLMKernels

// Hugging Face safetensors: an 8-byte little-endian header length N, N bytes of UTF-8 JSON
// `{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {string: string}}`
// (offsets relative to the data area that follows the header), then the raw little-endian data.
// Spec: https://github.com/huggingface/safetensors#format

/// The reference implementation refuses headers above 100 MB; so do we (a corrupt length field
/// would otherwise make us copy and parse most of a multi-GB file).
private let maxSafetensorsHeaderBytes = 100_000_000

/// Safetensors dtypes that are valid in the format but that qlm does not read.
private let otherSafetensorsDTypes: Set<String> = [
    "BOOL", "U8", "I8", "U16", "I16", "U32", "I32", "U64", "I64", "F64", "C64",
    "F8_E4M3", "F8_E5M2", "F8_E8M0", "E8M0", "F6_E2M3", "F6_E3M2", "F4",
]

/// A JSON object key known only at run time.
struct QLMAnyCodingKey: CodingKey {
    var stringValue: String
    var intValue: Int?
    init(stringValue: String) { self.stringValue = stringValue; intValue = nil }
    init?(intValue: Int) { stringValue = "\(intValue)"; self.intValue = intValue }
}

/// `a.b[2]` for a decoding path.
func qlmCodingPathString(_ path: [any CodingKey]) -> String {
    var s = ""
    for k in path {
        if let i = k.intValue { s += "[\(i)]" } else { s += s.isEmpty ? k.stringValue : "." + k.stringValue }
    }
    return s
}

/// A one-line reason for a JSONDecoder failure, naming the offending field. `dropFirst` drops
/// leading path components the caller reports separately (e.g. the tensor name).
func qlmDescribeDecodingError(_ error: Error, dropFirst: Int = 0) -> String {
    guard let e = error as? DecodingError else { return "\(error)" }
    func field(_ path: [any CodingKey]) -> String { qlmCodingPathString(Array(path.dropFirst(dropFirst))) }
    switch e {
    case let .typeMismatch(type, ctx):
        let f = field(ctx.codingPath)
        let want: String
        switch type {
        case is Int.Type, is [Int].Type: want = "an integer"
        case is Double.Type: want = "a number"
        case is Bool.Type: want = "true or false"
        case is String.Type: want = "a string"
        case is [String].Type: want = "an array of strings"
        default: want = "a value of type \(type)"
        }
        if type is [String: Any].Type || type is [String: String].Type {
            let what = type is [String: String].Type ? "a JSON object of string values" : "a JSON object"
            return f.isEmpty ? (ctx.codingPath.isEmpty ? "expected \(what) at the top level" : "expected \(what)")
                             : "'\(f)' must be \(what)"
        }
        if type is [Int].Type { return "'\(f)' must be an array of integers" }
        return "'\(f)' must be \(want)"
    case let .valueNotFound(type, ctx):
        let f = field(ctx.codingPath)
        return "'\(f)' is null, expected a value of type \(type)"
    case let .keyNotFound(key, ctx):
        let parent = field(ctx.codingPath)
        return parent.isEmpty ? "missing required field '\(key.stringValue)'" : "missing field '\(key.stringValue)' in '\(parent)'"
    case let .dataCorrupted(ctx):
        let f = field(ctx.codingPath)
        let why = (ctx.underlyingError.map { "\($0)" } ?? ctx.debugDescription)
        return f.isEmpty ? "not valid JSON (\(why))" : "'\(f)': \(ctx.debugDescription)"
    @unknown default:
        return "\(e)"
    }
}

/// A JSON integer. Foundation's JSONDecoder reports `1.5` decoded as `Int` as "not valid JSON"
/// without a coding path; this type reports a type mismatch at the right field instead.
struct QLMJSONInt: Decodable {
    var value: Int
    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        let d: Double
        do { d = try c.decode(Double.self) } catch let DecodingError.typeMismatch(_, ctx) {
            throw DecodingError.typeMismatch(Int.self, ctx)
        }
        guard d == d.rounded(), abs(d) < 9.0e18 else {
            throw DecodingError.typeMismatch(Int.self, .init(codingPath: decoder.codingPath, debugDescription: "\(d) is not an integer"))
        }
        value = (try? c.decode(Int.self)) ?? Int(d)
    }
}

private struct RawSafetensorsEntry: Decodable {
    var dtype: String
    var shapeRaw: [QLMJSONInt]
    var offsetsRaw: [QLMJSONInt]
    var shape: [Int] { shapeRaw.map(\.value) }
    var dataOffsets: [Int] { offsetsRaw.map(\.value) }
    enum CodingKeys: String, CodingKey { case dtype, shapeRaw = "shape", offsetsRaw = "data_offsets" }
}

private struct RawSafetensorsHeader: Decodable {
    var metadata: [String: String] = [:]
    var tensors: [(name: String, entry: RawSafetensorsEntry)] = []
    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: QLMAnyCodingKey.self)
        for k in c.allKeys {
            if k.stringValue == "__metadata__" {
                if try c.decodeNil(forKey: k) { continue }
                metadata = try c.decode([String: String].self, forKey: k)
            } else {
                tensors.append((k.stringValue, try c.decode(RawSafetensorsEntry.self, forKey: k)))
            }
        }
    }
}

/// One memory-mapped `.safetensors` file holding F32, F16 or BF16 tensors. The header is
/// validated completely at open (every failure is a `QLMError` naming the file and tensor);
/// tensor data is only touched by `loadF32`.
public final class SafetensorsFile: TensorSource {
    struct Entry: Sendable {
        var info: TensorInfo
        /// Absolute byte range in the file.
        var begin: Int
        var end: Int
    }

    public let path: String
    /// The `__metadata__` string map (empty when absent).
    public let metadata: [String: String]
    /// Tensor names in the order their data appears in the file.
    public let tensorNames: [String]
    /// Byte offset of the data area (8 + header length).
    public let dataStart: Int
    private let file: MappedFile
    private let entries: [String: Entry]

    public init(path: String) throws {
        let file = try MappedFile(path: path)
        self.file = file
        self.path = path
        func corrupt(_ d: String) -> QLMError { .corrupt(path: path, detail: d) }

        guard file.size >= 8 else {
            throw corrupt("\(file.size)-byte file is shorter than the 8-byte safetensors header length")
        }
        var n64: UInt64 = 0
        withUnsafeMutableBytes(of: &n64) { $0.copyMemory(from: UnsafeRawBufferPointer(start: file.base, count: 8)) }
        n64 = UInt64(littleEndian: n64)
        guard n64 <= UInt64(file.size - 8) else {
            throw corrupt("header length \(n64) exceeds the \(file.size - 8) bytes that follow it (truncated or not a safetensors file)")
        }
        guard n64 <= UInt64(maxSafetensorsHeaderBytes) else {
            throw corrupt("header length \(n64) exceeds the \(maxSafetensorsHeaderBytes)-byte limit")
        }
        let headerLen = Int(n64)
        guard headerLen >= 2 else { throw corrupt("header length \(headerLen) is too small for a JSON object") }
        let headerBytes = UnsafeRawBufferPointer(start: file.base + 8, count: headerLen)
        guard headerBytes[0] == UInt8(ascii: "{") else {
            throw corrupt("header does not start with '{' (not a safetensors file?)")
        }
        let raw: RawSafetensorsHeader
        do {
            raw = try JSONDecoder().decode(RawSafetensorsHeader.self, from: Data(headerBytes))
        } catch let e as DecodingError {
            let path0: [any CodingKey]
            switch e {
            case let .typeMismatch(_, c), let .valueNotFound(_, c), let .keyNotFound(_, c), let .dataCorrupted(c): path0 = c.codingPath
            @unknown default: path0 = []
            }
            if let t = path0.first?.stringValue, t != "__metadata__" {
                throw QLMError.tensor(path: path, tensor: t, detail: "bad header entry: " + qlmDescribeDecodingError(e, dropFirst: 1))
            }
            throw corrupt("bad safetensors header: " + qlmDescribeDecodingError(e))
        } catch {
            throw corrupt("bad safetensors header: \(error)")
        }

        let dataStart = 8 + headerLen
        let dataSize = file.size - dataStart
        self.dataStart = dataStart
        var entries: [String: Entry] = [:]
        entries.reserveCapacity(raw.tensors.count)
        for (name, r) in raw.tensors {
            func bad(_ d: String) -> QLMError { .tensor(path: path, tensor: name, detail: d) }
            let dtype: TensorDType
            switch r.dtype {
            case "F32": dtype = .f32
            case "F16": dtype = .f16
            case "BF16": dtype = .bf16
            default:
                if otherSafetensorsDTypes.contains(r.dtype) {
                    throw QLMError.unsupported("\(path): tensor '\(name)' has dtype \(r.dtype); qlm reads F32, F16 and BF16 safetensors")
                }
                throw bad("unknown dtype '\(r.dtype)'")
            }
            var count = 1
            for d in r.shape {
                guard d >= 0 else { throw bad("negative dimension in shape \(r.shape)") }
                let (p, o) = count.multipliedReportingOverflow(by: d)
                guard !o else { throw bad("shape \(r.shape) has too many elements") }
                count = p
            }
            guard r.dataOffsets.count == 2 else {
                throw bad("data_offsets must be [begin, end], found \(r.dataOffsets.count) values")
            }
            let b = r.dataOffsets[0], e = r.dataOffsets[1]
            guard b >= 0, e >= b else { throw bad("data_offsets [\(b), \(e)] are not an increasing pair of non-negative integers") }
            guard e <= dataSize else {
                throw bad("data_offsets [\(b), \(e)] lie outside the \(dataSize)-byte data area (truncated file?)")
            }
            let (want, o) = count.multipliedReportingOverflow(by: dtype == .f32 ? 4 : 2)
            guard !o, want == e - b else {
                throw bad("shape \(r.shape) of \(r.dtype) needs \(o ? "too many" : "\(want)") bytes, data_offsets [\(b), \(e)] hold \(e - b)")
            }
            entries[name] = Entry(info: TensorInfo(name: name, shape: r.shape, dtype: dtype),
                                  begin: dataStart + b, end: dataStart + e)
        }
        // Order by position in the file, and refuse tensors whose bytes overlap.
        let ordered = entries.values.sorted { ($0.begin, $0.end, $0.info.name) < ($1.begin, $1.end, $1.info.name) }
        var prev: Entry? = nil
        for e in ordered where e.end > e.begin {
            if let p = prev, e.begin < p.end {
                throw QLMError.tensor(path: path, tensor: e.info.name,
                                      detail: "data overlaps tensor '\(p.info.name)' (bytes \(e.begin - dataStart)..<\(e.end - dataStart) vs \(p.begin - dataStart)..<\(p.end - dataStart))")
            }
            prev = e
        }
        self.entries = entries
        self.tensorNames = ordered.map(\.info.name)
        self.metadata = raw.metadata
    }

    public func info(_ name: String) -> TensorInfo? { entries[name]?.info }

    /// The tensor's bytes inside the file, offsets relative to the file start.
    public func byteRange(_ name: String) -> Range<Int>? { entries[name].map { $0.begin..<$0.end } }

    public func loadF32(_ name: String) throws -> [Float] {
        guard let e = entries[name] else {
            throw QLMError.tensor(path: path, tensor: name, detail: "not present in this file")
        }
        let count = e.info.elementCount
        if count == 0 { return [] }
        let src = file.base + e.begin
        return [Float](unsafeUninitializedCapacity: count) { dst, initialized in
            let out = dst.baseAddress!
            switch e.info.dtype {
            case .f32:
                UnsafeMutableRawPointer(out).copyMemory(from: src, byteCount: count * 4)
            case .f16, .bf16:
                let convert = e.info.dtype == .f16 ? qlm_dequant_f16 : qlm_dequant_bf16
                if Int(bitPattern: src) % MemoryLayout<UInt16>.alignment == 0 {
                    convert(src.assumingMemoryBound(to: UInt16.self), out, count)
                } else {
                    // Valid files may place data at odd offsets (the header length need not be padded).
                    let tmp = UnsafeMutablePointer<UInt16>.allocate(capacity: count)
                    defer { tmp.deallocate() }
                    UnsafeMutableRawPointer(tmp).copyMemory(from: src, byteCount: count * 2)
                    convert(tmp, out, count)
                }
            default:
                fatalError("unreachable: safetensors entries are F32/F16/BF16")
            }
            initialized = count
        }
    }
}

private struct RawSafetensorsIndex: Decodable {
    var weightMap: [String: String]
    enum CodingKeys: String, CodingKey { case weightMap = "weight_map" }
}

/// A checkpoint split over several safetensors files, described by `model.safetensors.index.json`
/// (`{"metadata": {...}, "weight_map": {tensor: shard file}}`). Every shard the map names is opened
/// and validated; every mapped tensor must be in its shard and no tensor may be in two shards.
/// Like transformers, tensors present in a shard but absent from the map are still exposed.
public final class ShardedSafetensors: TensorSource {
    /// The index file.
    public let path: String
    /// Shards in file-name order.
    public let shards: [SafetensorsFile]
    public let tensorNames: [String]
    private let owner: [String: SafetensorsFile]

    public init(indexPath: String) throws {
        path = indexPath
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: indexPath)) } catch {
            throw QLMError.io(path: indexPath, detail: "cannot read safetensors index: \((error as NSError).localizedDescription)")
        }
        let index: RawSafetensorsIndex
        do { index = try JSONDecoder().decode(RawSafetensorsIndex.self, from: data) } catch {
            throw QLMError.corrupt(path: indexPath, detail: "bad safetensors index: " + qlmDescribeDecodingError(error))
        }
        guard !index.weightMap.isEmpty else { throw QLMError.corrupt(path: indexPath, detail: "weight_map is empty") }
        let dir = URL(fileURLWithPath: indexPath).deletingLastPathComponent().path
        let indexName = URL(fileURLWithPath: indexPath).lastPathComponent

        var files: [String: SafetensorsFile] = [:]
        var shards: [SafetensorsFile] = []
        for shardName in Set(index.weightMap.values).sorted() {
            let comps = shardName.split(separator: "/", omittingEmptySubsequences: false)
            guard !shardName.isEmpty, !shardName.hasPrefix("/"), !comps.contains("..") else {
                throw QLMError.corrupt(path: indexPath, detail: "weight_map names shard '\(shardName)' outside the checkpoint directory")
            }
            let shardPath = dir + "/" + shardName
            let f: SafetensorsFile
            do { f = try SafetensorsFile(path: shardPath) } catch let QLMError.io(p, d) {
                throw QLMError.io(path: p, detail: "\(d) (shard listed in \(indexName))")
            }
            files[shardName] = f
            shards.append(f)
        }
        var owner: [String: SafetensorsFile] = [:]
        var names: [String] = []
        for f in shards {
            for t in f.tensorNames {
                if let other = owner[t] {
                    throw QLMError.tensor(path: f.path, tensor: t,
                                          detail: "also stored in shard \(URL(fileURLWithPath: other.path).lastPathComponent); a tensor may live in one shard only")
                }
                owner[t] = f
                names.append(t)
            }
        }
        for (t, shardName) in index.weightMap.sorted(by: { $0.key < $1.key }) {
            let f = files[shardName]!
            guard owner[t] === f else {
                throw QLMError.tensor(path: f.path, tensor: t,
                                      detail: "\(indexName) places it in this shard, but the shard does not contain it")
            }
        }
        self.shards = shards
        self.owner = owner
        self.tensorNames = names
    }

    public func info(_ name: String) -> TensorInfo? { owner[name]?.info(name) }

    /// The shard holding `name`.
    public func shard(of name: String) -> SafetensorsFile? { owner[name] }

    public func loadF32(_ name: String) throws -> [Float] {
        guard let f = owner[name] else {
            throw QLMError.tensor(path: path, tensor: name, detail: "not present in any shard")
        }
        return try f.loadF32(name)
    }
}

/// Opens a Hugging Face checkpoint directory's weights: `model.safetensors`, else
/// `model.safetensors.index.json` with its shards.
public func openSafetensorsModel(directory: String) throws -> any TensorSource {
    let fm = FileManager.default
    let single = directory + "/model.safetensors"
    let index = directory + "/model.safetensors.index.json"
    if fm.fileExists(atPath: single) { return try SafetensorsFile(path: single) }
    if fm.fileExists(atPath: index) { return try ShardedSafetensors(indexPath: index) }
    var isDir: ObjCBool = false
    guard fm.fileExists(atPath: directory, isDirectory: &isDir) else {
        throw QLMError.io(path: directory, detail: "no such directory")
    }
    guard isDir.boolValue else { throw QLMError.io(path: directory, detail: "not a directory (expected a Hugging Face checkpoint folder)") }
    let others = ((try? fm.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasSuffix(".safetensors") }.sorted()
    var detail = "neither model.safetensors nor model.safetensors.index.json found"
    if !others.isEmpty { detail += " (other safetensors files here: \(others.joined(separator: ", ")))" }
    throw QLMError.io(path: directory, detail: detail)
}

/// JSON string literal with the escapes JSON requires.
func qlmJSONString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if u.value < 0x20 { out += String(format: "\\u%04x", u.value) } else { out.unicodeScalars.append(u) }
        }
    }
    return out + "\""
}

/// Writes tensors to a `.safetensors` file in the given order, converted to `dtype` (f32, f16 or bf16,
/// round to nearest even). The header is padded with spaces to a multiple of 8 bytes so every tensor's
/// data is aligned. `metadata` goes to `__metadata__`; `"format": "pt"` is added when absent, since
/// transformers refuses safetensors files without it. The file is written atomically and the data
/// streamed in chunks (no second copy of the model in memory).
public func writeSafetensors(path: String, tensors: [(name: String, shape: [Int], data: [Float])],
                             dtype: TensorDType = .f32, metadata: [String: String] = [:]) throws {
    let elemSize: Int
    switch dtype {
    case .f32: elemSize = 4
    case .f16, .bf16: elemSize = 2
    default: throw QLMError.unsupported("writing safetensors as \(dtype.rawValue) (use F32, F16 or BF16)")
    }
    var seen = Set<String>()
    var header = "{"
    var meta = metadata
    if meta["format"] == nil { meta["format"] = "pt" }
    header += qlmJSONString("__metadata__") + ":{"
    header += meta.sorted { $0.key < $1.key }.map { qlmJSONString($0.key) + ":" + qlmJSONString($0.value) }.joined(separator: ",")
    header += "}"
    var offset = 0
    for t in tensors {
        guard !t.name.isEmpty, t.name != "__metadata__" else {
            throw QLMError.invalidArgument("writeSafetensors \(path): invalid tensor name '\(t.name)'")
        }
        guard seen.insert(t.name).inserted else {
            throw QLMError.invalidArgument("writeSafetensors \(path): tensor '\(t.name)' given twice")
        }
        guard t.shape.allSatisfy({ $0 >= 0 }), t.shape.reduce(1, *) == t.data.count else {
            throw QLMError.invalidArgument("writeSafetensors \(path): tensor '\(t.name)' has shape \(t.shape) but \(t.data.count) values")
        }
        let bytes = t.data.count * elemSize
        header += "," + qlmJSONString(t.name) + ":{\"dtype\":\"\(dtype.rawValue)\",\"shape\":["
            + t.shape.map(String.init).joined(separator: ",") + "],\"data_offsets\":[\(offset),\(offset + bytes)]}"
        offset += bytes
    }
    header += "}"
    var headerData = Data(header.utf8)
    let pad = (8 - headerData.count % 8) % 8
    headerData.append(contentsOf: [UInt8](repeating: UInt8(ascii: " "), count: pad))
    var lenLE = UInt64(headerData.count).littleEndian
    let lenData = withUnsafeBytes(of: &lenLE) { Data($0) }

    try writeFileAtomically(path) { h in
        try h.write(contentsOf: lenData)
        try h.write(contentsOf: headerData)
        let chunk = 1 << 18
        var half = [UInt16](repeating: 0, count: dtype == .f32 ? 0 : chunk)
        for t in tensors {
            try t.data.withUnsafeBufferPointer { src in
                var i = 0
                while i < src.count {
                    let n = min(chunk, src.count - i)
                    let p = src.baseAddress! + i
                    if dtype == .f32 {
                        try h.write(contentsOf: UnsafeRawBufferPointer(start: p, count: n * 4))
                    } else {
                        try half.withUnsafeMutableBufferPointer { dst in
                            if dtype == .f16 { qlm_quant_f16(p, dst.baseAddress!, n) } else { qlm_quant_bf16(p, dst.baseAddress!, n) }
                            try h.write(contentsOf: UnsafeRawBufferPointer(start: dst.baseAddress!, count: n * 2))
                        }
                    }
                    i += n
                }
            }
        }
    }
}
