import Foundation
import Testing
@testable import QLM

/// Builds small GGUF v3 files in memory so every corruption can be produced on purpose.
struct GGUFBuilder {
    var kv: [(String, UInt32, Data)] = []
    var tensors: [(name: String, dims: [UInt64], type: UInt32, data: Data)] = []
    var version: UInt32 = 3

    static func le<T: FixedWidthInteger>(_ v: T) -> Data { withUnsafeBytes(of: v.littleEndian) { Data($0) } }
    static func str(_ s: String) -> Data { le(UInt64(s.utf8.count)) + Data(s.utf8) }

    mutating func string(_ k: String, _ v: String) { kv.append((k, 8, Self.str(v))) }
    mutating func u32(_ k: String, _ v: UInt32) { kv.append((k, 4, Self.le(v))) }
    mutating func f32(_ k: String, _ v: Float) { kv.append((k, 6, Self.le(v.bitPattern))) }
    mutating func f32Tensor(_ name: String, _ shape: [Int], _ values: [Float]) {
        var d = Data()
        for v in values { d += Self.le(v.bitPattern) }
        tensors.append((name, shape.reversed().map { UInt64($0) }, 0, d))
    }

    /// Returns the file bytes; `offsetFix` lets a test lie about one tensor's offset.
    func build(offsetFix: [String: UInt64] = [:]) -> Data {
        var d = Data("GGUF".utf8) + Self.le(version) + Self.le(UInt64(tensors.count)) + Self.le(UInt64(kv.count))
        for (k, t, v) in kv { d += Self.str(k) + Self.le(t) + v }
        var off: UInt64 = 0
        var offsets: [UInt64] = []
        for t in tensors {
            offsets.append(off)
            off += UInt64((t.data.count + 31) / 32 * 32)
        }
        for (i, t) in tensors.enumerated() {
            d += Self.str(t.name) + Self.le(UInt32(t.dims.count))
            for x in t.dims { d += Self.le(x) }
            d += Self.le(t.type) + Self.le(offsetFix[t.name] ?? offsets[i])
        }
        while d.count % 32 != 0 { d.append(0) }
        for t in tensors {
            d += t.data
            while d.count % 32 != 0 { d.append(0) }
        }
        return d
    }

    /// A complete 1-layer Llama (d=8, 2 heads, 1 kv head, ffn 16, vocab 12) with random weights.
    static func tinyLlama(seed: UInt64 = 1, tied: Bool = true) -> GGUFBuilder {
        var b = GGUFBuilder()
        b.string("general.architecture", "llama")
        b.u32("llama.embedding_length", 8); b.u32("llama.feed_forward_length", 16); b.u32("llama.block_count", 1)
        b.u32("llama.attention.head_count", 2); b.u32("llama.attention.head_count_kv", 1)
        b.u32("llama.context_length", 64); b.u32("llama.vocab_size", 12)
        b.f32("llama.rope.freq_base", 10000); b.f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
        var rng = SeededRNG(seed: seed)
        func rnd(_ n: Int) -> [Float] { (0..<n).map { _ in Float(Double(rng.next() % 2000) / 1000 - 1) } }
        b.f32Tensor("token_embd.weight", [12, 8], rnd(96))
        b.f32Tensor("blk.0.attn_norm.weight", [8], rnd(8))
        b.f32Tensor("blk.0.attn_q.weight", [8, 8], rnd(64))
        b.f32Tensor("blk.0.attn_k.weight", [4, 8], rnd(32))
        b.f32Tensor("blk.0.attn_v.weight", [4, 8], rnd(32))
        b.f32Tensor("blk.0.attn_output.weight", [8, 8], rnd(64))
        b.f32Tensor("blk.0.ffn_norm.weight", [8], rnd(8))
        b.f32Tensor("blk.0.ffn_gate.weight", [16, 8], rnd(128))
        b.f32Tensor("blk.0.ffn_up.weight", [16, 8], rnd(128))
        b.f32Tensor("blk.0.ffn_down.weight", [8, 16], rnd(128))
        b.f32Tensor("output_norm.weight", [8], rnd(8))
        if !tied { b.f32Tensor("output.weight", [12, 8], rnd(96)) }
        return b
    }
}

func writeTemp(_ d: Data, _ name: String = "m.gguf") -> String {
    let p = TestPaths.tempDir("gguf") + "/" + name
    FileManager.default.createFile(atPath: p, contents: d)
    return p
}

/// Opens and binds weights; returns the error (if any) as text.
func loadError(_ path: String) -> String? {
    do {
        let c = try openCheckpoint(path)
        _ = try c.loadWeights()
        return nil
    } catch let e as QLMError {
        return e.description
    } catch {
        return "non-QLMError: \(error)"
    }
}

