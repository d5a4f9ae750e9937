import Foundation

/// GGUF `tokenizer.ggml.token_type` values.
enum GGUFTokenType {
    static let normal: Int32 = 1
    static let unknown: Int32 = 2
    static let control: Int32 = 3
    static let userDefined: Int32 = 4
    static let unused: Int32 = 5
    static let byte: Int32 = 6
}

/// SentencePiece BPE as in Llama 2 (`tokenizer.ggml.model = llama`), following llama.cpp's
/// llm_tokenizer_spm: spaces become "▁", a "▁" is prepended to the text (and after each
/// special token), characters are merged pairwise by the *score* of the merged piece (highest
/// first, leftmost on ties), and characters missing from the vocabulary fall back to `<0xNN>`
/// byte tokens.
final class SentencePieceTokenizer: Tokenizer {
    let vocabSize: Int
    let bosId: Int32?
    let eosIds: [Int32]
    let addBOS: Bool
    private let addSpacePrefix: Bool
    private let scores: [Float]
    private let unkId: Int32?
    /// UTF-8 of normal pieces ("▁the") → id: the only pieces merges may produce, as in
    /// SentencePiece, where control, byte and user-defined pieces are not part of the merge model.
    private let mergeable: [ArraySlice<UInt8>: Int32]
    /// Every piece string → id, for `tokenId`.
    private let pieceIds: [String: Int32]
    private let byteIds: [Int32]
    private let bytesOf: [[UInt8]]
    private let specialFlags: [Bool]
    private let added: AddedTokenMatcher

    /// `types` nil means every piece is normal except `<0xNN>` pieces, which are bytes.
    init(tokens: [String], scores: [Float]?, types: [Int32]?, bosId: Int32?, eos: [Int32?],
         addBOS: Bool, addSpacePrefix: Bool = true, path: String) throws {
        let n = tokens.count
        if let scores, scores.count != n {
            throw QLMError.corrupt(path: path, detail: "tokenizer has \(n) tokens but \(scores.count) scores")
        }
        if let types, types.count != n {
            throw QLMError.corrupt(path: path, detail: "tokenizer has \(n) tokens but \(types.count) token types")
        }
        vocabSize = n
        self.bosId = bosId
        self.addBOS = addBOS
        self.addSpacePrefix = addSpacePrefix
        self.scores = scores ?? [Float](repeating: 0, count: n)

        var mergeable: [ArraySlice<UInt8>: Int32] = [:]
        var pieceIds: [String: Int32] = [:]
        var byteIds = [Int32](repeating: -1, count: 256)
        var bytesOf = [[UInt8]](repeating: [], count: n)
        var special = [Bool](repeating: false, count: n)
        var addedTokens: [AddedToken] = []
        var unk: Int32?
        for (i, piece) in tokens.enumerated() {
            let id = Int32(i)
            if pieceIds[piece] == nil { pieceIds[piece] = id }
            let byteValue = Self.parseByteToken(piece)
            let type = types?[i] ?? (byteValue != nil ? GGUFTokenType.byte : GGUFTokenType.normal)
            switch type {
            case GGUFTokenType.byte:
                guard let v = byteValue else {
                    throw QLMError.corrupt(path: path, detail: "byte token \(i) is '\(piece)', not <0xNN>")
                }
                if byteIds[Int(v)] < 0 { byteIds[Int(v)] = id }
                bytesOf[i] = [v]
            case GGUFTokenType.control, GGUFTokenType.unknown:
                // Their text is markup ("<s>"), never a space-escaped piece.
                special[i] = true
                bytesOf[i] = Array(piece.utf8)
                if type == GGUFTokenType.unknown, unk == nil { unk = id }
                addedTokens.append(AddedToken(id: id, content: piece, special: true))
            case GGUFTokenType.userDefined:
                bytesOf[i] = Array(piece.utf8)
                addedTokens.append(AddedToken(id: id, content: piece, special: false))
            default:  // normal, unused
                let utf8 = Array(piece.utf8)
                if type == GGUFTokenType.normal, mergeable[utf8[...]] == nil { mergeable[utf8[...]] = id }
                bytesOf[i] = Self.unescapeSpaces(utf8)
            }
        }
        self.mergeable = mergeable
        self.pieceIds = pieceIds
        self.byteIds = byteIds
        self.bytesOf = bytesOf
        self.specialFlags = special
        self.unkId = unk
        self.added = AddedTokenMatcher(addedTokens)
        let specials = Dictionary(addedTokens.filter(\.special).map { ($0.content, $0.id) }, uniquingKeysWith: { a, _ in a })
        self.eosIds = collectEOSIds(explicit: eos, specialIdOf: { specials[$0] })
    }

    /// "<0x1F>" → 0x1F.
    private static func parseByteToken(_ piece: String) -> UInt8? {
        let u = Array(piece.utf8)
        guard u.count == 6, u[0] == 0x3C, u[1] == 0x30, u[2] == 0x78, u[5] == 0x3E else { return nil }
        return UInt8(String(decoding: u[3..<5], as: UTF8.self), radix: 16)
    }

    private static let escapedSpace: [UInt8] = [0xE2, 0x96, 0x81]  // "▁" U+2581

    /// "▁" → " " in UTF-8.
    private static func unescapeSpaces(_ u: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(u.count)
        var i = 0
        while i < u.count {
            if i + 2 < u.count && u[i] == 0xE2 && u[i + 1] == 0x96 && u[i + 2] == 0x81 {
                out.append(0x20)
                i += 3
            } else {
                out.append(u[i])
                i += 1
            }
        }
        return out
    }

