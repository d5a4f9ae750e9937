import Foundation

/// What a model path points at.
public enum ModelFormat: String, Sendable {
    case gguf, hf
    /// A folder written by `qlm quantize` (packed weights + manifest).
    case qlm
}

/// A checkpoint opened and validated, before weights are dequantized.
public struct ModelCheckpoint: @unchecked Sendable {
    public var path: String
    public var format: ModelFormat
    public var config: LlamaConfig
    public var source: any TensorSource
    public var naming: WeightNaming
    /// GGUF metadata (tokenizer, chat template) when the checkpoint is a GGUF.
    public var ggufMetadata: [String: GGUFValue]?
    /// Directory holding tokenizer.json / tokenizer_config.json for HF folders.
    public var hfDirectory: String?

    public func loadWeights() throws -> LlamaWeights {
        if let q = source as? QLMWeightsFile { return try LlamaWeights.loadPacked(config: config, file: q) }
        return try LlamaWeights.load(config: config, source: source, naming: naming)
    }
}

/// Opens a GGUF file or a Hugging Face folder (config.json + safetensors) and reads its config.
public func openCheckpoint(_ path: String) throws -> ModelCheckpoint {
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
        throw QLMError.io(path: path, detail: "no such file or directory")
    }
    if isDir.boolValue {
        let ggufs = ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).filter { $0.hasSuffix(".gguf") }.sorted()
        if !FileManager.default.fileExists(atPath: path + "/config.json") {
            if ggufs.count == 1 { return try openCheckpoint(path + "/" + ggufs[0]) }
            throw QLMError.io(path: path, detail: "not a model folder: no config.json (a Hugging Face model) and \(ggufs.isEmpty ? "no" : "several") .gguf file(s)")
        }
        let config = try LlamaConfig.fromHFConfig(path: path + "/config.json")
        if isQuantizedFolder(path) {
            let file = try QLMWeightsFile(path: path + "/model.qlmw")
            return ModelCheckpoint(path: path, format: .qlm, config: config, source: file, naming: .hf,
                                   ggufMetadata: nil, hfDirectory: path)
        }
        let source = try openSafetensorsModel(directory: path)
        return ModelCheckpoint(path: path, format: .hf, config: config, source: source, naming: .hf,
                               ggufMetadata: nil, hfDirectory: path)
    }
    let gguf = try GGUFFile(path: path)
    let config = try llamaConfig(fromGGUF: gguf)
    return ModelCheckpoint(path: path, format: .gguf, config: config, source: gguf, naming: .gguf,
                           ggufMetadata: gguf.metadata, hfDirectory: nil)
}

/// Reads the Llama hyper-parameters from GGUF metadata (`{arch}.*` keys).
public func llamaConfig(fromGGUF g: GGUFFile) throws -> LlamaConfig {
    let md = g.metadata
    guard let arch = md["general.architecture"]?.string else {
        throw QLMError.corrupt(path: g.path, detail: "metadata has no general.architecture")
    }
    guard arch == "llama" else {
        throw QLMError.unsupported("\(g.path): architecture '\(arch)' (qlm runs llama-architecture models)")
    }
    func int(_ k: String) throws -> Int {
        guard let v = md["\(arch).\(k)"]?.int else { throw QLMError.corrupt(path: g.path, detail: "metadata key \(arch).\(k) missing or not an integer") }
        return v
    }
    let d = try int("embedding_length")
    let heads = try int("attention.head_count")
    let kvHeads = md["\(arch).attention.head_count_kv"]?.int ?? heads
    let headDim = md["\(arch).attention.key_length"]?.int ?? md["\(arch).rope.dimension_count"]?.int ?? d / max(heads, 1)
    let vocab = md["\(arch).vocab_size"]?.int ?? md["tokenizer.ggml.tokens"]?.stringArray?.count
        ?? g.info("token_embd.weight")?.shape.first ?? 0
    var eos: [Int] = []
    if let e = md["tokenizer.ggml.eos_token_id"]?.int { eos.append(e) }
    if let e = md["tokenizer.ggml.eot_token_id"]?.int, !eos.contains(e) { eos.append(e) }
    var c = LlamaConfig(vocabSize: vocab, hiddenSize: d, intermediateSize: try int("feed_forward_length"),
                        numLayers: try int("block_count"), numHeads: heads, numKVHeads: kvHeads, headDim: headDim,
                        ropeTheta: md["\(arch).rope.freq_base"]?.double ?? 10000,
                        rmsNormEps: md["\(arch).attention.layer_norm_rms_epsilon"]?.double ?? 1e-5,
                        maxPositionEmbeddings: md["\(arch).context_length"]?.int ?? 2048,
                        tieWordEmbeddings: g.info("output.weight") == nil, ropeScaling: nil,
                        bosTokenId: md["tokenizer.ggml.bos_token_id"]?.int, eosTokenIds: eos)
    // rms eps is stored as f32 in GGUF; snap 9.99999974e-06 back to the intended 1e-5.
    c.rmsNormEps = Double(Float(c.rmsNormEps))
    if abs(c.rmsNormEps - 1e-5) < 1e-12 { c.rmsNormEps = 1e-5 }
    if abs(c.rmsNormEps - 1e-6) < 1e-13 { c.rmsNormEps = 1e-6 }
    try c.validate(source: g.path)
    return c
}
