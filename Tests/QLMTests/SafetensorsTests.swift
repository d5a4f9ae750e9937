import Foundation
import Testing
@testable import QLM

/// Runs `body`, requires a QLMError (never another error, never success) and returns it.
@discardableResult
private func expectQLMError(_ what: String, contains needles: [String] = [],
                            sourceLocation: SourceLocation = #_sourceLocation,
                            _ body: () throws -> Void) -> QLMError? {
    do {
        try body()
        Issue.record("\(what): expected a QLMError, got success", sourceLocation: sourceLocation)
    } catch let e as QLMError {
        for n in needles {
            #expect(e.description.contains(n), "\(what): '\(e.description)' should mention '\(n)'", sourceLocation: sourceLocation)
        }
        return e
    } catch {
        Issue.record("\(what): expected a QLMError, got \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

/// Deterministic pseudo-random floats in [-scale, scale].
private func randomFloats(_ n: Int, seed: UInt64, scale: Float = 3) -> [Float] {
    var s = seed &* 0x9E3779B97F4A7C15 | 1
    return (0..<n).map { _ in
        s ^= s << 13; s ^= s >> 7; s ^= s << 17
        return (Float(s >> 40) / Float(1 << 24) * 2 - 1) * scale
    }
}

/// Independent round-to-nearest-even references.
private func roundF16(_ x: Float) -> Float { Float(Float16(x)) }
private func roundBF16(_ x: Float) -> Float {
    let b = x.bitPattern
    let r = (b &+ 0x7FFF &+ ((b >> 16) & 1)) & 0xFFFF_0000
    return Float(bitPattern: r)
}

/// A raw safetensors file: length, header text (not padded), data bytes.
private func rawSafetensors(header: String, data: [UInt8]) -> Data {
    let h = Array(header.utf8)
    var d = Data()
    var n = UInt64(h.count).littleEndian
    withUnsafeBytes(of: &n) { d.append(contentsOf: $0) }
    d.append(contentsOf: h)
    d.append(contentsOf: data)
    return d
}

private func stEntry(_ shape: String, _ b: Int, _ e: Int) -> String { stEntry("F32", shape, b, e) }
private func stEntry(_ dtype: String, _ shape: String, _ b: Int, _ e: Int) -> String {
    #"{"dtype":"\#(dtype)","shape":\#(shape),"data_offsets":[\#(b),\#(e)]}"#
}

private func floatBytes(_ xs: [Float]) -> [UInt8] { xs.withUnsafeBytes { Array($0) } }

@Suite struct SafetensorsTests {
    let ragged: [(name: String, shape: [Int], data: [Float])] = [
        ("model.embed_tokens.weight", [7, 5], randomFloats(35, seed: 1)),
        ("model.norm.weight", [5], randomFloats(5, seed: 2)),
        ("scalar", [], [42.5]),
        ("cube", [2, 3, 4], randomFloats(24, seed: 3)),
        ("empty", [0, 4], []),
        ("odd", [3], randomFloats(3, seed: 4, scale: 70000)),  // beyond f16 range: rounds to inf
        ("tiny", [1, 1], [1e-8]),                               // f16 subnormal / underflow
    ]

    @Test func f32RoundTripIsExact() throws {
        let dir = TestPaths.tempDir("st"); defer { try? FileManager.default.removeItem(atPath: dir) }
        let p = dir + "/m.safetensors"
        try writeSafetensors(path: p, tensors: ragged, dtype: .f32, metadata: ["note": "héllo \"quoted\"\n", "format": "pt"])
        let f = try SafetensorsFile(path: p)
        #expect(f.tensorNames == ragged.map(\.name))
        #expect(f.metadata == ["note": "héllo \"quoted\"\n", "format": "pt"])
        #expect(f.dataStart % 8 == 0)
        for t in ragged {
            #expect(f.info(t.name) == TensorInfo(name: t.name, shape: t.shape, dtype: .f32))
            #expect(try f.loadF32(t.name) == t.data)
        }
        #expect(f.info("nope") == nil)
        expectQLMError("missing tensor", contains: ["nope"]) { _ = try f.loadF32("nope") }
    }

    @Test(arguments: [TensorDType.f16, .bf16])
    func halfRoundTripGivesRoundedValues(dtype: TensorDType) throws {
        let dir = TestPaths.tempDir("st"); defer { try? FileManager.default.removeItem(atPath: dir) }
        let p = dir + "/m.safetensors"
        try writeSafetensors(path: p, tensors: ragged, dtype: dtype, metadata: [:])
        let f = try SafetensorsFile(path: p)
        #expect(f.metadata["format"] == "pt")
        #expect(f.tensorNames == ragged.map(\.name))
        for t in ragged {
            #expect(f.info(t.name) == TensorInfo(name: t.name, shape: t.shape, dtype: dtype))
            #expect(f.byteRange(t.name)?.count == t.data.count * 2)
            let want = t.data.map(dtype == .f16 ? roundF16 : roundBF16)
            #expect(try f.loadF32(t.name) == want, "\(t.name)")
        }
    }

    @Test func largeTensorStreamsInChunks() throws {
        // More than one 256 Ki-element write chunk, and a length that is not a multiple of it.
        let dir = TestPaths.tempDir("st"); defer { try? FileManager.default.removeItem(atPath: dir) }
        let n = (1 << 18) * 2 + 1234
        let big = randomFloats(n, seed: 9)
        for dtype in [TensorDType.f32, .bf16] {
            let p = dir + "/big-\(dtype.rawValue).safetensors"
            try writeSafetensors(path: p, tensors: [("a", [3], [1, 2, 3]), ("big", [n], big)], dtype: dtype, metadata: [:])
            let got = try SafetensorsFile(path: p).loadF32("big")
            #expect(got == (dtype == .f32 ? big : big.map(roundBF16)))
        }
    }

    @Test func readsUnpaddedHandWrittenFile() throws {
        // A header whose length is not a multiple of 8 puts the data at odd offsets; keys in any order.
        let dir = TestPaths.tempDir("st"); defer { try? FileManager.default.removeItem(atPath: dir) }
        let h: [UInt16] = [0x3C00, 0xC000, 0x3555]  // f16: 1, -2, 0.333251953125
        var header = #"{"b":{"data_offsets":[8,14],"shape":[3],"dtype":"F16"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}, "__metadata__":{"k":"v"}}"#
        if header.utf8.count % 2 == 0 { header += " " }  // odd length: every tensor misaligned
        let data = floatBytes([1.5, -7]) + h.withUnsafeBytes { Array($0) }
        let p = dir + "/h.safetensors"
        try rawSafetensors(header: header, data: data).write(to: URL(fileURLWithPath: p))
        let f = try SafetensorsFile(path: p)
        #expect(f.dataStart % 2 == 1)
        #expect(f.tensorNames == ["a", "b"])
        #expect(f.metadata == ["k": "v"])
        #expect(try f.loadF32("a") == [1.5, -7])
        #expect(try f.loadF32("b") == [1, -2, 0.333251953125])
    }

    @Test func shardedIndexWithTwoShards() throws {
        let dir = TestPaths.tempDir("st"); defer { try? FileManager.default.removeItem(atPath: dir) }
        let s1 = Array(ragged[0..<3]), s2 = Array(ragged[3...])
        try writeSafetensors(path: dir + "/model-00001-of-00002.safetensors", tensors: s1, dtype: .f32, metadata: [:])
        try writeSafetensors(path: dir + "/model-00002-of-00002.safetensors", tensors: s2, dtype: .bf16, metadata: [:])
        func writeIndex(_ map: [String: String]) throws {
            let obj: [String: Any] = ["metadata": ["total_size": 1234], "weight_map": map]
            try JSONSerialization.data(withJSONObject: obj).write(to: URL(fileURLWithPath: dir + "/model.safetensors.index.json"))
        }
        var map: [String: String] = [:]
        for t in s1 { map[t.name] = "model-00001-of-00002.safetensors" }
        for t in s2 { map[t.name] = "model-00002-of-00002.safetensors" }
        try writeIndex(map)

        let src = try openSafetensorsModel(directory: dir)
        let sharded = try #require(src as? ShardedSafetensors)
        #expect(sharded.shards.count == 2)
        #expect(Set(src.tensorNames) == Set(ragged.map(\.name)))
        #expect(src.tensorNames.count == ragged.count)
        for t in s1 { #expect(try src.loadF32(t.name) == t.data) }
        for t in s2 {
            #expect(src.info(t.name)?.dtype == .bf16)
            #expect(try src.loadF32(t.name) == t.data.map(roundBF16))
        }

        // The map points a tensor at the wrong shard.
        var wrong = map; wrong["cube"] = "model-00001-of-00002.safetensors"
        try writeIndex(wrong)
        expectQLMError("tensor not in its shard", contains: ["cube", "model-00001-of-00002.safetensors"]) {
            _ = try openSafetensorsModel(directory: dir)
        }
        // A tensor listed but absent everywhere.
        var extra = map; extra["ghost"] = "model-00002-of-00002.safetensors"
        try writeIndex(extra)
        expectQLMError("ghost tensor", contains: ["ghost", "model-00002-of-00002.safetensors"]) {
            _ = try openSafetensorsModel(directory: dir)
        }
        // A missing shard file.
        var missing = map; missing["cube"] = "model-00003-of-00003.safetensors"
        try writeIndex(missing)
        expectQLMError("missing shard", contains: ["model-00003-of-00003.safetensors"]) {
            _ = try openSafetensorsModel(directory: dir)
        }
        // A shard outside the directory.
        var escape = map; escape["cube"] = "../x.safetensors"
        try writeIndex(escape)
        expectQLMError("escaping shard path", contains: ["../x.safetensors"]) { _ = try openSafetensorsModel(directory: dir) }
        // The same tensor stored in two shards.
        try writeSafetensors(path: dir + "/model-00002-of-00002.safetensors", tensors: s2 + [ragged[1]], dtype: .bf16, metadata: [:])
        try writeIndex(map)
        expectQLMError("duplicate tensor", contains: [ragged[1].name, "model-0000"]) { _ = try openSafetensorsModel(directory: dir) }
        // Bad index JSON.
        try Data("{\"weight_map\": [1, 2]}".utf8).write(to: URL(fileURLWithPath: dir + "/model.safetensors.index.json"))
        expectQLMError("bad index", contains: ["index.json", "weight_map"]) { _ = try openSafetensorsModel(directory: dir) }
    }

    @Test func openModelDirectory() throws {
        let dir = TestPaths.tempDir("st"); defer { try? FileManager.default.removeItem(atPath: dir) }
        expectQLMError("empty dir", contains: ["model.safetensors"]) { _ = try openSafetensorsModel(directory: dir) }
        expectQLMError("no dir", contains: ["/does-not-exist"]) { _ = try openSafetensorsModel(directory: dir + "/does-not-exist") }
        try writeSafetensors(path: dir + "/model.safetensors", tensors: ragged, dtype: .f16, metadata: [:])
        let src = try openSafetensorsModel(directory: dir)
        #expect(src is SafetensorsFile)
        #expect(src.tensorNames == ragged.map(\.name))
    }

    @Test func writerRejectsBadInput() throws {
        let dir = TestPaths.tempDir("st"); defer { try? FileManager.default.removeItem(atPath: dir) }
        let e = expectQLMError("unwritable path") {
            try writeSafetensors(path: "/nonexistent-qlm-dir/sub/m.safetensors", tensors: ragged, dtype: .f32, metadata: [:])
        }
        if let e { if case .io = e {} else { Issue.record("expected QLMError.io, got \(e)") } }
        expectQLMError("shape/data mismatch", contains: ["cube"]) {
            try writeSafetensors(path: dir + "/a.safetensors", tensors: [("cube", [2, 3], [1, 2, 3])], dtype: .f32, metadata: [:])
        }
        expectQLMError("duplicate name", contains: ["x"]) {
            try writeSafetensors(path: dir + "/a.safetensors", tensors: [("x", [1], [1]), ("x", [1], [2])], dtype: .f32, metadata: [:])
        }
        expectQLMError("block dtype", contains: ["Q8_0"]) {
            try writeSafetensors(path: dir + "/a.safetensors", tensors: [("x", [32], [Float](repeating: 0, count: 32))], dtype: .q8_0, metadata: [:])
        }
        #expect(!FileManager.default.fileExists(atPath: dir + "/a.safetensors"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty)  // no temp files left behind
    }

    // MARK: corrupt inputs

    private func withFile(_ bytes: Data, _ body: (String) throws -> Void) rethrows {
        let dir = TestPaths.tempDir("st"); defer { try? FileManager.default.removeItem(atPath: dir) }
        let p = dir + "/bad.safetensors"
        try! bytes.write(to: URL(fileURLWithPath: p))
        try body(p)
    }


    @Test func truncatedFile() throws {
        let dir = TestPaths.tempDir("st"); defer { try? FileManager.default.removeItem(atPath: dir) }
        let p = dir + "/m.safetensors"
        try writeSafetensors(path: p, tensors: ragged, dtype: .f32, metadata: [:])
        let full = try Data(contentsOf: URL(fileURLWithPath: p))
        let lastWithData = ragged.last { !$0.data.isEmpty }!.name
        for cut in [4, 1] {
            withFile(full.prefix(full.count - cut)) { q in
                expectQLMError("cut \(cut)", contains: [q, lastWithData, "outside"]) { _ = try SafetensorsFile(path: q) }
            }
        }
        for keep in [0, 5, 7] {
            withFile(full.prefix(keep)) { q in
                expectQLMError("\(keep)-byte file", contains: [q, "8-byte"]) { _ = try SafetensorsFile(path: q) }
            }
        }
        withFile(full.prefix(100)) { q in  // cut inside the header
            expectQLMError("cut in header", contains: [q, "header length"]) { _ = try SafetensorsFile(path: q) }
        }
    }

    @Test func headerLengthLargerThanFile() {
        var d = rawSafetensors(header: #"{"a":\#(stEntry("[1]", 0, 4))}"#, data: floatBytes([1]))
        for n: UInt64 in [1000, UInt64(Int.max), UInt64.max] {
            var le = n.littleEndian
            withUnsafeBytes(of: &le) { d.replaceSubrange(0..<8, with: $0) }
            withFile(d) { q in expectQLMError("length \(n)", contains: [q, "header length"]) { _ = try SafetensorsFile(path: q) } }
        }
    }

    @Test func garbageHeaders() {
        let cases: [(String, String, [String])] = [
            ("not JSON", "{this is not json}", ["JSON"]),
            ("not an object", "[1, 2, 3]", ["{"]),
            ("truncated JSON", #"{"a":{"dtype":"F32","#, ["JSON"]),
            ("tensor not an object", #"{"a": 5}"#, ["'a'"]),
            ("missing dtype", #"{"a":{"shape":[1],"data_offsets":[0,4]}}"#, ["'a'", "dtype"]),
            ("missing shape", #"{"a":{"dtype":"F32","data_offsets":[0,4]}}"#, ["'a'", "shape"]),
            ("missing offsets", #"{"a":{"dtype":"F32","shape":[1]}}"#, ["'a'", "data_offsets"]),
            ("non-integer shape", #"{"a":\#(stEntry("[1.5]", 0, 4))}"#, ["'a'", "shape"]),
            ("string shape", #"{"a":\#(stEntry("\"1\"", 0, 4))}"#, ["'a'", "shape"]),
            ("negative shape", #"{"a":\#(stEntry("[-1]", 0, 4))}"#, ["'a'", "negative"]),
            ("huge shape", #"{"a":\#(stEntry("[4294967296,4294967296,4294967296]", 0, 4))}"#, ["'a'"]),
            ("end < begin", #"{"a":\#(stEntry("[1]", 4, 0))}"#, ["'a'", "data_offsets"]),
            ("negative offset", #"{"a":\#(stEntry("[1]", -4, 0))}"#, ["'a'", "data_offsets"]),
            ("three offsets", #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}"#, ["'a'", "data_offsets"]),
            ("offsets beyond data", #"{"a":\#(stEntry("[2]", 0, 8))}"#, ["'a'", "outside"]),
            ("offsets far beyond data", #"{"a":\#(stEntry("[1]", 1_000_000, 1_000_004))}"#, ["'a'", "outside"]),
            ("shape/length mismatch", #"{"a":\#(stEntry("[2]", 0, 4))}"#, ["'a'", "bytes"]),
            ("f16 shape/length mismatch", #"{"a":\#(stEntry("F16", "[1]", 0, 4))}"#, ["'a'", "bytes"]),
            ("unknown dtype", #"{"a":\#(stEntry("XYZ", "[1]", 0, 4))}"#, ["'a'", "XYZ"]),
            ("metadata not strings", #"{"__metadata__":{"n":1},"a":\#(stEntry("[1]", 0, 4))}"#, ["__metadata__"]),
            ("overlap", #"{"a":\#(stEntry("F16", "[2]", 0, 4)),"b":\#(stEntry("F16", "[1]", 2, 4))}"#, ["overlaps"]),
        ]
        for (what, header, needles) in cases {
            withFile(rawSafetensors(header: header, data: floatBytes([1]))) { q in
                expectQLMError(what, contains: [q] + needles) { _ = try SafetensorsFile(path: q) }
            }
        }
    }

    @Test func unsupportedDTypes() {
        for dt in ["I8", "F64", "I64", "BOOL", "F8_E4M3"] {
            let n = dt == "F64" || dt == "I64" ? 1 : 4
            withFile(rawSafetensors(header: #"{"ok":\#(stEntry("[1]", 0, 4)),"w.\#(dt)":\#(stEntry(dt, "[\(n)]", 4, 8))}"#,
                                    data: floatBytes([1, 2]))) { q in
                let e = expectQLMError(dt, contains: [q, "w.\(dt)", dt]) { _ = try SafetensorsFile(path: q) }
                if let e { if case .unsupported = e {} else { Issue.record("\(dt): expected .unsupported, got \(e)") } }
            }
        }
    }

    @Test func randomCorruptionNeverCrashes() throws {
        let dir = TestPaths.tempDir("st"); defer { try? FileManager.default.removeItem(atPath: dir) }
        let p = dir + "/m.safetensors"
        try writeSafetensors(path: p, tensors: ragged, dtype: .f16, metadata: ["a": "b"])
        let good = try Data(contentsOf: URL(fileURLWithPath: p))
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<300 {
            var d = good
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                let i = Int.random(in: 0..<min(d.count, 8 + 600), using: &rng)  // mostly hit the length and header
                d[i] = UInt8.random(in: 0...255, using: &rng)
            }
            if Bool.random(using: &rng) { d = d.prefix(Int.random(in: 0...d.count, using: &rng)) }
            let q = dir + "/fuzz.safetensors"
            try d.write(to: URL(fileURLWithPath: q))
            do {
                let f = try SafetensorsFile(path: q)
                for n in f.tensorNames {
                    let info = try #require(f.info(n))
                    #expect(try f.loadF32(n).count == info.elementCount)
                }
            } catch is QLMError {
            } catch {
                Issue.record("non-QLMError \(error)")
            }
        }
    }
}
