import Foundation

/// How a checkpoint names its tensors. Internally every tensor is known by its HF name and Q/K
/// rows use HF's rotate-half RoPE layout; GGUF's interleaved rows are un-permuted at load.
public enum WeightNaming: Sendable {
    case hf, gguf

    func name(_ hf: String) -> String {
        guard self == .gguf else { return hf }
        switch hf {
        case "model.embed_tokens.weight": return "token_embd.weight"
        case "model.norm.weight": return "output_norm.weight"
        case "lm_head.weight": return "output.weight"
        default: break
        }
        // model.layers.{i}.{part}
        let parts = hf.split(separator: ".")
        guard parts.count >= 4, parts[0] == "model", parts[1] == "layers" else { return hf }
        let i = parts[2]
        let rest = parts[3...].joined(separator: ".")
        let map = ["input_layernorm.weight": "attn_norm.weight", "self_attn.q_proj.weight": "attn_q.weight",
                   "self_attn.k_proj.weight": "attn_k.weight", "self_attn.v_proj.weight": "attn_v.weight",
                   "self_attn.o_proj.weight": "attn_output.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
                   "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
                   "mlp.down_proj.weight": "ffn_down.weight"]
        return "blk.\(i).\(map[rest] ?? rest)"
    }

    /// Tensors a checkpoint may carry that the forward pass derives itself.
    func isIgnorable(_ name: String) -> Bool {
        switch self {
        case .hf: return name.hasSuffix("rotary_emb.inv_freq")
        case .gguf: return false
        }
    }
}

/// All weights of a Llama decoder, dequantized to f32. Binding is strict: every expected tensor
/// must be present with the expected shape, and any tensor the model would not use is an error.
public final class LlamaWeights: @unchecked Sendable {
    public struct Layer: @unchecked Sendable {
        public var attnNorm: FloatBuffer     // [d]
        public var wq: Linear                // [n_heads*hd, d]
        public var wk: Linear                // [n_kv*hd, d]
        public var wv: Linear                // [n_kv*hd, d]
        public var wo: Linear                // [d, n_heads*hd]
        public var ffnNorm: FloatBuffer      // [d]
        public var wGate: Linear             // [ffn, d]
        public var wUp: Linear               // [ffn, d]
        public var wDown: Linear             // [d, ffn]
    }

    public let config: LlamaConfig
    public let embed: Linear                 // [vocab, d]; rows are looked up, and it is the head when tied
    public let layers: [Layer]
    public let norm: FloatBuffer             // [d]
    public let lmHead: Linear                // [vocab, d]; shares `embed` when tied
    /// Llama-3 GGUFs store the RoPE scaling as per-frequency divisors (`rope_freqs.weight`).
    public let ropeFreqFactors: [Float]?

    public init(config: LlamaConfig, embed: Linear, layers: [Layer], norm: FloatBuffer, lmHead: Linear?,
                ropeFreqFactors: [Float]? = nil) {
        self.config = config; self.embed = embed; self.layers = layers; self.norm = norm
        self.lmHead = lmHead ?? embed
        self.ropeFreqFactors = ropeFreqFactors
    }

    public var allLinears: [Linear] {
        var out = [embed] + layers.flatMap { [$0.wq, $0.wk, $0.wv, $0.wo, $0.wGate, $0.wUp, $0.wDown] }
        if lmHead !== embed { out.append(lmHead) }
        return out
    }

    /// Canonical (HF) tensor names with their shapes, in file order.
    public static func expectedTensors(_ c: LlamaConfig) -> [(String, [Int])] {
        var out: [(String, [Int])] = [("model.embed_tokens.weight", [c.vocabSize, c.hiddenSize])]
        for i in 0..<c.numLayers {
            let p = "model.layers.\(i)."
            out += [(p + "input_layernorm.weight", [c.hiddenSize]),
                    (p + "self_attn.q_proj.weight", [c.qDim, c.hiddenSize]),
                    (p + "self_attn.k_proj.weight", [c.kvDim, c.hiddenSize]),
                    (p + "self_attn.v_proj.weight", [c.kvDim, c.hiddenSize]),
                    (p + "self_attn.o_proj.weight", [c.hiddenSize, c.qDim]),
                    (p + "post_attention_layernorm.weight", [c.hiddenSize]),
                    (p + "mlp.gate_proj.weight", [c.intermediateSize, c.hiddenSize]),
                    (p + "mlp.up_proj.weight", [c.intermediateSize, c.hiddenSize]),
                    (p + "mlp.down_proj.weight", [c.hiddenSize, c.intermediateSize])]
        }
        out.append(("model.norm.weight", [c.hiddenSize]))
        if !c.tieWordEmbeddings { out.append(("lm_head.weight", [c.vocabSize, c.hiddenSize])) }
        return out
    }