@Suite("GGUF reader")
struct GGUFTests {
    @Test("The real SmolLM2 GGUF parses: metadata, tensor types, tokenizer keys")
    func realFile() throws {
        let g = try GGUFFile(path: TestPaths.smolGGUF)
        #expect(g.version == 3)
        #expect(g.metadata["general.architecture"]?.string == "llama")
        #expect(g.metadata["tokenizer.ggml.tokens"]?.stringArray?.count == 49152)
        #expect(g.metadata["tokenizer.ggml.pre"]?.string == "smollm")
        #expect(g.info("blk.0.attn_q.weight") == TensorInfo(name: "blk.0.attn_q.weight", shape: [576, 576], dtype: .q4_1))
        #expect(g.info("token_embd.weight")?.dtype == .q8_0)
        #expect(g.info("output.weight") == nil)
        #expect(g.tensorNames.count == 272)
    }

    @Test("A tiny synthetic Llama loads and runs")
    func tinyLoads() throws {
        let p = writeTemp(GGUFBuilder.tinyLlama().build())
        let c = try openCheckpoint(p)
        #expect(c.config.numLayers == 1 && c.config.headDim == 4 && c.config.tieWordEmbeddings)
        let m = LlamaModel(weights: try c.loadWeights())
        let s = m.makeSession(maxContext: 8)
        try s.forward([1, 2, 3])
        #expect((0..<12).allSatisfy { s.logits[$0].isFinite })
    }

    @Test("Corrupt and lying files give clear errors, never a crash")
    func corrupt() throws {
        let good = GGUFBuilder.tinyLlama().build()
        // Every truncation point: header, metadata, tensor table and data.
        for cut in stride(from: 0, to: good.count, by: 7) {
            let e = loadError(writeTemp(good.prefix(cut)))
            #expect(e != nil && !(e!.hasPrefix("non-QLMError")), "cut at \(cut): \(e ?? "loaded")")
        }
        var bad = good; bad[0] = UInt8(ascii: "X")
        #expect(loadError(writeTemp(bad))?.contains("not a GGUF file") == true)
        var v1 = GGUFBuilder.tinyLlama(); v1.version = 1
        #expect(loadError(writeTemp(v1.build()))?.contains("version 1") == true)
        let lying = GGUFBuilder.tinyLlama().build(offsetFix: ["blk.0.ffn_up.weight": 1 << 40])
        #expect(loadError(writeTemp(lying))?.contains("blk.0.ffn_up.weight") == true)
        // A string length that claims more bytes than the file has.
        var hugeStr = good
        hugeStr.replaceSubrange(24..<32, with: GGUFBuilder.le(UInt64(1) << 50))
        #expect(loadError(writeTemp(hugeStr))?.contains("past the end") == true)
    }

    @Test("Model-level validation names the tensor or field")
    func binding() throws {
        var arch = GGUFBuilder.tinyLlama()
        arch.kv[0] = ("general.architecture", 8, GGUFBuilder.str("gpt2"))
        #expect(loadError(writeTemp(arch.build()))?.contains("architecture 'gpt2'") == true)

        var missing = GGUFBuilder.tinyLlama()
        missing.tensors.removeAll { $0.name == "blk.0.ffn_down.weight" }
        let m = loadError(writeTemp(missing.build()))
        #expect(m?.contains("blk.0.ffn_down.weight") == true && m?.contains("missing") == true)

        var extra = GGUFBuilder.tinyLlama()
        extra.f32Tensor("blk.0.mystery.weight", [8], [Float](repeating: 0, count: 8))
        #expect(loadError(writeTemp(extra.build()))?.contains("unexpected tensor") == true)

        var shape = GGUFBuilder.tinyLlama()
        let i = shape.tensors.firstIndex { $0.name == "blk.0.attn_k.weight" }!
        shape.tensors[i].dims = [4, 8]   // [8, 4] after reversal: transposed
        #expect(loadError(writeTemp(shape.build()))?.contains("shape") == true)

        var qtype = GGUFBuilder.tinyLlama()
        qtype.tensors[1].type = 12  // Q4_K
        #expect(loadError(writeTemp(qtype.build()))?.contains("Q4_K") == true)

        var nan = GGUFBuilder.tinyLlama()
        nan.tensors[2].data.replaceSubrange(0..<4, with: GGUFBuilder.le(Float.nan.bitPattern))
        #expect(loadError(writeTemp(nan.build()))?.contains("non-finite") == true)

        #expect(loadError("/nonexistent/model.gguf")?.contains("no such file") == true)
        #expect(loadError(TestPaths.shared)?.contains("not a model folder") == true)
    }

    @Test("GGUF Q/K un-permutation inverts llama.cpp's converter permutation")
    func ropePermutation() {
        let heads = 3, hd = 8, cols = 2
        let hf = (0..<(heads * hd * cols)).map(Float.init)
        // llama.cpp convert: reshape(heads, 2, hd/2, cols).swapaxes(1, 2)
        var gguf = [Float](repeating: 0, count: hf.count)
        for h in 0..<heads { for s in 0..<2 { for j in 0..<(hd / 2) { for c in 0..<cols {
            gguf[((h * hd) + 2 * j + s) * cols + c] = hf[((h * hd) + s * hd / 2 + j) * cols + c]
        } } } }
        #expect(unpermuteGGUFRope(gguf, heads: heads, headDim: hd, cols: cols) == hf)
    }
}
