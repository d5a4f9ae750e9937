import Foundation

/// Builds a tokenizer from GGUF metadata (`tokenizer.ggml.*`).
///
/// - model: `tokenizer.ggml.model`: "gpt2" (byte-level BPE) or "llama" (SentencePiece BPE).
/// - pre: `tokenizer.ggml.pre` for "gpt2": "smollm" (digits split, then the GPT-2 regex),
///   "default"/"gpt2"/nil (GPT-2 regex), "llama-bpe"/"llama3" (Llama-3 regex).
/// - tokenTypes: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte. Control (and
///   unknown) tokens are special: matched in text only with parseSpecial. User-defined tokens are
///   matched always, as llama.cpp does.
/// - addBOS: `tokenizer.ggml.add_bos_token`; when absent, llama.cpp's defaults (SentencePiece and
///   Llama 3: true, other byte-level BPE: false).
/// - path: the GGUF file, for error messages.
public func makeTokenizerFromGGUF(
    model: String, pre: String?, tokens: [String], tokenTypes: [Int32]?, scores: [Float]?,
    merges: [String]?, bosId: Int32?, eosId: Int32?, eotId: Int32?, addBOS: Bool?, path: String
) throws -> any Tokenizer {
    if tokens.isEmpty { throw QLMError.corrupt(path: path, detail: "tokenizer.ggml.tokens is empty") }
    if let tokenTypes, tokenTypes.count != tokens.count {
        throw QLMError.corrupt(path: path, detail: "tokenizer.ggml.token_type has \(tokenTypes.count) entries for \(tokens.count) tokens")
    }
    for (name, id) in [("bos", bosId), ("eos", eosId), ("eot", eotId)] {
        if let id, id < 0 || Int(id) >= tokens.count {
            throw QLMError.corrupt(path: path, detail: "tokenizer.ggml.\(name)_token_id \(id) is outside the vocabulary of \(tokens.count)")
        }
    }
    switch model {
    case "gpt2":
        let preTokenizer: PreTokenizer
        let ignoreMerges: Bool
        switch pre {
        case nil, "default", "gpt2":
            preTokenizer = PreTokenizer(pattern: .gpt2)
            ignoreMerges = false
        case "smollm":
            preTokenizer = PreTokenizer(pattern: .gpt2, digits: .individual)
            ignoreMerges = false
        case "llama-bpe", "llama3":
            preTokenizer = PreTokenizer(pattern: .llama3)
            ignoreMerges = true
        case let other?:
            throw QLMError.unsupported("tokenizer.ggml.pre '\(other)' in \(path) (supported: smollm, default, gpt2, llama-bpe, llama3)")
        }
        guard let merges else { throw QLMError.corrupt(path: path, detail: "byte-level BPE tokenizer without tokenizer.ggml.merges") }
        var pairs: [(String, String)] = []
        pairs.reserveCapacity(merges.count)
        for (i, m) in merges.enumerated() {
            guard let sp = m.firstIndex(of: " ") else {
                throw QLMError.corrupt(path: path, detail: "tokenizer.ggml.merges[\(i)] '\(m)' is not two tokens separated by a space")
            }
            pairs.append((String(m[..<sp]), String(m[m.index(after: sp)...])))
        }
        var added: [AddedToken] = []
        if let tokenTypes {
            for (i, type) in tokenTypes.enumerated() {
                switch type {
                case GGUFTokenType.control, GGUFTokenType.unknown:
                    added.append(AddedToken(id: Int32(i), content: tokens[i], special: true))
                case GGUFTokenType.userDefined:
                    added.append(AddedToken(id: Int32(i), content: tokens[i], special: false))
                default: break
                }
            }
        }
        return try ByteLevelBPETokenizer(
            vocab: tokens, merges: pairs, addedTokens: added, preTokenizer: preTokenizer,
            ignoreMerges: ignoreMerges, bosId: bosId, eos: [eosId, eotId],
            addBOS: addBOS ?? (preTokenizer.pattern == .llama3), path: path)
    case "llama":
        return try SentencePieceTokenizer(
            tokens: tokens, scores: scores, types: tokenTypes, bosId: bosId, eos: [eosId, eotId],
            addBOS: addBOS ?? true, path: path)
    default:
        throw QLMError.unsupported("tokenizer.ggml.model '\(model)' in \(path) (supported: gpt2, llama)")
    }
}
