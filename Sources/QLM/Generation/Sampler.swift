import Foundation

/// A deterministic PRNG (xoshiro256**), seeded, so `--seed` reproduces a sample exactly.
public struct SeededRNG: RandomNumberGenerator, Sendable {
    var s: (UInt64, UInt64, UInt64, UInt64)
    public init(seed: UInt64) {
        var z = seed &+ 0x9E37_79B9_7F4A_7C15
        func next() -> UInt64 {
            z = z &+ 0x9E37_79B9_7F4A_7C15
            var x = z
            x = (x ^ (x >> 30)) &* 0xBF58_476D_1CE4_E5B9
            x = (x ^ (x >> 27)) &* 0x94D0_49BB_1331_11EB
            return x ^ (x >> 31)
        }
        s = (next(), next(), next(), next())
    }
    public mutating func next() -> UInt64 {
        let r = ((s.1 &* 5) << 7 | (s.1 &* 5) >> 57) &* 9
        let t = s.1 << 17
        s.2 ^= s.0; s.3 ^= s.1; s.1 ^= s.2; s.0 ^= s.3; s.2 ^= t
        s.3 = (s.3 << 45) | (s.3 >> 19)
        return r
    }
}

/// One step of a sampling chain: narrows or reshapes the candidate set.
public protocol LogitTransform: Sendable {
    func apply(_ c: inout Candidates, history: ArraySlice<Int32>)
}

/// Candidate tokens with their logits (or probabilities after `softmax()`), preallocated once.
public struct Candidates: Sendable {
    public var ids: [Int32]
    public var values: [Float]
    public var count: Int
    public var sorted = false
    public var isProbability = false

    public init(capacity: Int) {
        ids = [Int32](repeating: 0, count: capacity); values = [Float](repeating: 0, count: capacity); count = 0
    }

    mutating func load(_ logits: UnsafePointer<Float>, n: Int) {
        for i in 0..<n { ids[i] = Int32(i); values[i] = logits[i] }
        count = n; sorted = false; isProbability = false
    }

    /// Sorts the live candidates by value, descending (partial: only the top `k` are placed).
    mutating func sortDescending(top k: Int? = nil) {
        if sorted { return }
        var idx = Array(0..<count)
        let v = values
        if let k, k < count {
            idx = Array(idx.lazy.sorted { v[$0] > v[$1] }.prefix(k))
        } else {
            idx.sort { v[$0] > v[$1] }
        }
        let newIds = idx.map { ids[$0] }, newVals = idx.map { values[$0] }
        for (j, _) in idx.enumerated() { ids[j] = newIds[j]; values[j] = newVals[j] }
        count = idx.count
        sorted = true
    }

    mutating func softmax() {
        if isProbability { return }
        var mx = -Float.infinity
        for i in 0..<count { mx = max(mx, values[i]) }
        var s: Float = 0
        for i in 0..<count { values[i] = expf(values[i] - mx); s += values[i] }
        for i in 0..<count { values[i] /= s }
        isProbability = true
    }
}

/// Penalises tokens seen in the last `window` tokens (llama.cpp / CTRL style: divide positive
/// logits, multiply negative ones).
public struct RepeatPenalty: LogitTransform {
    public var penalty: Float
    public var window: Int
    public func apply(_ c: inout Candidates, history: ArraySlice<Int32>) {
        guard penalty != 1 else { return }
        let seen = Set(history.suffix(window))
        for i in 0..<c.count where seen.contains(c.ids[i]) {
            c.values[i] = c.values[i] > 0 ? c.values[i] / penalty : c.values[i] * penalty
        }
    }
}

public struct Temperature: LogitTransform {
    public var t: Float
    public func apply(_ c: inout Candidates, history: ArraySlice<Int32>) {
        for i in 0..<c.count { c.values[i] /= t }
    }
}

public struct TopK: LogitTransform {
    public var k: Int
    public func apply(_ c: inout Candidates, history: ArraySlice<Int32>) {
        guard k > 0, k < c.count else { return }
        c.sortDescending(top: k)
    }
}

public struct TopP: LogitTransform {
    public var p: Float
    public func apply(_ c: inout Candidates, history: ArraySlice<Int32>) {
        guard p < 1 else { return }
        c.sortDescending(); c.softmax()
        var cum: Float = 0
        for i in 0..<c.count {
            cum += c.values[i]
            if cum >= p { c.count = i + 1; break }
        }
        c.isProbability = false
        for i in 0..<c.count { c.values[i] = logf(max(c.values[i], 1e-30)) }
    }
}

public struct MinP: LogitTransform {
    public var p: Float
    public func apply(_ c: inout Candidates, history: ArraySlice<Int32>) {
        guard p > 0 else { return }
        c.sortDescending(); c.softmax()
        let cut = c.values[0] * p
        var n = 1
        while n < c.count && c.values[n] >= cut { n += 1 }
        c.count = n
        c.isProbability = false
        for i in 0..<c.count { c.values[i] = logf(max(c.values[i], 1e-30)) }
    }
}

public struct SamplingOptions: Sendable, Codable {
    public var temperature: Float = 0.8
    public var topK: Int = 40
    public var topP: Float = 0.95
    public var minP: Float = 0.05
    public var repeatPenalty: Float = 1.0
    public var repeatWindow: Int = 64
    public var seed: UInt64 = 0
    public init() {}
}

/// Greedy when temperature is 0; otherwise penalty → top-k → top-p → min-p → temperature → draw.
public struct Sampler: Sendable {
    public let options: SamplingOptions
    var chain: [any LogitTransform]
    var rng: SeededRNG
    var cand: Candidates

    public init(options: SamplingOptions, vocabSize: Int) {
        self.options = options
        var chain: [any LogitTransform] = [RepeatPenalty(penalty: options.repeatPenalty, window: options.repeatWindow)]
        if options.temperature > 0 {
            chain += [TopK(k: options.topK), TopP(p: options.topP), MinP(p: options.minP), Temperature(t: options.temperature)] as [any LogitTransform]
        }
        self.chain = chain
        rng = SeededRNG(seed: options.seed)
        cand = Candidates(capacity: vocabSize)
    }

    public mutating func sample(logits: UnsafePointer<Float>, vocabSize: Int, history: ArraySlice<Int32>) -> Int32 {
        if options.temperature <= 0 && options.repeatPenalty == 1 {
            var best = 0
            for i in 1..<vocabSize where logits[i] > logits[best] { best = i }
            return Int32(best)
        }
        cand.load(logits, n: vocabSize)
        for t in chain { t.apply(&cand, history: history) }
        if options.temperature <= 0 {
            var best = 0
            for i in 1..<cand.count where cand.values[i] > cand.values[best] { best = i }
            return cand.ids[best]
        }
        cand.softmax()
        let u = Float(Double(rng.next() >> 11) / Double(1 << 53))
        var cum: Float = 0
        for i in 0..<cand.count {
            cum += cand.values[i]
            if u < cum { return cand.ids[i] }
        }
        return cand.ids[cand.count - 1]
    }
}