    public static func load(config c: LlamaConfig, source: any TensorSource, naming: WeightNaming) throws -> LlamaWeights {
        let expected = expectedTensors(c)
        var wanted = Set(expected.map { naming.name($0.0) })
        var ropeFactors: [Float]? = nil
        if naming == .gguf, let info = source.info("rope_freqs.weight") {
            guard info.shape == [c.headDim / 2] else {
                throw QLMError.tensor(path: source.path, tensor: "rope_freqs.weight", detail: "shape \(info.shape), expected [\(c.headDim / 2)]")
            }
            ropeFactors = try source.loadF32("rope_freqs.weight")
            wanted.insert("rope_freqs.weight")
        }
        for name in source.tensorNames where !wanted.contains(name) && !naming.isIgnorable(name) {
            throw QLMError.tensor(path: source.path, tensor: name, detail: "unexpected tensor: a \(c.numLayers)-layer Llama with tie_word_embeddings=\(c.tieWordEmbeddings) has no such weight")
        }
        // Check everything before dequantizing anything: a bad file fails fast.
        for (hf, shape) in expected {
            let n = naming.name(hf)
            guard let info = source.info(n) else {
                throw QLMError.tensor(path: source.path, tensor: n, detail: "missing (required by the model config)")
            }
            if info.shape != shape {
                throw QLMError.tensor(path: source.path, tensor: n, detail: "shape \(info.shape), expected \(shape)")
            }
        }

        var buffers = [String: FloatBuffer]()
        let lock = NSLock()
        let names = expected.map { $0.0 }
        var firstError: Error?
        // Dequantize tensors concurrently: loading is memory-bound per tensor, so two cores help.
        DispatchQueue.concurrentPerform(iterations: names.count) { i in
            let hf = names[i]
            do {
                var v = try source.loadF32(naming.name(hf))
                if naming == .gguf, hf.hasSuffix("q_proj.weight") {
                    v = unpermuteGGUFRope(v, heads: c.numHeads, headDim: c.headDim, cols: c.hiddenSize)
                } else if naming == .gguf, hf.hasSuffix("k_proj.weight") {
                    v = unpermuteGGUFRope(v, heads: c.numKVHeads, headDim: c.headDim, cols: c.hiddenSize)
                }
                if let bad = v.firstIndex(where: { !$0.isFinite }) {
                    throw QLMError.tensor(path: source.path, tensor: naming.name(hf), detail: "non-finite value at element \(bad)")
                }
                let b = FloatBuffer(v)
                lock.lock(); buffers[hf] = b; lock.unlock()
            } catch {
                lock.lock(); if firstError == nil { firstError = error }; lock.unlock()
            }
        }
        if let e = firstError { throw e }

        func lin(_ name: String, _ rows: Int, _ cols: Int) -> Linear { Linear(rows: rows, cols: cols, f32: buffers[name]!) }
        let layers = (0..<c.numLayers).map { i -> Layer in
            let p = "model.layers.\(i)."
            return Layer(attnNorm: buffers[p + "input_layernorm.weight"]!,
                         wq: lin(p + "self_attn.q_proj.weight", c.qDim, c.hiddenSize),
                         wk: lin(p + "self_attn.k_proj.weight", c.kvDim, c.hiddenSize),
                         wv: lin(p + "self_attn.v_proj.weight", c.kvDim, c.hiddenSize),
                         wo: lin(p + "self_attn.o_proj.weight", c.hiddenSize, c.qDim),
                         ffnNorm: buffers[p + "post_attention_layernorm.weight"]!,
                         wGate: lin(p + "mlp.gate_proj.weight", c.intermediateSize, c.hiddenSize),
                         wUp: lin(p + "mlp.up_proj.weight", c.intermediateSize, c.hiddenSize),
                         wDown: lin(p + "mlp.down_proj.weight", c.hiddenSize, c.intermediateSize))
        }
        let head = c.tieWordEmbeddings ? nil : lin("lm_head.weight", c.vocabSize, c.hiddenSize)
        return LlamaWeights(config: c, embed: lin("model.embed_tokens.weight", c.vocabSize, c.hiddenSize), layers: layers,
                            norm: buffers["model.norm.weight"]!, lmHead: head, ropeFreqFactors: ropeFactors)
    }

