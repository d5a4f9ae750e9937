import Foundation

/// Text ↔ token ids for one model's vocabulary.
///
/// Implementations are immutable after loading, so one instance can be shared across threads.
public protocol Tokenizer: AnyObject, Sendable {
    var vocabSize: Int { get }
    var bosId: Int32? { get }
    /// All ids that end generation (e.g. `<|im_end|>`, `<|endoftext|>`, the GGUF eos/eot ids).
    var eosIds: [Int32] { get }
    /// Whether encode-for-model should prepend BOS (SmolLM2: false). `encode` itself never does.
    var addBOS: Bool { get }
    /// Encode text. parseSpecial: when true, occurrences of special/added tokens like
    /// "<|im_start|>" map to their ids; when false they are tokenized as plain text.
    /// (Non-special added tokens — GGUF "user-defined" — are always matched, as in HF and llama.cpp.)
    /// Never adds BOS.
    func encode(_ text: String, parseSpecial: Bool) -> [Int32]
    /// Lossless bytes → String (invalid UTF-8 replaced with U+FFFD). Special tokens are kept as text.
    func decode(_ ids: [Int32]) -> String
    /// The raw bytes a token stands for (special tokens: their text; unknown ids: empty).
    func tokenBytes(_ id: Int32) -> [UInt8]
    /// Exact lookup of a vocabulary entry or added token, e.g. "<|im_end|>". Tries the string as
    /// the vocabulary stores it ("Ġthe", "▁the") first, then as the text the token stands for (" the").
    func tokenId(_ text: String) -> Int32?
    func isSpecial(_ id: Int32) -> Bool
}

/// Streaming detokenizer: feed ids one at a time, get back only complete UTF-8 text (never half
/// a character); call `flush()` at the end.
///
/// Works on `tokenBytes`, so the output is the exact continuation text: unlike
/// `SentencePiece.decode` it does not drop the leading space of the first token.
public struct StreamingDetokenizer: Sendable {
    private let tokenizer: any Tokenizer
    /// Bytes received but not yet returned because they end in an incomplete UTF-8 sequence.
    private var pending: [UInt8] = []

    public init(tokenizer: any Tokenizer) {
        self.tokenizer = tokenizer
    }

    public mutating func push(_ id: Int32) -> String {
        pending.append(contentsOf: tokenizer.tokenBytes(id))
        let n = completeUTF8PrefixLength(pending)
        if n == 0 { return "" }
        let text = String(decoding: pending[0..<n], as: UTF8.self)
        pending.removeFirst(n)
        return text
    }

    /// Returns whatever is left (an incomplete sequence becomes U+FFFD) and resets the state.
    public mutating func flush() -> String {
        defer { pending.removeAll() }
        return pending.isEmpty ? "" : String(decoding: pending, as: UTF8.self)
    }
}

/// Length of the longest prefix of `bytes` that does not end inside a UTF-8 sequence that could
/// still be completed by more bytes. Invalid bytes are not held back (they decode to U+FFFD).
func completeUTF8PrefixLength(_ bytes: [UInt8]) -> Int {
    let n = bytes.count
    // A sequence is at most 4 bytes, so only its last 3 bytes can belong to an unfinished one.
    var i = n - 1
    while i >= 0 && i >= n - 4 {
        let b = bytes[i]
        if b & 0xC0 != 0x80 {  // lead byte (or ASCII)
            let need: Int
            switch b {
            case 0xC2...0xDF: need = 2
            case 0xE0...0xEF: need = 3
            case 0xF0...0xF4: need = 4
            default: need = 1  // ASCII or a byte that can never start a sequence
            }
            return n - i < need ? i : n
        }
        i -= 1
    }
    return n  // only continuation bytes at the end: invalid anyway, let the decoder replace them
}

/// Texts of tokens that end a turn in common chat vocabularies (as llama.cpp's end-of-generation
/// heuristic). They count as eos when present as special tokens, so generation stops on them even
/// when the file names only one eos.
let endOfGenerationTexts = [
    "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "<|eom_id|>", "<|end|>",
    "<end_of_turn>",
]

/// Eos ids from the explicitly named ones plus the heuristic list, deduplicated, in order.
func collectEOSIds(explicit: [Int32?], specialIdOf: (String) -> Int32?) -> [Int32] {
    var out: [Int32] = []
    for id in explicit.compactMap({ $0 }) where !out.contains(id) { out.append(id) }
    for text in endOfGenerationTexts {
        if let id = specialIdOf(text), !out.contains(id) { out.append(id) }
    }
    return out
}
