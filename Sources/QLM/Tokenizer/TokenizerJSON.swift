import Foundation

/// Loads a Hugging Face `tokenizer.json` with a byte-level BPE model.
///
/// Supported pre-tokenizers: `ByteLevel` (GPT-2 regex), `Sequence[Digits, ByteLevel]`
/// (SmolLM2), and `Sequence[Split(regex), ByteLevel(use_regex: false)]` with the Llama-3 or
/// GPT-2 regex. Anything else is rejected with `QLMError.unsupported` naming it, rather than
/// tokenizing differently from the model's training.
///
/// A sibling `tokenizer_config.json`, when present, supplies `add_bos_token`, `bos_token` and
/// `eos_token`. Without it, BOS is added only if the post-processor template starts with a
/// special token, and eos ids are the end-of-turn specials present (`<|im_end|>`,
/// `<|endoftext|>`, …).
public func loadTokenizerJSON(path: String) throws -> any Tokenizer {
    let root = try readJSONObject(path: path)
    guard let model = root["model"] as? [String: Any] else {
        throw QLMError.corrupt(path: path, detail: "no \"model\" object")
    }
    let type = model["type"] as? String ?? (model["merges"] != nil ? "BPE" : "unknown")
    guard type == "BPE" else {
        throw QLMError.unsupported("tokenizer model type '\(type)' in \(path) (only byte-level BPE is supported)")
    }
    if model["byte_fallback"] as? Bool == true {
        throw QLMError.unsupported("BPE with byte_fallback (SentencePiece-style tokenizer.json) in \(path); use the GGUF tokenizer")
    }
    for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
        if let s = model[key] as? String, !s.isEmpty {
            throw QLMError.unsupported("BPE \(key) '\(s)' in \(path)")
        }
    }
    if let norm = root["normalizer"], !(norm is NSNull) {
        throw QLMError.unsupported("tokenizer normalizer \(describeComponent(norm)) in \(path)")
    }

    guard let vocabDict = model["vocab"] as? [String: Any] else {
        throw QLMError.corrupt(path: path, detail: "no model.vocab object")
    }
    var maxId = -1
    var entries: [(String, Int)] = []
    entries.reserveCapacity(vocabDict.count)
    for (piece, value) in vocabDict {
        guard let id = (value as? NSNumber)?.intValue, id >= 0, id < 1 << 24 else {
            throw QLMError.corrupt(path: path, detail: "model.vocab['\(piece)'] is not a valid id")
        }
        entries.append((piece, id))
        maxId = max(maxId, id)
    }
    var vocab = [String?](repeating: nil, count: maxId + 1)
    for (piece, id) in entries { vocab[id] = piece }

    // Merges are "a b" strings in older files and ["a", "b"] pairs in newer ones.
    var merges: [(String, String)] = []
    if let list = model["merges"] as? [Any] {
        merges.reserveCapacity(list.count)
        for (i, m) in list.enumerated() {
            if let s = m as? String, let sp = s.firstIndex(of: " ") {
                merges.append((String(s[..<sp]), String(s[s.index(after: sp)...])))
            } else if let pair = m as? [Any], pair.count == 2, let a = pair[0] as? String, let b = pair[1] as? String {
                merges.append((a, b))
            } else {
                throw QLMError.corrupt(path: path, detail: "model.merges[\(i)] is neither \"a b\" nor [\"a\", \"b\"]")
            }
        }
    } else if let m = model["merges"], !(m is NSNull) {
        throw QLMError.corrupt(path: path, detail: "model.merges is not a list")
    }

    var added: [AddedToken] = []
    if let list = root["added_tokens"] as? [Any] {
        for (i, item) in list.enumerated() {
            guard let d = item as? [String: Any], let id = (d["id"] as? NSNumber)?.intValue,
                  id >= 0, id < 1 << 24, let content = d["content"] as? String else {
                throw QLMError.corrupt(path: path, detail: "added_tokens[\(i)] lacks id or content")
            }
            added.append(AddedToken(id: Int32(id), content: content, special: d["special"] as? Bool ?? false))
        }
    }

    let preTokenizer = try parsePreTokenizer(root["pre_tokenizer"], path: path)
    let ignoreMerges = model["ignore_merges"] as? Bool ?? false

    // Resolve BOS/EOS names against added tokens first (they are what the names refer to).
    func idOf(_ name: String) -> Int32? {
        if let t = added.first(where: { $0.content == name }) { return t.id }
        return vocab.firstIndex(of: name).map { Int32($0) }
    }
    let template = templateBOS(root["post_processor"])
    var addBOS = template != nil
    var bosId = template.flatMap(idOf)
    var eosId: Int32?
    let configPath = (path as NSString).deletingLastPathComponent + "/tokenizer_config.json"
    if FileManager.default.fileExists(atPath: configPath) {
        let config = try readJSONObject(path: configPath)
        if let b = config["add_bos_token"] as? Bool { addBOS = b }
        if let name = tokenName(config["bos_token"]) { bosId = idOf(name) ?? bosId }
        if let name = tokenName(config["eos_token"]) { eosId = idOf(name) }
    }

    return try ByteLevelBPETokenizer(
        vocab: vocab, merges: merges, addedTokens: added, preTokenizer: preTokenizer,
        ignoreMerges: ignoreMerges, bosId: bosId, eos: [eosId], addBOS: addBOS && bosId != nil,
        path: path)
}

