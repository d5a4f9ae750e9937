import Foundation
import QLMKernels

/// A model ready to run: weights, tokenizer and chat template.
public final class LoadedModel: @unchecked Sendable {
    public let checkpoint: ModelCheckpoint
    public let model: LlamaModel
    public let tokenizer: any Tokenizer
    public let chatTemplate: ChatTemplate?
    public var config: LlamaConfig { model.config }

    public init(checkpoint: ModelCheckpoint, model: LlamaModel, tokenizer: any Tokenizer, chatTemplate: ChatTemplate?) {
        self.checkpoint = checkpoint; self.model = model; self.tokenizer = tokenizer; self.chatTemplate = chatTemplate
    }

    /// Opens `path` (GGUF file or HF folder), binds the weights and loads the tokenizer.
    public static func load(_ path: String) throws -> LoadedModel {
        let ckpt = try openCheckpoint(path)
        let tok: any Tokenizer
        var jinja: String?
        if let md = ckpt.ggufMetadata {
            guard let model = md["tokenizer.ggml.model"]?.string, let tokens = md["tokenizer.ggml.tokens"]?.stringArray else {
                throw QLMError.corrupt(path: path, detail: "GGUF has no tokenizer (tokenizer.ggml.model / tokenizer.ggml.tokens missing)")
            }
            func id(_ k: String) -> Int32? { md[k]?.int.map { Int32(truncatingIfNeeded: $0) } }
            let types: [Int32]? = md["tokenizer.ggml.token_type"]?.int32Array
            let scores: [Float]? = md["tokenizer.ggml.scores"]?.floatArray
            let merges: [String]? = md["tokenizer.ggml.merges"]?.stringArray
            tok = try makeTokenizerFromGGUF(
                model: model, pre: md["tokenizer.ggml.pre"]?.string, tokens: tokens, tokenTypes: types, scores: scores,
                merges: merges, bosId: id("tokenizer.ggml.bos_token_id"), eosId: id("tokenizer.ggml.eos_token_id"),
                eotId: id("tokenizer.ggml.eot_token_id"), addBOS: md["tokenizer.ggml.add_bos_token"]?.bool, path: path)
            jinja = md["tokenizer.chat_template"]?.string
        } else {
            let dir = ckpt.hfDirectory!
            guard FileManager.default.fileExists(atPath: dir + "/tokenizer.json") else {
                throw QLMError.io(path: dir + "/tokenizer.json", detail: "missing: qlm needs the model's tokenizer.json next to config.json")
            }
            tok = try loadTokenizerJSON(path: dir + "/tokenizer.json")
            if let d = FileManager.default.contents(atPath: dir + "/tokenizer_config.json"),
               let obj = try? JSONSerialization.jsonObject(with: d) as? [String: Any] {
                jinja = obj["chat_template"] as? String
            }
        }
        if tok.vocabSize > ckpt.config.vocabSize {
            throw QLMError.corrupt(path: path, detail: "tokenizer has \(tok.vocabSize) tokens but the model's vocabulary is \(ckpt.config.vocabSize)")
        }
        let weights = try ckpt.loadWeights()
        var template = ChatTemplate.detect(jinja: jinja)
        if template == nil {
            // Without a template, infer the family from the special tokens the vocabulary has.
            if tok.tokenId("<|im_start|>") != nil { template = .chatml }
            else if tok.tokenId("<|start_header_id|>") != nil { template = .llama3 }
            else if tok.tokenId("[INST]") != nil || tok.bosId != nil { template = .llama2 }
        }
        return LoadedModel(checkpoint: ckpt, model: LlamaModel(weights: weights), tokenizer: tok, chatTemplate: template)
    }

    /// Token ids that stop generation.
    public var stopIds: Set<Int32> {
        var s = Set(tokenizer.eosIds)
        for id in model.config.eosTokenIds { s.insert(Int32(id)) }
        for t in ["<|im_end|>", "<|eot_id|>", "<|end_of_text|>"] { if let id = tokenizer.tokenId(t) { s.insert(id) } }
        return s
    }
}

/// Decode timing of one generation.
public struct GenerationStats: Codable, Sendable {
    public var promptTokens = 0
    public var generatedTokens = 0
    public var promptSeconds = 0.0
    public var decodeSeconds = 0.0
    public var decodeLatenciesMs: [Double] = []
    public var promptTPS: Double { promptSeconds > 0 ? Double(promptTokens) / promptSeconds : 0 }
    public var decodeTPS: Double { decodeSeconds > 0 ? Double(generatedTokens) / decodeSeconds : 0 }
}

/// Streams tokens from a session: prefill the prompt, then sample one token at a time.
public struct Generator {
    public let loaded: LoadedModel
    public let session: InferenceSession

    public init(loaded: LoadedModel, session: InferenceSession) { self.loaded = loaded; self.session = session }

    /// Feeds `prompt` ids and generates up to `maxTokens`, calling `onToken` for each new id
    /// (return false to stop). The stop token itself is reported but not fed back.
    @discardableResult
    public func generate(prompt: [Int32], maxTokens: Int, sampler: inout Sampler, stopIds: Set<Int32>,
                         history: inout [Int32], onToken: (Int32) -> Bool) throws -> GenerationStats {
        var stats = GenerationStats()
        let V = loaded.config.vocabSize
        guard !prompt.isEmpty else { throw QLMError.invalidArgument("empty prompt") }
        let room = session.maxContext - session.position
        guard prompt.count < room else {
            throw QLMError.invalidArgument("prompt of \(prompt.count) tokens does not fit the remaining context (\(room) of \(session.maxContext))")
        }
        var t0 = DispatchTime.now().uptimeNanoseconds
        try session.forward(prompt, logits: true)
        history += prompt
        history.reserveCapacity(history.count + maxTokens + 1)
        stats.promptTokens = prompt.count
        stats.promptSeconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        stats.decodeLatenciesMs.reserveCapacity(maxTokens)
        var next = [Int32](repeating: 0, count: 1)
        let decodeStart = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<maxTokens {
            let id = sampler.sample(logits: session.logits.ptr, vocabSize: V, history: history[...])
            stats.generatedTokens += 1
            let keepGoing = onToken(id)
            if stopIds.contains(id) || !keepGoing || session.position >= session.maxContext { break }
            history.append(id)
            next[0] = id
            t0 = DispatchTime.now().uptimeNanoseconds
            try session.forward(next, logits: true)
            stats.decodeLatenciesMs.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
        }
        stats.decodeSeconds = Double(DispatchTime.now().uptimeNanoseconds - decodeStart) / 1e9
        return stats
    }
}
