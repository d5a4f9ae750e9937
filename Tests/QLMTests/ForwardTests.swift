import Foundation
import Testing
@testable import QLM
import QLMKernels

/// Shared, loaded once: the real SmolLM2 weights from the GGUF (f32 after dequantization).
enum SmolModel {
    static let checkpoint: ModelCheckpoint = try! openCheckpoint(TestPaths.smolGGUF)
    static let model: LlamaModel = LlamaModel(weights: try! checkpoint.loadWeights())
}

@Suite("Forward pass on SmolLM2-135M", .serialized)
final class ForwardTests: HoldsKernelState {
    @Test("GGUF config matches the model card")
    func config() throws {
        let c = SmolModel.checkpoint.config
        #expect(c.hiddenSize == 576 && c.numLayers == 30 && c.numHeads == 9 && c.numKVHeads == 3)
        #expect(c.intermediateSize == 1536 && c.vocabSize == 49152 && c.headDim == 64)
        #expect(c.ropeTheta == 100000 && c.rmsNormEps == 1e-5 && c.tieWordEmbeddings)
    }

    @Test("Greedy decoding reproduces the reference continuation token for token")
    func greedyGolden() throws {
        let prompt: [Int32] = [504, 3575, 282, 4649, 314]  // "The capital of France is"
        let expected: [Int32] = [7042, 30, 198, 198, 504, 2988, 314, 42, 216, 34, 32, 33, 40, 29, 32, 33, 29, 34, 34, 216,
                                 33, 34, 42, 33, 34, 42, 37, 35, 30, 2]
        let m = SmolModel.model
        let s = m.makeSession(maxContext: 64)
        try s.forward(prompt)
        var got: [Int32] = []
        for _ in 0..<expected.count {
            var best = 0
            for i in 0..<m.config.vocabSize where s.logits[i] > s.logits[best] { best = i }
            got.append(Int32(best))
            try s.forward([Int32(best)])
        }
        #expect(got == expected)
    }

    @Test("Prefill in one batch equals token-by-token decode")
    func batchEqualsIncremental() throws {
        let m = SmolModel.model
        let ids: [Int32] = (0..<40).map { Int32(($0 * 7919 + 13) % 49152) }
        let a = m.makeSession(maxContext: 64, maxBatch: 64)
        try a.forward(ids)
        let b = m.makeSession(maxContext: 64, maxBatch: 1)
        for t in ids { try b.forward([t]) }
        var maxDiff: Float = 0
        for i in 0..<m.config.vocabSize { maxDiff = max(maxDiff, abs(a.logits[i] - b.logits[i])) }
        #expect(maxDiff < 1e-3)
    }
}

@Suite("RoPE frequencies")
struct RopeFrequencyTests {
    @Test("Llama-3 scaling keeps high frequencies, divides low ones by the factor, blends in between")
    func llama3Scaling() {
        var c = LlamaConfig(vocabSize: 10, hiddenSize: 4096, intermediateSize: 14336, numLayers: 1, numHeads: 32, numKVHeads: 8,
                            ropeTheta: 500_000)
        let plain = c.ropeInverseFrequencies()
        c.ropeScaling = RopeScaling(factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192)
        let scaled = c.ropeInverseFrequencies()
        #expect(plain.count == 64 && plain[0] == 1)
        for i in 0..<64 {
            let wavelen = 2 * Double.pi / Double(plain[i])
            if wavelen < 8192.0 / 4 { #expect(scaled[i] == plain[i]) }
            else if wavelen > 8192 { #expect(abs(scaled[i] - plain[i] / 8) <= 1e-6 * plain[i]) }
            else { #expect(scaled[i] < plain[i] && scaled[i] > plain[i] / 8) }
        }
    }
}
