import Foundation

/// Writes `modelPath` (GGUF or HF) as a Hugging Face folder: config.json, tokenizer.json,
/// tokenizer_config.json and model.safetensors in `dtype`. Q/K are written in HF's rotate-half
/// layout. The folder appears atomically: it is built under a temporary name and renamed.
public func convertToHF(modelPath: String, outDir: String, dtype: TensorDType) throws {
    guard [.f32, .f16, .bf16].contains(dtype) else { throw QLMError.invalidArgument("dtype must be f32, f16 or bf16") }
    try ensureFreshOutputFolder(outDir)
    let ckpt = try openCheckpoint(modelPath)
    let weights = try ckpt.loadWeights()
    try writeFolderAtomically(outDir) { tmp in
        let torchDtype = ["F32": "float32", "F16": "float16", "BF16": "bfloat16"][dtype.rawValue]!
        try writeData(tmp + "/config.json", ckpt.config.hfConfigJSON(torchDtype: torchDtype))
        try copyTokenizerFiles(from: ckpt, to: tmp)
        try writeSafetensors(path: tmp + "/model.safetensors", tensors: weights.namedTensors(), dtype: dtype,
                             metadata: ["format": "pt", "converted_by": "qlm", "source": URL(fileURLWithPath: modelPath).lastPathComponent])
    }
}

/// tokenizer.json / tokenizer_config.json for a new folder: regenerated from GGUF metadata or copied.
func copyTokenizerFiles(from ckpt: ModelCheckpoint, to dir: String) throws {
    if let md = ckpt.ggufMetadata {
        let (tok, cfg) = try hfTokenizerFiles(fromGGUF: md, path: ckpt.path)
        try writeData(dir + "/tokenizer.json", tok)
        try writeData(dir + "/tokenizer_config.json", cfg)
    } else if let src = ckpt.hfDirectory {
        let fm = FileManager.default
        for f in ["tokenizer.json", "tokenizer_config.json", "generation_config.json", "special_tokens_map.json"]
        where fm.fileExists(atPath: src + "/" + f) {
            try fm.copyItem(atPath: src + "/" + f, toPath: dir + "/" + f)
        }
    }
}

private func writeData(_ path: String, _ data: Data) throws {
    try writeFileAtomically(path) { try $0.write(contentsOf: data) }
}

/// Rebuilds HF tokenizer.json / tokenizer_config.json from GGUF `tokenizer.ggml.*` metadata
/// (byte-level BPE models; the pre-tokenizer is chosen from `tokenizer.ggml.pre`).
func hfTokenizerFiles(fromGGUF md: [String: GGUFValue], path: String) throws -> (Data, Data) {
    guard md["tokenizer.ggml.model"]?.string == "gpt2", let tokens = md["tokenizer.ggml.tokens"]?.stringArray,
          let merges = md["tokenizer.ggml.merges"]?.stringArray else {
        throw QLMError.unsupported("\(path): converting a '\(md["tokenizer.ggml.model"]?.string ?? "?")' GGUF tokenizer to tokenizer.json (byte-level BPE 'gpt2' only)")
    }
    let types = md["tokenizer.ggml.token_type"]?.int32Array ?? []
    let byteLevel: [String: Any] = ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true]
    let pre: Any
    switch md["tokenizer.ggml.pre"]?.string ?? "default" {
    case "smollm":
        pre = ["type": "Sequence", "pretokenizers": [["type": "Digits", "individual_digits": true], byteLevel]] as [String: Any]
    case "llama-bpe", "llama3":
        let llama3 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
        pre = ["type": "Sequence", "pretokenizers": [
            ["type": "Split", "pattern": ["Regex": llama3], "behavior": "Isolated", "invert": false] as [String: Any],
            ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false]]] as [String: Any]
    case "default", "gpt2":
        pre = byteLevel
    case let other:
        throw QLMError.unsupported("\(path): GGUF pre-tokenizer '\(other)' has no tokenizer.json equivalent in qlm")
    }
    var vocab: [String: Int] = [:]
    var added: [[String: Any]] = []
    for (i, t) in tokens.enumerated() {
        vocab[t] = i
        if i < types.count, types[i] == 3 || types[i] == 4 {
            added.append(["id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                          "normalized": false, "special": types[i] == 3])
        }
    }
    let tok: [String: Any] = [
        "version": "1.0", "truncation": NSNull(), "padding": NSNull(), "added_tokens": added, "normalizer": NSNull(),
        "pre_tokenizer": pre,
        "post_processor": ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true],
        "decoder": ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true],
        "model": ["type": "BPE", "dropout": NSNull(), "unk_token": NSNull(), "continuing_subword_prefix": NSNull(),
                  "end_of_word_suffix": NSNull(), "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges] as [String: Any],
    ]
    func name(_ key: String) -> Any {
        if let id = md[key]?.int, id >= 0, id < tokens.count { return tokens[id] }
        return NSNull()
    }
    var cfg: [String: Any] = ["add_bos_token": md["tokenizer.ggml.add_bos_token"]?.bool ?? false,
                              "bos_token": name("tokenizer.ggml.bos_token_id"), "eos_token": name("tokenizer.ggml.eos_token_id"),
                              "tokenizer_class": "GPT2Tokenizer", "clean_up_tokenization_spaces": false]
    if let pad = md["tokenizer.ggml.padding_token_id"]?.int, pad < tokens.count { cfg["pad_token"] = tokens[pad] }
    if let tpl = md["tokenizer.chat_template"]?.string { cfg["chat_template"] = tpl }
    let opts: JSONSerialization.WritingOptions = [.sortedKeys]
    return (try JSONSerialization.data(withJSONObject: tok, options: opts), try JSONSerialization.data(withJSONObject: cfg, options: [.sortedKeys, .prettyPrinted]))
}