    /// All tensors under their HF names (Q/K in rotate-half layout), for writing checkpoints.
    public func namedTensors() -> [(name: String, shape: [Int], data: [Float])] {
        var out: [(String, [Int], [Float])] = []
        func dense(_ l: Linear) -> [Float] { l.denseF32() }
        out.append(("model.embed_tokens.weight", [config.vocabSize, config.hiddenSize], dense(embed)))
        for (i, L) in layers.enumerated() {
            let p = "model.layers.\(i)."
            out += [(p + "input_layernorm.weight", [config.hiddenSize], L.attnNorm.array),
                    (p + "self_attn.q_proj.weight", [L.wq.rows, L.wq.cols], dense(L.wq)),
                    (p + "self_attn.k_proj.weight", [L.wk.rows, L.wk.cols], dense(L.wk)),
                    (p + "self_attn.v_proj.weight", [L.wv.rows, L.wv.cols], dense(L.wv)),
                    (p + "self_attn.o_proj.weight", [L.wo.rows, L.wo.cols], dense(L.wo)),
                    (p + "post_attention_layernorm.weight", [config.hiddenSize], L.ffnNorm.array),
                    (p + "mlp.gate_proj.weight", [L.wGate.rows, L.wGate.cols], dense(L.wGate)),
                    (p + "mlp.up_proj.weight", [L.wUp.rows, L.wUp.cols], dense(L.wUp)),
                    (p + "mlp.down_proj.weight", [L.wDown.rows, L.wDown.cols], dense(L.wDown))]
        }
        out.append(("model.norm.weight", [config.hiddenSize], norm.array))
        if !config.tieWordEmbeddings { out.append(("lm_head.weight", [lmHead.rows, lmHead.cols], dense(lmHead))) }
        return out.map { (name: $0.0, shape: $0.1, data: $0.2) }
    }

    /// Bytes of weights streamed per decoded token (every matrix once, plus the output head).
    public var weightBytesPerToken: Int {
        // The embedding row lookup reads one row, negligible next to the matrices.
        var b = lmHead.bytesPerToken + norm.count * 4
        for L in layers {
            b += [L.wq, L.wk, L.wv, L.wo, L.wGate, L.wUp, L.wDown].reduce(0) { $0 + $1.bytesPerToken }
            b += (L.attnNorm.count + L.ffnNorm.count) * 4
        }
        return b
    }
}

/// GGUF (llama.cpp's converter) stores Q/K rows of each head interleaved as (j, half) pairs for
/// adjacent-pair RoPE; HF stores them as (half, j). Row h*hd + 2j + s in GGUF is row h*hd + s*hd/2 + j in HF.
func unpermuteGGUFRope(_ w: [Float], heads: Int, headDim: Int, cols: Int) -> [Float] {
    var out = [Float](repeating: 0, count: w.count)
    let half = headDim / 2
    w.withUnsafeBufferPointer { src in
        out.withUnsafeMutableBufferPointer { dst in
            for h in 0..<heads {
                for j in 0..<half {
                    for s in 0..<2 {
                        let from = (h * headDim + 2 * j + s) * cols
                        let to = (h * headDim + s * half + j) * cols
                        (dst.baseAddress! + to).update(from: src.baseAddress! + from, count: cols)
                    }
                }
            }
        }
    }
    return out
}
