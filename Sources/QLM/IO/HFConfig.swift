import Foundation

// Hugging Face `config.json` for Llama models (transformers' LlamaConfig key names).

/// `eos_token_id` is an integer or a list of integers.
private enum HFTokenIds: Decodable {
    case one(Int), many([Int])
    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let v = try? c.decode(QLMJSONInt.self) { self = .one(v.value); return }
        if let v = try? c.decode([QLMJSONInt].self) { self = .many(v.map(\.value)); return }
        throw DecodingError.typeMismatch([Int].self, .init(codingPath: decoder.codingPath,
                                                             debugDescription: "expected an integer or an array of integers"))
    }
    var ids: [Int] { switch self { case let .one(v): return [v]; case let .many(v): return v } }
}

private struct HFRopeScaling: Decodable {
    var ropeType: String?
    var type: String?
    var factor: Double?
    var lowFreqFactor: Double?
    var highFreqFactor: Double?
    var originalMaxPositionEmbeddings: QLMJSONInt?
    /// Only in transformers v5's `rope_parameters`, which replaces `rope_theta` + `rope_scaling`.
    var ropeTheta: Double?
    enum CodingKeys: String, CodingKey {
        case ropeTheta = "rope_theta"
        case ropeType = "rope_type", type, factor, lowFreqFactor = "low_freq_factor", highFreqFactor = "high_freq_factor"
        case originalMaxPositionEmbeddings = "original_max_position_embeddings"
    }
}

private struct HFLlamaConfig: Decodable {
    var modelType: String?
    var architectures: [String]?
    var vocabSize: QLMJSONInt?
    var hiddenSize: QLMJSONInt?
    var intermediateSize: QLMJSONInt?
    var numHiddenLayers: QLMJSONInt?
    var numAttentionHeads: QLMJSONInt?
    var numKeyValueHeads: QLMJSONInt?
    var headDim: QLMJSONInt?
    var ropeTheta: Double?
    var rmsNormEps: Double?
    var maxPositionEmbeddings: QLMJSONInt?
    var tieWordEmbeddings: Bool?
    var ropeScaling: HFRopeScaling?
    var ropeParameters: HFRopeScaling?
    var bosTokenId: QLMJSONInt?
    var eosTokenId: HFTokenIds?
    var hiddenAct: String?
    var attentionBias: Bool?
    var mlpBias: Bool?
    enum CodingKeys: String, CodingKey {
        case modelType = "model_type", architectures, vocabSize = "vocab_size", hiddenSize = "hidden_size"
        case intermediateSize = "intermediate_size", numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads", numKeyValueHeads = "num_key_value_heads", headDim = "head_dim"
        case ropeTheta = "rope_theta", rmsNormEps = "rms_norm_eps", maxPositionEmbeddings = "max_position_embeddings"
        case tieWordEmbeddings = "tie_word_embeddings", ropeScaling = "rope_scaling", ropeParameters = "rope_parameters"
        case bosTokenId = "bos_token_id"
        case eosTokenId = "eos_token_id", hiddenAct = "hidden_act", attentionBias = "attention_bias", mlpBias = "mlp_bias"
    }
}