    func encode(_ text: String, parseSpecial: Bool) -> [Int32] {
        let t = ScalarText(text)
        var out: [Int32] = []
        var afterSpecial = true  // the text start counts as "after a special token"
        for fragment in added.split(t, parseSpecial: parseSpecial) {
            switch fragment {
            case let .token(id):
                out.append(id)
                afterSpecial = true
            case let .text(s, e):
                var escaped: [UInt8] = []
                escaped.reserveCapacity(Int(t.offsets[e] - t.offsets[s]) + 3)
                if addSpacePrefix && afterSpecial { escaped.append(contentsOf: Self.escapedSpace) }
                for b in t.byteSlice(s, e) {
                    if b == 0x20 { escaped.append(contentsOf: Self.escapedSpace) } else { escaped.append(b) }
                }
                tokenize(escaped, &out)
                afterSpecial = false
            }
        }
        return out
    }

    /// A candidate merge of the symbols `left` and `right` (whose bytes together are `size` long).
    private struct Bigram {
        var score: Float
        var left: Int
        var right: Int
        var size: Int
        /// Higher score first, then the leftmost (llama.cpp's comparator).
        @inline(__always) func before(_ o: Bigram) -> Bool {
            score > o.score || (score == o.score && left < o.left)
        }
    }

    /// A run of the text's bytes, in a doubly linked list of the current segmentation.
    private struct Symbol {
        var start: Int
        var count: Int
        var prev: Int
        var next: Int
    }

    /// Merges over the whole fragment (SentencePiece has no pre-tokenizer), so a heap keeps it
    /// O(n log n); stale entries are skipped when popped.
    private func tokenize(_ text: [UInt8], _ out: inout [Int32]) {
        var syms: [Symbol] = []
        var i = 0
        while i < text.count {
            let b = text[i]
            let len = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4
            let n = min(len, text.count - i)
            syms.append(Symbol(start: i, count: n, prev: syms.count - 1, next: syms.count + 1))
            i += n
        }
        if syms.isEmpty { return }
        syms[syms.count - 1].next = -1

        var heap = BinaryHeap<Bigram>(before: { $0.before($1) })
        func tryAdd(_ l: Int, _ r: Int) {
            if l < 0 || r < 0 { return }
            let size = syms[l].count + syms[r].count
            let start = syms[l].start
            guard let id = mergeable[text[start..<(start + size)]] else { return }
            heap.push(Bigram(score: scores[Int(id)], left: l, right: r, size: size))
        }
        for k in 1..<syms.count { tryAdd(k - 1, k) }

        while let bg = heap.pop() {
            let l = syms[bg.left], r = syms[bg.right]
            if l.count == 0 || r.count == 0 || l.count + r.count != bg.size { continue }
            syms[bg.left].count += r.count
            syms[bg.right].count = 0
            syms[bg.left].next = r.next
            if r.next >= 0 { syms[r.next].prev = bg.left }
            tryAdd(l.prev, bg.left)
            tryAdd(bg.left, r.next)
        }

        var k = 0
        while k >= 0 {
            let s = syms[k]
            if let id = mergeable[text[s.start..<(s.start + s.count)]] {
                out.append(id)
            } else {
                // Only single characters can be missing (merges produce vocabulary pieces).
                for b in text[s.start..<(s.start + s.count)] {
                    let id = byteIds[Int(b)]
                    if id >= 0 {
                        out.append(id)
                    } else if let unkId {
                        out.append(unkId)
                    }
                }
            }
            k = s.next
        }
    }

    /// HF behaviour: the dummy-prefix space of the first token is dropped. (`tokenBytes` and the
    /// streaming detokenizer keep it: they produce continuations, where the space is real.)
    func decode(_ ids: [Int32]) -> String {
        var bytes: [UInt8] = []
        for id in ids { bytes.append(contentsOf: tokenBytes(id)) }
        if addSpacePrefix, bytes.first == 0x20 { bytes.removeFirst() }
        return String(decoding: bytes, as: UTF8.self)
    }

    func tokenBytes(_ id: Int32) -> [UInt8] {
        id >= 0 && Int(id) < vocabSize ? bytesOf[Int(id)] : []
    }

    func tokenId(_ text: String) -> Int32? {
        pieceIds[text] ?? pieceIds[text.replacingOccurrences(of: " ", with: "\u{2581}")]
    }

    func isSpecial(_ id: Int32) -> Bool {
        id >= 0 && Int(id) < vocabSize && specialFlags[Int(id)]
    }
}

/// Minimal binary heap; `before(a, b)` means a comes out first.
struct BinaryHeap<Element> {
    private var items: [Element] = []
    private let before: (Element, Element) -> Bool

    init(before: @escaping (Element, Element) -> Bool) {
        self.before = before
    }

    var isEmpty: Bool { items.isEmpty }

    mutating func push(_ x: Element) {
        items.append(x)
        var i = items.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            if !before(items[i], items[p]) { break }
            items.swapAt(i, p)
            i = p
        }
    }

    mutating func pop() -> Element? {
        guard let top = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            let n = items.count
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < n && before(items[l], items[m]) { m = l }
                if r < n && before(items[r], items[m]) { m = r }
                if m == i { break }
                items.swapAt(i, m)
                i = m
            }
        }
        return top
    }
}
