import Foundation

/// Llama-3 style RoPE frequency scaling ("rope_type": "llama3" in HF configs).
public struct RopeScaling: Codable, Equatable, Sendable {
    public var ropeType: String
    public var factor: Double
    public var lowFreqFactor: Double
    public var highFreqFactor: Double
    public var originalMaxPositionEmbeddings: Int

    public init(ropeType: String = "llama3", factor: Double, lowFreqFactor: Double = 1, highFreqFactor: Double = 4,
                originalMaxPositionEmbeddings: Int = 8192) {
        self.ropeType = ropeType; self.factor = factor; self.lowFreqFactor = lowFreqFactor
        self.highFreqFactor = highFreqFactor; self.originalMaxPositionEmbeddings = originalMaxPositionEmbeddings
    }
}

/// Hyper-parameters of a Llama-family decoder. Built from a GGUF's metadata or an HF config.json;
/// `validate()` rejects inconsistent values with a message naming the field.
public struct LlamaConfig: Codable, Equatable, Sendable {
    public var vocabSize: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numLayers: Int
    public var numHeads: Int
    public var numKVHeads: Int
    public var headDim: Int
    public var ropeTheta: Double
    public var rmsNormEps: Double
    public var maxPositionEmbeddings: Int
    public var tieWordEmbeddings: Bool
    public var ropeScaling: RopeScaling?
    public var bosTokenId: Int?
    public var eosTokenIds: [Int]

    public init(vocabSize: Int, hiddenSize: Int, intermediateSize: Int, numLayers: Int, numHeads: Int,
                numKVHeads: Int, headDim: Int? = nil, ropeTheta: Double = 10000, rmsNormEps: Double = 1e-5,
                maxPositionEmbeddings: Int = 2048, tieWordEmbeddings: Bool = false, ropeScaling: RopeScaling? = nil,
                bosTokenId: Int? = nil, eosTokenIds: [Int] = []) {
        self.vocabSize = vocabSize; self.hiddenSize = hiddenSize; self.intermediateSize = intermediateSize
        self.numLayers = numLayers; self.numHeads = numHeads; self.numKVHeads = numKVHeads
        self.headDim = headDim ?? (numHeads > 0 ? hiddenSize / numHeads : 0)
        self.ropeTheta = ropeTheta; self.rmsNormEps = rmsNormEps; self.maxPositionEmbeddings = maxPositionEmbeddings
        self.tieWordEmbeddings = tieWordEmbeddings; self.ropeScaling = ropeScaling
        self.bosTokenId = bosTokenId; self.eosTokenIds = eosTokenIds
    }

    public var qDim: Int { numHeads * headDim }
    public var kvDim: Int { numKVHeads * headDim }

    public func validate(source: String) throws {
        func bad(_ msg: String) -> QLMError { .corrupt(path: source, detail: "invalid model config: \(msg)") }
        for (name, v) in [("vocab_size", vocabSize), ("hidden_size", hiddenSize), ("intermediate_size", intermediateSize),
                          ("num_hidden_layers", numLayers), ("num_attention_heads", numHeads),
                          ("num_key_value_heads", numKVHeads), ("head_dim", headDim)] where v <= 0 {
            throw bad("\(name) = \(v) must be positive")
        }
        if numHeads % numKVHeads != 0 { throw bad("num_attention_heads \(numHeads) is not a multiple of num_key_value_heads \(numKVHeads)") }
        if headDim % 2 != 0 { throw bad("head_dim \(headDim) must be even for RoPE") }
        if !(ropeTheta > 0) { throw bad("rope_theta \(ropeTheta) must be positive") }
        if !(rmsNormEps > 0 && rmsNormEps < 1) { throw bad("rms_norm_eps \(rmsNormEps) out of range") }
        if let s = ropeScaling {
            if s.ropeType != "llama3" { throw QLMError.unsupported("rope_scaling type '\(s.ropeType)' (only llama3 is implemented)") }
            if !(s.factor >= 1) { throw bad("rope_scaling.factor \(s.factor) must be >= 1") }
        }
    }

    /// RoPE inverse frequencies, with Llama-3 scaling applied when configured.
    public func ropeInverseFrequencies() -> [Float] {
        let half = headDim / 2
        var out = [Float](repeating: 0, count: half)
        for i in 0..<half {
            var f = 1.0 / pow(ropeTheta, Double(2 * i) / Double(headDim))
            if let s = ropeScaling {
                let lowWavelen = Double(s.originalMaxPositionEmbeddings) / s.lowFreqFactor
                let highWavelen = Double(s.originalMaxPositionEmbeddings) / s.highFreqFactor
                let wavelen = 2 * Double.pi / f
                if wavelen > lowWavelen {
                    f = f / s.factor
                } else if wavelen >= highWavelen {
                    let smooth = (Double(s.originalMaxPositionEmbeddings) / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor)
                    f = (1 - smooth) * f / s.factor + smooth * f
                }
            }
            out[i] = Float(f)
        }
        return out
    }
}