extension LlamaConfig {
    /// Reads a Hugging Face `config.json` (or the `config.json` inside a checkpoint directory).
    public static func fromHFConfig(path: String) throws -> LlamaConfig {
        var file = path
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue {
            file = (path.hasSuffix("/") ? path : path + "/") + "config.json"
        }
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: file)) } catch {
            throw QLMError.io(path: file, detail: "cannot read model config: \((error as NSError).localizedDescription)")
        }
        return try fromHFConfig(data: data, path: file)
    }

    /// Parses a Hugging Face Llama `config.json`; `path` names the source in errors.
    /// Missing required fields and wrongly typed values are `QLMError.corrupt` naming the field;
    /// other architectures and RoPE scalings are `QLMError.unsupported`.
    public static func fromHFConfig(data: Data, path: String) throws -> LlamaConfig {
        let raw: HFLlamaConfig
        do { raw = try JSONDecoder().decode(HFLlamaConfig.self, from: data) } catch {
            throw QLMError.corrupt(path: path, detail: "bad model config: " + qlmDescribeDecodingError(error))
        }
        let supported = "qlm runs Llama models (model_type \"llama\", LlamaForCausalLM)"
        if let mt = raw.modelType, mt != "llama" {
            throw QLMError.unsupported("architecture '\(mt)' (model_type in \(path)); \(supported)")
        }
        if let archs = raw.architectures, !archs.isEmpty, !archs.contains("LlamaForCausalLM") {
            throw QLMError.unsupported("architecture '\(archs.joined(separator: ", "))' (architectures in \(path)); \(supported)")
        }
        if raw.modelType == nil && (raw.architectures ?? []).isEmpty {
            throw QLMError.corrupt(path: path, detail: "missing required field 'model_type'")
        }
        if let act = raw.hiddenAct, act != "silu" {
            throw QLMError.unsupported("hidden_act '\(act)' in \(path) (only silu is implemented)")
        }
        if raw.attentionBias == true { throw QLMError.unsupported("attention_bias = true in \(path) (Llama without biases only)") }
        if raw.mlpBias == true { throw QLMError.unsupported("mlp_bias = true in \(path) (Llama without biases only)") }

        let missing = [("vocab_size", raw.vocabSize), ("hidden_size", raw.hiddenSize), ("intermediate_size", raw.intermediateSize),
                       ("num_hidden_layers", raw.numHiddenLayers), ("num_attention_heads", raw.numAttentionHeads)]
            .filter { $0.1 == nil }.map { "'\($0.0)'" }
        if !missing.isEmpty {
            throw QLMError.corrupt(path: path, detail: "missing required field\(missing.count > 1 ? "s" : "") \(missing.joined(separator: ", "))")
        }
        func req<T>(_ v: T?, _ key: String) throws -> T {
            guard let v else { throw QLMError.corrupt(path: path, detail: "missing required field '\(key)'") }
            return v
        }
        var scaling: RopeScaling? = nil
        // transformers <= 4.x: `rope_theta` + `rope_scaling`; 5.x: `rope_parameters` holding both.
        let ropeField = raw.ropeScaling != nil ? "rope_scaling" : "rope_parameters"
        if let rs = raw.ropeScaling ?? raw.ropeParameters {
            var kind = rs.ropeType ?? rs.type
            if kind == nil, raw.ropeScaling == nil, rs.factor == nil { kind = "default" }
            func req<T>(_ v: T?, _ key: String) throws -> T {
                guard let v else { throw QLMError.corrupt(path: path, detail: "missing field '\(key)' in '\(ropeField)'") }
                return v
            }
            switch kind {
            case "default"?:
                scaling = nil
            case "llama3"?:
                scaling = RopeScaling(
                    ropeType: "llama3",
                    factor: try req(rs.factor, "factor"),
                    lowFreqFactor: try req(rs.lowFreqFactor, "low_freq_factor"),
                    highFreqFactor: try req(rs.highFreqFactor, "high_freq_factor"),
                    originalMaxPositionEmbeddings: try req(rs.originalMaxPositionEmbeddings?.value, "original_max_position_embeddings"))
                if let s = scaling, !(s.highFreqFactor > s.lowFreqFactor) {
                    throw QLMError.corrupt(path: path, detail: "invalid model config: \(ropeField).high_freq_factor \(s.highFreqFactor) must exceed low_freq_factor \(s.lowFreqFactor)")
                }
                if let s = scaling, s.originalMaxPositionEmbeddings <= 0 {
                    throw QLMError.corrupt(path: path, detail: "invalid model config: \(ropeField).original_max_position_embeddings must be positive")
                }
            case let k?:
                throw QLMError.unsupported("\(ropeField) type '\(k)' in \(path) (only llama3 is implemented)")
            case nil:
                throw QLMError.corrupt(path: path, detail: "missing field 'rope_type' in '\(ropeField)'")
            }
        }
        let heads = try req(raw.numAttentionHeads?.value, "num_attention_heads")
        let cfg = LlamaConfig(
            vocabSize: try req(raw.vocabSize?.value, "vocab_size"),
            hiddenSize: try req(raw.hiddenSize?.value, "hidden_size"),
            intermediateSize: try req(raw.intermediateSize?.value, "intermediate_size"),
            numLayers: try req(raw.numHiddenLayers?.value, "num_hidden_layers"),
            numHeads: heads,
            numKVHeads: raw.numKeyValueHeads?.value ?? heads,
            headDim: raw.headDim?.value,
            ropeTheta: raw.ropeTheta ?? raw.ropeParameters?.ropeTheta ?? 10000,
            rmsNormEps: raw.rmsNormEps ?? 1e-6,  // transformers' LlamaConfig default
            maxPositionEmbeddings: raw.maxPositionEmbeddings?.value ?? 2048,
            tieWordEmbeddings: raw.tieWordEmbeddings ?? false,
            ropeScaling: scaling,
            bosTokenId: raw.bosTokenId?.value,
            eosTokenIds: raw.eosTokenId?.ids ?? [])
        if raw.headDim?.value == nil, heads > 0, cfg.hiddenSize % heads != 0 {
            throw QLMError.corrupt(path: path, detail: "invalid model config: hidden_size \(cfg.hiddenSize) is not a multiple of num_attention_heads \(heads) and head_dim is not given")
        }
        if cfg.maxPositionEmbeddings <= 0 {
            throw QLMError.corrupt(path: path, detail: "invalid model config: max_position_embeddings = \(cfg.maxPositionEmbeddings) must be positive")
        }
        try cfg.validate(source: path)
        return cfg
    }

    /// A transformers-loadable `config.json` (LlamaForCausalLM, standard key names, sorted keys,
    /// 2-space indent) that `fromHFConfig` reads back to an equal config. `torchDtype` is e.g.
    /// "float32", "float16" or "bfloat16".
    public func hfConfigJSON(torchDtype: String) -> Data {
        func num(_ x: Double) -> String {
            // Swift prints the shortest round-tripping decimal ("1e-05", "100000.0"), valid JSON when finite.
            x.isFinite ? "\(x)" : "null"
        }
        var fields: [(String, String)] = [
            ("architectures", "[\n    \"LlamaForCausalLM\"\n  ]"),
            ("attention_bias", "false"),
            ("attention_dropout", "0.0"),
            ("bos_token_id", bosTokenId.map(String.init) ?? "null"),
            ("eos_token_id", eosTokenIds.count == 1 ? "\(eosTokenIds[0])"
                : eosTokenIds.isEmpty ? "null" : "[\n" + eosTokenIds.map { "    \($0)" }.joined(separator: ",\n") + "\n  ]"),
            ("head_dim", "\(headDim)"),
            ("hidden_act", "\"silu\""),
            ("hidden_size", "\(hiddenSize)"),
            ("initializer_range", "0.02"),
            ("intermediate_size", "\(intermediateSize)"),
            ("max_position_embeddings", "\(maxPositionEmbeddings)"),
            ("mlp_bias", "false"),
            ("model_type", "\"llama\""),
            ("num_attention_heads", "\(numHeads)"),
            ("num_hidden_layers", "\(numLayers)"),
            ("num_key_value_heads", "\(numKVHeads)"),
            ("pretraining_tp", "1"),
            ("rms_norm_eps", num(rmsNormEps)),
            ("rope_theta", num(ropeTheta)),
            ("tie_word_embeddings", tieWordEmbeddings ? "true" : "false"),
            ("torch_dtype", qlmJSONString(torchDtype)),
            ("use_cache", "true"),
            ("vocab_size", "\(vocabSize)"),
        ]
        if let s = ropeScaling {
            let inner = [
                ("factor", num(s.factor)),
                ("high_freq_factor", num(s.highFreqFactor)),
                ("low_freq_factor", num(s.lowFreqFactor)),
                ("original_max_position_embeddings", "\(s.originalMaxPositionEmbeddings)"),
                ("rope_type", qlmJSONString(s.ropeType)),
            ].map { "    \"\($0.0)\": \($0.1)" }.joined(separator: ",\n")
            fields.append(("rope_scaling", "{\n" + inner + "\n  }"))
        } else {
            fields.append(("rope_scaling", "null"))
        }
        fields.sort { $0.0 < $1.0 }
        let body = fields.map { "  \"\($0.0)\": \($0.1)" }.joined(separator: ",\n")
        return Data(("{\n" + body + "\n}\n").utf8)
    }
}
