import Foundation
import Testing
import QLMKernels
@testable import QLM

@Suite("Quantization: grids, k-means, RTN, packed matrices")
struct QuantizationTests {
    func randomMatrix(_ rows: Int, _ cols: Int, seed: UInt64) -> [Float] {
        var rng = SeededRNG(seed: seed)
        // Roughly Gaussian (sum of uniforms) with a few large entries, like real weights.
        return (0..<(rows * cols)).map { i in
            var s: Float = 0
            for _ in 0..<4 { s += Float(rng.next() % 10_000) / 10_000 - 0.5 }
            return i % 97 == 0 ? s * 8 : s * 0.1
        }
    }

    @Test("Affine min-max grid: values on the grid are reproduced, error ≤ half a step")
    func affineGrid() {
        for bits in [2, 3, 4, 8] {
            for sym in [false, true] {
                let vals: [Float] = (0..<50).map { Float($0) * 0.013 - 0.2 }
                let g = AffineGrid(minMax: vals, bits: bits, sym: sym)
                #expect(f16Round(g.scale) == g.scale && f16Round(g.zero) == g.zero)
                // Half a step, plus what rounding the scale to f16 (2^-11 relative) moves the top of the grid.
                for v in vals { #expect(abs(g.quantize(v) - v) <= g.scale * (0.5 + Float(g.maxq) * 0.0005) + 1e-6, "bits \(bits) sym \(sym) v \(v)") }
                for q in 0...g.maxq { #expect(g.code(g.value(UInt8(q))) == UInt8(q)) }
            }
        }
    }

    /// Plain (unweighted) Lloyd iterations with the same init, for comparison.
    func plainKMeans(_ x: [Float], k: Int, iters: Int) -> [Float] {
        let lo = Double(x.min()!), hi = Double(x.max()!)
        var c = (0..<k).map { lo + (hi - lo) * Double($0) / Double(k - 1) }
        for _ in 0..<iters {
            var sum = [Double](repeating: 0, count: k), cnt = sum
            for v in x {
                var best = 0
                for j in 1..<k where abs(Double(v) - c[j]) < abs(Double(v) - c[best]) { best = j }
                sum[best] += Double(v); cnt[best] += 1
            }
            for j in 0..<k where cnt[j] > 0 { c[j] = sum[j] / cnt[j] }
        }
        return c.map(Float.init).sorted()
    }

    @Test("Weighted k-means: loss never increases; equal weights match plain 1-D k-means")
    func kmeans() {
        var rng = SeededRNG(seed: 9)
        for k in [4, 8, 16] {
            let x = (0..<500).map { _ in Float(rng.next() % 100_000) / 50_000 - 1 }.map { $0 * $0 * $0 }
            let w = (0..<500).map { _ in Float(rng.next() % 1000 + 1) / 100 }
            let (_, losses) = weightedKMeans1D(x, weights: w, k: k)
            for (a, b) in zip(losses, losses.dropFirst()) { #expect(b <= a * (1 + 1e-12) + 1e-12, "k \(k): \(losses)") }
            let (c1, l1) = weightedKMeans1D(x, k: k, maxIter: 20, tol: 0)
            let (c2, _) = weightedKMeans1D(x, weights: [Float](repeating: 3, count: 500), k: k, maxIter: 20, tol: 0)
            let ref = plainKMeans(x, k: k, iters: 20)
            for (a, b) in zip(c1, ref) { #expect(abs(a - b) < 1e-5, "k \(k)") }
            for (a, b) in zip(c1, c2) { #expect(abs(a - b) < 1e-6) }
            #expect(l1.count <= 20 && !l1.isEmpty)
        }
    }

    @Test("LUT codebooks snap to each row's 8-bit grid: sorted, within range/510, exactly the stored bytes")
    func lutGridSnapping() {
        var rng = SeededRNG(seed: 12)
        for k in [4, 8, 16] {
            for trial in 0..<50 {
                // Centroids with a wide spread, a one-sided range, and (trial 0) a constant codebook.
                let shift: Float = trial % 3 == 1 ? 0.7 : 0
                let c = (0..<k).map { _ in trial == 0 ? Float(0.25) : (Float(rng.next() % 100_000) / 50_000 - 1) * 0.1 + shift }
                let g = LUTGrid(values: c)
                let sorted = c.sorted()
                let range = sorted.last! - sorted.first!
                #expect(g.values == g.values.sorted() && g.levels == g.levels.sorted(), "k \(k)")
                for (a, b) in zip(sorted, g.values) {
                    // half a level (range/510) plus the f16 rounding of zero and scale (2^-11 relative each)
                    let f16Slack = (abs(g.zero) + 255) * g.scale / 2048
                    #expect(abs(a - b) <= range / 510 * 1.01 + f16Slack + 1e-7, "k \(k) trial \(trial): \(a) → \(b)")
                }
                #expect(g.scale == f16Round(g.scale) && g.zero == f16Round(g.zero))
                #expect(zip(g.levels, g.values).allSatisfy { g.scale * (Float($0) - g.zero) == $1 })
                #expect(LUTGrid(levels: g.levels, scale: g.scale, zero: g.zero) == g)
            }
        }
    }

    @Test("A LUT matrix round-trips through model.qlmw; the older f16-codebook layout is refused with a clear error")
    func lutFileLayout() throws {
        var rng = SeededRNG(seed: 13)
        let rows = 6, cols = 100
        let W = (0..<(rows * cols)).map { _ in Float(rng.next() % 100_000) / 50_000 - 1 }
        let q = try quantizeRTN(W, rows: rows, cols: cols, spec: QuantSpec(format: .lut, bits: 3, groupSize: nil))
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("qlm-lut-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let w = QLMWeightsWriter()
        w.addMatrix("m", q)
        try w.write(to: dir.appendingPathComponent("new.qlmw").path)
        let back = QuantizedMatrix(unpacking: try QLMWeightsFile(path: dir.appendingPathComponent("new.qlmw").path).matrix("m"))
        #expect(back.lut == q.lut && back.scales == q.scales && back.zeros == q.zeros && back.codes == q.codes)
        #expect(back.dequantize() == q.dequantize())
        // The layout before byte codebooks: NAME.lut as f16 values, no per-row scale/zero.
        let old = QLMWeightsWriter()
        old.matrices["m"] = q.meta
        for (suffix, dtype, shape, data) in q.blobs() where suffix == ".codes" { old.add("m" + suffix, dtype: dtype, shape: shape, data: data) }
        let halves = (0..<(rows << 3)).map { _ in qlm_f32_to_f16(0.5) }
        old.add("m.lut", dtype: "f16", shape: [rows, 8], data: halves.withUnsafeBytes { Data($0) })
        try old.write(to: dir.appendingPathComponent("old.qlmw").path)
        do {
            _ = try QLMWeightsFile(path: dir.appendingPathComponent("old.qlmw").path).matrix("m")
            Issue.record("old LUT layout loaded")
        } catch {
            #expect("\(error)".contains("re-quantize"), "\(error)")
        }
    }

    @Test("3-bit matrices written with an older code layout load as the same matrix; a newer layout is refused")
    func olderCodeLayoutsLoad() throws {
        var rng = SeededRNG(seed: 17)
        let rows = 5, cols = 1100  // 18 superblocks: two octets and two single superblocks per row
        let W = (0..<(rows * cols)).map { _ in Float(rng.next() % 100_000) / 50_000 - 1 }
        let q = try quantizeRTN(W, rows: rows, cols: cols, spec: QuantSpec(format: .affine, bits: 3, groupSize: 128))
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("qlm-layout-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let layout2 = QuantKernelTests.packSingleSuperblocks3(q.codes, rows: rows, cols: cols)
        for layout in [2, Int(QLM_CODE_LAYOUT) + 1] {
            let w = QLMWeightsWriter()
            var meta = q.meta
            meta.codeLayout = layout
            w.matrices["m"] = meta
            for (suffix, dtype, shape, data) in q.blobs() {
                w.add("m" + suffix, dtype: dtype, shape: shape, data: suffix == ".codes" ? Data(layout2) : data)
            }
            let path = dir.appendingPathComponent("l\(layout).qlmw").path
            try w.write(to: path)
            if layout == 2 {
                let back = QuantizedMatrix(unpacking: try QLMWeightsFile(path: path).matrix("m"))
                #expect(back.codes == q.codes && back.scales == q.scales)
                #expect(back.dequantize() == q.dequantize())
            } else {
                #expect(throws: (any Error).self) { _ = try QLMWeightsFile(path: path).matrix("m") }
            }
        }
    }

    @Test("RTN: packed dequantization equals an independent Swift dequantization",
          arguments: [(WeightFormat.affine, 4, 128), (.affine, 3, 32), (.affine, 2, 64), (.affine, 8, 0), (.lut, 4, 0), (.lut, 3, 0), (.lut, 2, 0)])
    func rtnMatchesReference(format: WeightFormat, bits: Int, group: Int) throws {
        let rows = 7, cols = 200
        let W = randomMatrix(rows, cols, seed: UInt64(bits * 10 + group))
        let spec = QuantSpec(format: format, bits: bits, groupSize: group == 0 ? nil : group)
        let q = try quantizeRTN(W, rows: rows, cols: cols, spec: spec)
        let deq = q.dequantize()
        for r in 0..<rows {
            for j in 0..<cols {
                let code = Int(q.codes[r * cols + j])
                let ref: Float
                if format == .affine {
                    let gi = r * q.nGroups + j / q.groupSize
                    ref = qlm_f16_to_f32(q.scales[gi]) * (Float(code) - qlm_f16_to_f32(q.zeros[gi]))
                } else {
                    let s = qlm_f16_to_f32(q.scales[r]), z = qlm_f16_to_f32(q.zeros[r])
                    ref = s * (Float(q.lut[r * (1 << bits) + code]) - z)
                }
                #expect(deq[r * cols + j] == ref)
            }
        }
        // More bits, less error.
        let err = zip(W, deq).reduce(0.0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) }
        #expect(err.isFinite && err < Double(W.reduce(0) { $0 + $1 * $1 }))
    }

    @Test("Outliers: F = 0 is plain RTN; F > 0 keeps the largest weights exactly and lowers the error")
    func outliers() throws {
        let rows = 16, cols = 96
        let W = randomMatrix(rows, cols, seed: 3)
        let plain = try quantizeRTN(W, rows: rows, cols: cols, spec: QuantSpec(bits: 3, groupSize: 32))
        let zero = try quantizeRTN(W, rows: rows, cols: cols, spec: QuantSpec(bits: 3, groupSize: 32, outlierFraction: 0))
        #expect(plain.codes == zero.codes && plain.scales == zero.scales && zero.outVal.isEmpty)
        let out = try quantizeRTN(W, rows: rows, cols: cols, spec: QuantSpec(bits: 3, groupSize: 32, outlierFraction: 0.02))
        #expect(out.outVal.count == Int((Double(rows * cols) * 0.02).rounded()))
        let d0 = plain.dequantize(), d1 = out.dequantize()
        let top = (0..<W.count).sorted { abs(W[$0]) > abs(W[$1]) }.prefix(out.outVal.count)
        for i in top { #expect(abs(d1[i] - W[i]) <= 1e-6 * abs(W[i]), "outlier \(i)") }
        func err(_ d: [Float]) -> Double { zip(W, d).reduce(0.0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) } }
        #expect(err(d1) < err(d0))
    }

    @Test("Bad specs are rejected up front")
    func badSpecs() {
        #expect(throws: QLMError.self) { try QuantSpec(format: .lut, bits: 8, groupSize: nil).validate() }
        #expect(throws: QLMError.self) { try QuantSpec(format: .affine, bits: 5).validate() }
        #expect(throws: QLMError.self) { try QuantSpec(format: .affine, bits: 4, groupSize: 100).validate() }
        #expect(throws: QLMError.self) { try QuantSpec(format: .lut, bits: 4, groupSize: 128).validate() }
        #expect(throws: QLMError.self) { try headSpec("7", layer: QuantSpec()) }
    }

    @Test("SHA-256 matches known vectors")
    func sha() {
        #expect(SHA256Digest.hash(Data()) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256Digest.hash(Data("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let long = Data(String(repeating: "a", count: 1000).utf8)
        #expect(SHA256Digest.hash(long) == "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3")
    }
}

/// The real model quantized end to end, through the folder format and the kernels.
@Suite("Quantized SmolLM2 folders", .serialized)
final class QuantizedModelTests: HoldsKernelState {
    static let dir = TestPaths.tempDir("qmodel")

    static func quantized(_ label: String, _ spec: QuantSpec, head: String = "8") throws -> String {
        let out = dir + "/" + label
        if !FileManager.default.fileExists(atPath: out) {
            _ = try quantizeModelRTN(modelPath: TestPaths.smolGGUF, outDir: out, spec: spec, head: try headSpec(head, layer: spec))
        }
        return out
    }

    @Test("4-bit g32 RTN of the Q4_1 source is near-lossless; folder reloads and is self-describing")
    func g32() throws {
        let out = try Self.quantized("w4g32", QuantSpec(bits: 4, groupSize: 32), head: "8")
        let m = try JSONDecoder().decode(QuantizedManifest.self, from: Data(contentsOf: URL(fileURLWithPath: out + "/manifest.json")))
        #expect(m.method == "rtn" && m.spec.bits == 4 && m.sourceSHA256 == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")
        #expect(abs(m.layerBitsPerWeight - 5.0) < 0.01)   // 4 + 2·16/32
        let loaded = try LoadedModel.load(out)
        #expect(loaded.checkpoint.format == .qlm && loaded.chatTemplate == .chatml)
        let r = try evaluatePerplexity(model: loaded.model, tokens: ModelTests.wikiTokens, seqlen: 512, maxWindows: 2, protocol: .gptq, dataset: "wikitext2")
        // Reference f32 NLLs 3.090241, 3.590728: Q4_1 blocks are 4-bit g32 affine grids already.
        #expect(abs(r.nll[0] - 3.090241) < 0.01 && abs(r.nll[1] - 3.590728) < 0.01, "\(r.nll)")
        // Bit-identical reload: the same command writes the same bytes.
        let again = TestPaths.tempDir("qmodel2") + "/w4g32"
        _ = try quantizeModelRTN(modelPath: TestPaths.smolGGUF, outDir: again, spec: QuantSpec(bits: 4, groupSize: 32), head: try headSpec("8", layer: QuantSpec()))
        #expect(FileManager.default.contents(atPath: out + "/model.qlmw") == FileManager.default.contents(atPath: again + "/model.qlmw"))
    }

    @Test("A truncated or corrupted model.qlmw is rejected with a clear error")
    func corrupt() throws {
        let out = try Self.quantized("w4g32", QuantSpec(bits: 4, groupSize: 32), head: "8")
        let bad = TestPaths.tempDir("qbad") + "/m"
        try FileManager.default.copyItem(atPath: out, toPath: bad)
        let data = try Data(contentsOf: URL(fileURLWithPath: out + "/model.qlmw"))
        for cut in [10, 100, data.count / 2, data.count - 10] {
            try data.prefix(cut).write(to: URL(fileURLWithPath: bad + "/model.qlmw"))
            #expect(loadError(bad) != nil && loadError(bad)?.hasPrefix("non-QLMError") == false, "cut \(cut)")
        }
        try FileManager.default.removeItem(atPath: bad + "/manifest.json")
        #expect(loadError(bad) != nil)   // not a quantized folder, and no safetensors either
    }

    @Test("8-bit RTN changes perplexity by < 0.5%; 3-bit hurts more than 4-bit")
    func bitsOrdering() throws {
        let base = try evaluatePerplexity(model: SmolModel.model, tokens: ModelTests.wikiTokens, seqlen: 512, maxWindows: 2, protocol: .gptq, dataset: "w")
        var ppl: [Int: Double] = [:]
        for bits in [8, 4, 3] {
            let out = try Self.quantized("w\(bits)g128", QuantSpec(bits: bits, groupSize: 128), head: "8")
            let m = try LoadedModel.load(out)
            ppl[bits] = try evaluatePerplexity(model: m.model, tokens: ModelTests.wikiTokens, seqlen: 512, maxWindows: 2, protocol: .gptq, dataset: "w").ppl
        }
        #expect(abs(ppl[8]! / base.ppl - 1) < 0.005, "8-bit \(ppl[8]!) vs \(base.ppl)")
        #expect(ppl[3]! > ppl[4]! && ppl[4]! > ppl[8]! * 0.999)
    }
}