/// Reads a JSON file whose top level is an object; every failure is a QLMError naming the path.
private func readJSONObject(path: String) throws -> [String: Any] {
    let data: Data
    do {
        data = try Data(contentsOf: URL(fileURLWithPath: path))
    } catch {
        throw QLMError.io(path: path, detail: "cannot read tokenizer file: \(error.localizedDescription)")
    }
    let parsed: Any
    do {
        parsed = try JSONSerialization.jsonObject(with: data)
    } catch {
        throw QLMError.corrupt(path: path, detail: "not valid JSON")
    }
    guard let obj = parsed as? [String: Any] else {
        throw QLMError.corrupt(path: path, detail: "top level is not a JSON object")
    }
    return obj
}

/// `"<s>"` or `{"content": "<s>", ...}` (tokenizer_config.json writes both).
private func tokenName(_ v: Any?) -> String? {
    if let s = v as? String { return s }
    if let d = v as? [String: Any] { return d["content"] as? String }
    return nil
}

/// A short description of a pre-tokenizer/normalizer JSON value for error messages.
private func describeComponent(_ v: Any) -> String {
    guard let d = v as? [String: Any] else { return "\(v)" }
    let type = d["type"] as? String ?? "?"
    if let subs = (d["pretokenizers"] ?? d["normalizers"]) as? [Any] {
        return "\(type)[" + subs.map(describeComponent).joined(separator: ", ") + "]"
    }
    if type == "Split", let p = d["pattern"] as? [String: Any] {
        return "Split(\(p["Regex"] ?? p["String"] ?? "?"))"
    }
    return type
}

private func parsePreTokenizer(_ v: Any?, path: String) throws -> PreTokenizer {
    func unsupported() -> QLMError {
        QLMError.unsupported("pre_tokenizer \(v.map(describeComponent) ?? "null") in \(path) (supported: ByteLevel, Sequence[Digits, ByteLevel], Sequence[Split(Llama-3 or GPT-2 regex), ByteLevel])")
    }
    guard let d = v as? [String: Any], let type = d["type"] as? String else { throw unsupported() }
    func isByteLevel(_ x: Any, useRegex: Bool) -> Bool {
        guard let b = x as? [String: Any], b["type"] as? String == "ByteLevel" else { return false }
        return (b["use_regex"] as? Bool ?? true) == useRegex && !(b["add_prefix_space"] as? Bool ?? false)
    }
    if type == "ByteLevel" {
        guard d["use_regex"] as? Bool ?? true else { throw unsupported() }
        return PreTokenizer(pattern: .gpt2, addPrefixSpace: d["add_prefix_space"] as? Bool ?? false)
    }
    guard type == "Sequence", let subs = d["pretokenizers"] as? [Any], subs.count == 2,
          let first = subs[0] as? [String: Any] else { throw unsupported() }
    switch first["type"] as? String {
    case "Digits":
        guard isByteLevel(subs[1], useRegex: true) else { throw unsupported() }
        let individual = first["individual_digits"] as? Bool ?? false
        return PreTokenizer(pattern: .gpt2, digits: individual ? .individual : .contiguous)
    case "Split":
        guard isByteLevel(subs[1], useRegex: false),
              let p = first["pattern"] as? [String: Any], let regex = p["Regex"] as? String,
              first["behavior"] as? String == "Isolated", !(first["invert"] as? Bool ?? false) else { throw unsupported() }
        switch regex {
        case SplitPattern.llama3Regex: return PreTokenizer(pattern: .llama3)
        case SplitPattern.gpt2Regex: return PreTokenizer(pattern: .gpt2)
        default: throw unsupported()
        }
    default:
        throw unsupported()
    }
}

/// The BOS token text if the post-processor template starts with a special token (Llama 3's
/// `TemplateProcessing` single = [SpecialToken "<|begin_of_text|>", Sequence A]).
private func templateBOS(_ v: Any?) -> String? {
    guard let d = v as? [String: Any] else { return nil }
    switch d["type"] as? String {
    case "TemplateProcessing":
        guard let single = d["single"] as? [Any], let first = single.first as? [String: Any],
              let special = first["SpecialToken"] as? [String: Any] else { return nil }
        return special["id"] as? String
    case "Sequence":
        for p in d["processors"] as? [Any] ?? [] {
            if let name = templateBOS(p) { return name }
        }
        return nil
    default:
        return nil
    }
}
