import Foundation
import Testing
@testable import QLM

@Suite("Sampling")
struct SamplerTests {
    func draw(_ o: SamplingOptions, _ logits: [Float], n: Int) -> [Int32] {
        var s = Sampler(options: o, vocabSize: logits.count)
        return (0..<n).map { _ in logits.withUnsafeBufferPointer { s.sample(logits: $0.baseAddress!, vocabSize: logits.count, history: []) } }
    }

    let logits: [Float] = [1.0, 3.0, 2.5, -1.0, 0.5, 2.9]

    @Test func greedyPicksArgmax() {
        var o = SamplingOptions(); o.temperature = 0
        #expect(draw(o, logits, n: 3) == [1, 1, 1])
    }

    @Test func seedReproducesAndTopKOneIsGreedy() {
        var o = SamplingOptions(); o.temperature = 1; o.topK = 0; o.topP = 1; o.minP = 0; o.seed = 7
        #expect(draw(o, logits, n: 50) == draw(o, logits, n: 50))
        o.seed = 8
        let other = draw(o, logits, n: 50)
        #expect(Set(other).count > 2)   // genuinely samples
        o.topK = 1
        #expect(draw(o, logits, n: 20).allSatisfy { $0 == 1 })
    }

    @Test func topPAndMinPRestrictTheSupport() {
        var o = SamplingOptions(); o.temperature = 1; o.topK = 0; o.minP = 0; o.topP = 0.5; o.seed = 3
        // p(1) ≈ 0.39, p(5) ≈ 0.35: the 0.5 nucleus is {1, 5}.
        #expect(Set(draw(o, logits, n: 200)) == [1, 5])
        o.topP = 1; o.minP = 0.6   // keep tokens with p >= 0.6·p(1): {1, 5, 2}
        #expect(Set(draw(o, logits, n: 300)).isSubset(of: [1, 5, 2]))
    }

    @Test func repeatPenaltyDemotesSeenTokens() {
        var o = SamplingOptions(); o.temperature = 0; o.repeatPenalty = 2
        var s = Sampler(options: o, vocabSize: logits.count)
        let h: [Int32] = [1]
        let id = logits.withUnsafeBufferPointer { s.sample(logits: $0.baseAddress!, vocabSize: logits.count, history: h[...]) }
        #expect(id == 5)
    }
}
